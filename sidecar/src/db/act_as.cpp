// Acting on a caller's behalf inside a transaction.
#include "db/act_as.hpp"

namespace shapesync {

std::string set_claims_select_list(int param) {
  const std::string p = "$" + std::to_string(param);
  return "set_config('request.jwt.claims', " + p + ", true), "
         "(SELECT count(set_config('request.jwt.claim.' || e.k, "
         "CASE jsonb_typeof(e.v) WHEN 'string' THEN e.v #>> '{}' ELSE e.v::text END, true)) "
         "FROM jsonb_each(" + p + "::jsonb) AS e(k, v) WHERE e.k ~ '^[A-Za-z_][A-Za-z0-9_]*$')";
}

asio::awaitable<void> act_as(PgConn& c, const std::optional<std::string>& role, const std::string& claims) {
  if (!role) co_return;
  // The claims are bound, never spliced; the role is a quoted identifier.
  PgParams args{claims};
  co_await c.exec("SELECT " + set_claims_select_list(1), args);
  co_await c.exec("SET LOCAL ROLE " + quote_ident(*role));
}

}  // namespace shapesync
