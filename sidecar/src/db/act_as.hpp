// Acting on a caller's behalf inside a transaction (docs/auth.md): SET LOCAL
// ROLE to the token's role and request.jwt.claims (and, PostgREST's older
// convention, request.jwt.claim.<key>) to its claims, so PostgreSQL applies
// the role's row-level security and column grants to the statements that
// follow, as PostgREST does. Transaction-scoped: COMMIT or ROLLBACK undoes it.
#pragma once
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "db/pg.hpp"

namespace shapesync {

// Inside an open transaction: become `role` with `claims` (JSON text). No-op
// when role is nullopt (auth off: the sidecar's own rights). Throws PgError.
asio::awaitable<void> act_as(PgConn& c, const std::optional<std::string>& role, const std::string& claims);

// The select list that sets request.jwt.claims (and request.jwt.claim.<key>)
// from the JSON text bound to parameter $<param>, for a statement that sets
// them on its way (db/mutations.cpp: one round trip instead of two).
std::string set_claims_select_list(int param);

}  // namespace shapesync
