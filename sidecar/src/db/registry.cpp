// The extension's shape registry.
#include "db/registry.hpp"

#include "db/text_array.hpp"

namespace shapesync {

asio::awaitable<ShapeCheck> check_shape(PgConn& c, uint32_t relid, const std::optional<std::string>& where,
                                        const std::vector<std::string>& params) {
  PgParams args{std::to_string(relid), where.value_or(""), text_array_literal(params)};
  ShapeCheck out;
  PgResult r;
  bool old_extension = false;
  try {
    r = co_await c.exec("SELECT * FROM shapesync.check_shape($1::oid::regclass, NULLIF($2, ''), $3::text[])", args);
  } catch (const PgError& e) {
    if (e.sqlstate != "42883") throw;
    old_extension = true;  // 0.1.0, until ALTER EXTENSION UPDATE
  }
  if (old_extension) {
    // parse_where() validates (raising, so the server log has it) and canonicalises
    if (where) {
      PgParams pw{std::to_string(relid), *where, text_array_literal(params)};
      PgResult p = co_await c.exec(
          "SELECT canonical_where FROM shapesync.parse_where($1::oid::regclass, $2, $3::text[])", pw);
      out.canonical_where = p.opt(0, 0).value_or("");
    }
    co_return out;
  }
  out.canonical_where = r.opt(0, "canonical_where").value_or("");
  auto code = r.opt(0, "error_code");
  if (!code) co_return out;
  ShapeRejection rej;
  rej.code = *code;
  rej.field = r.opt(0, "error_field").value_or("where");
  rej.message = r.opt(0, "error_message").value_or("invalid shape");
  if (auto pos = r.opt(0, "error_position")) rej.message = "At location " + *pos + ": " + rej.message;
  if (auto d = r.opt(0, "error_detail")) rej.message += ". " + *d;
  rej.hint = r.opt(0, "error_hint").value_or("");
  out.rejection = std::move(rej);
  co_return out;
}

asio::awaitable<RegisteredShape> get_or_create_shape(PgConn& c, uint32_t relid, const std::optional<std::string>& where,
                                                     const std::vector<std::string>& columns,
                                                     const std::string& options,
                                                     const std::vector<std::string>& params) {
  PgResult r;
  if (!where && params.empty()) {
    PgParams args{std::to_string(relid), text_array_literal(columns), options};
    r = co_await c.exec("SELECT * FROM shapesync.get_or_create_shape($1::oid::regclass, NULL, $2::text[], $3)", args);
  } else {
    PgParams args{std::to_string(relid), where, text_array_literal(columns), options, text_array_literal(params)};
    r = co_await c.exec(
        "SELECT * FROM shapesync.get_or_create_shape($1::oid::regclass, $2, $3::text[], $4, $5::text[])", args);
  }
  RegisteredShape out;
  auto handle = r.opt(0, "handle");
  if (!handle) throw PgError("get_or_create_shape() returned no handle", "", false);
  out.handle = *handle;
  out.shape_id = static_cast<int32_t>(std::stol(r.opt(0, "shape_id").value_or("0")));
  out.canonical_where = r.opt(0, "canonical_where").value_or("");
  co_return out;
}

asio::awaitable<void> invalidate_shape(PgConn& c, const std::string& handle, const std::string& reason) {
  PgParams args{handle, reason};
  co_await c.exec("SELECT shapesync.invalidate_shape($1, $2)", args);
}

}  // namespace shapesync
