// Writes in the database.
#include "db/mutations.hpp"

#include "db/act_as.hpp"

namespace shapesync {

asio::awaitable<std::string> apply_mutations(PgConn& c, const std::optional<std::string>& role,
                                             const std::string& claims, const std::string& mutations,
                                             const std::optional<std::string>& idempotency_key, bool allow_partial,
                                             int timeout_ms) {
  std::string out;
  std::exception_ptr failure;
  try {
    // READ COMMITTED whatever the database's default: a replay must see the
    // first attempt's commit once its advisory lock is released.
    co_await c.exec("BEGIN ISOLATION LEVEL READ COMMITTED");
    co_await c.exec("SET LOCAL statement_timeout = " + std::to_string(timeout_ms));
    co_await act_as(c, role, claims);
    PgParams args{mutations, idempotency_key, allow_partial ? "true" : "false"};
    PgResult r = co_await c.exec("SELECT shapesync.apply_mutations($1::jsonb, $2::text, $3::boolean)::text", args);
    if (r.rows() != 1 || r.is_null(0, 0)) throw PgError("shapesync.apply_mutations() returned no result", "", false);
    out = std::string(r.get(0, 0));
    co_await c.exec("COMMIT");
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    co_await c.rollback_if_open();
    std::rethrow_exception(failure);
  }
  co_return out;
}

}  // namespace shapesync
