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
    // Three round trips: the transaction and the role (no parameters: one
    // simple query), then the claims and the call in one statement, then COMMIT.
    // READ COMMITTED whatever the database's default: a replay must see the
    // first attempt's commit once its advisory lock is released.
    std::string begin = "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = " + std::to_string(timeout_ms);
    if (role) begin += "; SET LOCAL ROLE " + quote_ident(*role);  // a quoted identifier, never a parameter
    co_await c.exec(begin);
    PgParams args{mutations, idempotency_key, allow_partial ? "true" : "false", claims};
    // OFFSET 0 keeps the subquery a subquery: its row, which sets the claims,
    // is produced before the outer select list calls apply_mutations
    // (built before the co_await: GCC 12 mis-handles temporaries inside one)
    std::string call = "SELECT shapesync.apply_mutations($1::jsonb, $2::text, $3::boolean)::text";
    if (role) call += " FROM (SELECT " + set_claims_select_list(4) + " OFFSET 0) AS claims";
    else call += " WHERE $4::text IS NOT NULL";
    PgResult r = co_await c.exec(call, args);
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
