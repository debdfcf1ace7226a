// Writes in the database (docs/mutations.md): one transaction, as the caller's
// role with its claims, around one call of shapesync.apply_mutations(), which
// validates, authorizes (grants, RLS WITH CHECK), detects and resolves
// conflicts and makes every mutation id idempotent.
#pragma once
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "db/pg.hpp"

namespace shapesync {

// Runs `BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout;
// act as role/claims; SELECT shapesync.apply_mutations($mutations::jsonb,
// $key, $allow_partial); COMMIT` and returns the function's JSON text.
// Every value is a parameter. Throws PgError (after rolling back), also for
// the commit itself (then whether it committed is unknown: the request is
// idempotent, so the caller may send it again).
asio::awaitable<std::string> apply_mutations(PgConn& c, const std::optional<std::string>& role,
                                             const std::string& claims, const std::string& mutations,
                                             const std::optional<std::string>& idempotency_key, bool allow_partial,
                                             int timeout_ms);

}  // namespace shapesync
