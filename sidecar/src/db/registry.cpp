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

namespace {

std::optional<std::vector<std::string>> columns_of(const PgResult& r, const char* field) {
  auto text = r.opt(0, field);
  if (!text) return std::nullopt;
  auto parsed = parse_text_array(*text);
  if (!parsed) throw PgError(std::string("unexpected ") + field + " from the extension", "", false);
  std::vector<std::string> out;
  for (auto& v : *parsed)
    if (v) out.push_back(*v);
  return out;
}

std::optional<std::string> array_or_null(const std::optional<std::vector<std::string>>& v) {
  if (!v) return std::nullopt;
  return text_array_literal(*v);
}

}  // namespace

asio::awaitable<ShapeCheck> check_shape_as(PgConn& c, uint32_t relid, const std::optional<std::string>& where,
                                           const std::vector<std::string>& params, const std::string& role,
                                           const std::string& claims,
                                           const std::optional<std::vector<std::string>>& columns) {
  PgParams args{std::to_string(relid), where, text_array_literal(params), role, claims, array_or_null(columns)};
  PgResult r = co_await c.exec(
      "SELECT * FROM shapesync.check_shape($1::oid::regclass, $2, $3::text[], $4::name, $5::jsonb, $6::text[])", args);
  ShapeCheck out;
  out.canonical_where = r.opt(0, "canonical_where").value_or("");
  out.policy_applied = r.opt(0, "policy_applied").value_or("f") == "t";
  auto code = r.opt(0, "error_code");
  if (!code) {
    out.shape_columns = columns_of(r, "shape_columns");
    co_return out;
  }
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

asio::awaitable<RegisteredShape> get_or_create_shape_as(PgConn& c, uint32_t relid,
                                                        const std::optional<std::string>& where,
                                                        const std::optional<std::vector<std::string>>& columns,
                                                        const std::string& options,
                                                        const std::vector<std::string>& params,
                                                        const std::string& role, const std::string& claims) {
  PgParams args{std::to_string(relid), where, array_or_null(columns), options, text_array_literal(params), role, claims};
  PgResult r = co_await c.exec(
      "SELECT * FROM shapesync.get_or_create_shape($1::oid::regclass, $2, $3::text[], $4, $5::text[], $6::name, "
      "$7::jsonb)",
      args);
  RegisteredShape out;
  auto handle = r.opt(0, "handle");
  if (!handle) throw PgError("get_or_create_shape() returned no handle", "", false);
  out.handle = *handle;
  out.shape_id = static_cast<int32_t>(std::stol(r.opt(0, "shape_id").value_or("0")));
  out.canonical_where = r.opt(0, "canonical_where").value_or("");
  out.policy_applied = r.opt(0, "policy_applied").value_or("f") == "t";
  out.shape_columns = columns_of(r, "shape_columns");
  co_return out;
}

asio::awaitable<void> invalidate_shape(PgConn& c, const std::string& handle, const std::string& reason) {
  PgParams args{handle, reason};
  co_await c.exec("SELECT shapesync.invalidate_shape($1, $2)", args);
}

}  // namespace shapesync
