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

asio::awaitable<void> check_and_register_many(PgConn& c, uint32_t relid, std::vector<BatchRegistration>& regs,
                                              const std::optional<std::vector<std::string>>& columns,
                                              const std::string& options, const std::optional<std::string>& role,
                                              const std::string& claims) {
  if (regs.empty()) co_return;
  // The wheres as a text[] with NULL for "no filter".
  std::string wheres = "{";
  for (size_t i = 0; i < regs.size(); ++i) {
    if (i) wheres += ',';
    if (!regs[i].where) {
      wheres += "NULL";
      continue;
    }
    wheres += '"';
    for (char ch : *regs[i].where) {
      if (ch == '"' || ch == '\\') wheres += '\\';
      wheres += ch;
    }
    wheres += '"';
  }
  wheres += '}';
  // OFFSET 0 keeps the registration a subquery of its own whose only filter,
  // the check's verdict, is a one-time filter: get_or_create_shape() runs only
  // for the shapes check_shape() accepted (a join filter would run it for all).
  PgResult r;
  if (role) {
    PgParams args{std::to_string(relid), wheres, array_or_null(columns), options, *role, claims};
    r = co_await c.exec(
        "SELECT u.i, c.canonical_where AS check_where, c.error_code, c.error_field, c.error_message, "
        "c.error_position, c.error_detail, c.error_hint, g.handle, g.shape_id, g.canonical_where, g.policy_applied, "
        "g.shape_columns "
        "FROM unnest($2::text[]) WITH ORDINALITY AS u(w, i) "
        "CROSS JOIN LATERAL shapesync.check_shape($1::oid::regclass, u.w, '{}'::text[], $5::name, $6::jsonb, "
        "$3::text[]) c "
        "LEFT JOIN LATERAL (SELECT * FROM shapesync.get_or_create_shape($1::oid::regclass, u.w, $3::text[], $4, "
        "'{}'::text[], $5::name, $6::jsonb) WHERE c.error_code IS NULL OFFSET 0) g ON true ORDER BY u.i",
        args);
  } else {
    PgParams args{std::to_string(relid), wheres, text_array_literal(columns.value_or(std::vector<std::string>{})),
                  options};
    r = co_await c.exec(
        "SELECT u.i, c.canonical_where AS check_where, c.error_code, c.error_field, c.error_message, "
        "c.error_position, c.error_detail, c.error_hint, g.handle, g.shape_id, g.canonical_where "
        "FROM unnest($2::text[]) WITH ORDINALITY AS u(w, i) "
        "CROSS JOIN LATERAL shapesync.check_shape($1::oid::regclass, u.w, '{}'::text[]) c "
        "LEFT JOIN LATERAL (SELECT * FROM shapesync.get_or_create_shape($1::oid::regclass, u.w, $3::text[], $4) "
        "WHERE c.error_code IS NULL OFFSET 0) g ON true ORDER BY u.i",
        args);
  }
  if (r.rows() != static_cast<int>(regs.size())) throw PgError("unexpected answer from the registration batch", "", false);
  for (int row = 0; row < r.rows(); ++row) {
    BatchRegistration& reg = regs[static_cast<size_t>(row)];
    if (auto code = r.opt(row, "error_code")) {
      ShapeRejection rej;
      rej.code = *code;
      rej.field = r.opt(row, "error_field").value_or("where");
      rej.message = r.opt(row, "error_message").value_or("invalid shape");
      if (auto pos = r.opt(row, "error_position")) rej.message = "At location " + *pos + ": " + rej.message;
      if (auto d = r.opt(row, "error_detail")) rej.message += ". " + *d;
      rej.hint = r.opt(row, "error_hint").value_or("");
      reg.rejection = std::move(rej);
      continue;
    }
    auto handle = r.opt(row, "handle");
    if (!handle) throw PgError("get_or_create_shape() returned no handle", "", false);
    RegisteredShape out;
    out.handle = *handle;
    out.shape_id = static_cast<int32_t>(std::stol(r.opt(row, "shape_id").value_or("0")));
    out.canonical_where = r.opt(row, "canonical_where").value_or("");
    if (role) {
      out.policy_applied = r.opt(row, "policy_applied").value_or("f") == "t";
      if (auto text = r.opt(row, "shape_columns")) {
        auto parsed = parse_text_array(*text);
        if (!parsed) throw PgError("unexpected shape_columns from the extension", "", false);
        std::vector<std::string> cols;
        for (auto& v : *parsed)
          if (v) cols.push_back(*v);
        out.shape_columns = std::move(cols);
      }
    }
    reg.shape = std::move(out);
  }
}

asio::awaitable<void> invalidate_shape(PgConn& c, const std::string& handle, const std::string& reason) {
  PgParams args{handle, reason};
  co_await c.exec("SELECT shapesync.invalidate_shape($1, $2)", args);
}

}  // namespace shapesync
