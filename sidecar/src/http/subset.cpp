// Subset snapshots: parsing, validation, SQL and encoding (pure functions),
// and App::serve_subset, which validates the subset WHERE with PostgreSQL and
// runs the query in a REPEATABLE READ READ ONLY transaction.
#include "http/subset.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <random>

#include <nlohmann/json.hpp>

#include "db/changes.hpp"
#include "http/app.hpp"
#include "util/log.hpp"

namespace shapesync {

namespace {

constexpr std::string_view kSubsetPrefix = "subset__";
constexpr std::string_view kSubsetKeys[] = {"where", "order_by", "limit", "offset", "params", "where_expr",
                                            "order_by_expr"};

bool is_subset_key(std::string_view k) {
  return std::find(std::begin(kSubsetKeys), std::end(kSubsetKeys), k) != std::end(kSubsetKeys);
}

void set_param(QueryMap& q, const std::string& key, const nlohmann::json& v) {
  q.erase(key);
  if (v.is_null()) return;
  q.emplace(key, v.is_string() ? v.get<std::string>() : v.dump());
}

bool ident_start(unsigned char c) { return std::isalpha(c) || c == '_' || c >= 0x80; }
bool ident_char(unsigned char c) { return std::isalnum(c) || c == '_' || c == '$' || c >= 0x80; }

std::string lower(std::string_view s) {
  std::string o;
  for (char c : s) o += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return o;
}

// Keywords that cannot stand for a column without quotes, with what they mean.
std::string reserved_word_error(const std::string& w) {
  if (w == "case") return "CASE expressions are not allowed in ORDER BY";
  if (w == "select" || w == "exists" || w == "with") return "Subqueries are not allowed in ORDER BY";
  if (w == "cast") return "Type casts are not allowed in ORDER BY";
  if (w == "array" || w == "row") return "Constructors are not allowed in ORDER BY";
  static const char* const kReserved[] = {"asc",  "desc", "nulls",  "null",  "true",  "false", "not",
                                          "and",  "or",   "using",  "collate", "order", "by",  "limit",
                                          "offset", "where", "from", "distinct", "current_date",
                                          "current_time", "current_timestamp", "current_user", "session_user",
                                          "localtime", "localtimestamp", "interval"};
  for (const char* r : kReserved)
    if (w == r) return "Only column references are allowed in ORDER BY (got the keyword " + lower(w) + ")";
  return "";
}

// The error for what follows a column reference when it is not a direction,
// a comma or the end.
std::string trailing_error(std::string_view s, size_t i) {
  char c = s[i];
  std::string at = " (at position " + std::to_string(i + 1) + ")";
  if (c == '(') return "Function calls are not allowed in ORDER BY" + at;
  if (c == ':' && i + 1 < s.size() && s[i + 1] == ':') return "Type casts are not allowed in ORDER BY" + at;
  if (c == '.') return "Qualified column references are not allowed in ORDER BY; use the column name" + at;
  if (c == '[') return "Array subscripts are not allowed in ORDER BY" + at;
  if (c == ';') return "Statement separators are not allowed in ORDER BY" + at;
  if (std::string_view("+-*/%^<>=~!@#&|?").find(c) != std::string_view::npos)
    return "Operators are not allowed in ORDER BY" + at;
  return "Only column references, ASC, DESC and NULLS FIRST/LAST are allowed in ORDER BY; unexpected \"" +
         std::string(1, c) + "\"" + at;
}

bool parse_int(const std::string& s, long long& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

bool is_subset_request(const QueryMap& q) {
  for (auto& [k, v] : q)
    if (k.size() > kSubsetPrefix.size() && std::string_view(k).substr(0, kSubsetPrefix.size()) == kSubsetPrefix)
      return true;
  return false;
}

std::string encode_query(const QueryMap& q) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  auto enc = [](std::string& out, std::string_view s) {
    for (unsigned char c : s) {
      if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
        out += static_cast<char>(c);
      } else {
        out += '%';
        out += kHex[c >> 4];
        out += kHex[c & 15];
      }
    }
  };
  std::string out;
  for (auto& [k, v] : q) {
    if (!out.empty()) out += '&';
    enc(out, k);
    out += '=';
    enc(out, v);
  }
  return out;
}

std::variant<QueryMap, BodyError> merge_post_body(QueryMap q, std::string_view body) {
  while (!body.empty() && std::isspace(static_cast<unsigned char>(body.front()))) body.remove_prefix(1);
  nlohmann::json j = nlohmann::json::object();
  if (!body.empty()) {
    try {
      j = nlohmann::json::parse(body);
    } catch (const nlohmann::json::parse_error& e) {
      nlohmann::json err = {{"error", "Invalid JSON in request body"}, {"details", e.what()}};
      return BodyError{400, err.dump()};
    }
  }
  if (!j.is_object()) return BodyError{400, R"({"error":"Request body must be a JSON object"})"};
  for (auto& [k, v] : j.items()) {
    if (k == "subset") {
      if (!v.is_object()) {
        ValidationErrors e;
        e.add("subset", "must be a JSON object");
        return BodyError{400, e.body()};
      }
      continue;  // merged last, over top-level subset keys
    }
    if (is_subset_key(k))
      set_param(q, std::string(kSubsetPrefix) + k, v);
    else
      set_param(q, k, v);
  }
  if (auto s = j.find("subset"); s != j.end())
    for (auto& [k, v] : s->items())
      if (is_subset_key(k)) set_param(q, std::string(kSubsetPrefix) + k, v);
  return q;
}

std::variant<std::vector<OrderItem>, std::string> parse_order_by(std::string_view s) {
  std::vector<OrderItem> items;
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  };
  // Reads an unquoted word at i (if any), returns it down-cased.
  auto peek_word = [&](size_t& end) -> std::string {
    end = i;
    if (end >= s.size() || !ident_start(static_cast<unsigned char>(s[end]))) return "";
    while (end < s.size() && ident_char(static_cast<unsigned char>(s[end]))) ++end;
    return lower(s.substr(i, end - i));
  };
  for (;;) {
    skip_ws();
    if (i == s.size())
      return items.empty() ? std::string("ORDER BY is empty") : std::string("ORDER BY ends with a comma");
    OrderItem item;
    std::string at = " (at position " + std::to_string(i + 1) + ")";
    if (s[i] == '"') {
      ++i;
      bool closed = false;
      while (i < s.size()) {
        if (s[i] == '"') {
          if (i + 1 < s.size() && s[i + 1] == '"') {
            item.column += '"';
            i += 2;
            continue;
          }
          closed = true;
          ++i;
          break;
        }
        item.column += s[i++];
      }
      if (!closed) return "Unterminated quoted identifier in ORDER BY" + at;
      if (item.column.empty()) return "Invalid zero-length delimited identifier in ORDER BY" + at;
    } else if (ident_start(static_cast<unsigned char>(s[i]))) {
      size_t end;
      std::string w = peek_word(end);
      size_t after = end;
      while (after < s.size() && std::isspace(static_cast<unsigned char>(s[after]))) ++after;
      if (after < s.size() && s[after] == '(') {
        if (w == "exists") return "Subqueries are not allowed in ORDER BY" + at;
        return "Function calls are not allowed in ORDER BY" + at;
      }
      if (std::string err = reserved_word_error(w); !err.empty()) return err + at;
      item.column = w;
      i = end;
    } else if (s[i] == '(') {
      size_t j = i + 1;
      while (j < s.size() && std::isspace(static_cast<unsigned char>(s[j]))) ++j;
      if (lower(s.substr(j, 6)) == "select" || lower(s.substr(j, 4)) == "with")
        return "Subqueries are not allowed in ORDER BY" + at;
      return "Parenthesized expressions are not allowed in ORDER BY" + at;
    } else if (std::isdigit(static_cast<unsigned char>(s[i]))) {
      return "Positional references and constants are not allowed in ORDER BY" + at;
    } else if (s[i] == '\'' || s[i] == '$') {
      return "Constants and parameters are not allowed in ORDER BY" + at;
    } else {
      return trailing_error(s, i);
    }
    if (item.column.size() > 63) return "Identifier is too long (max length is 63)" + at;
    // Direction and null placement.
    skip_ws();
    size_t end;
    std::string w = peek_word(end);
    if (w == "asc" || w == "desc") {
      item.desc = w == "desc";
      i = end;
      skip_ws();
      w = peek_word(end);
    }
    if (w == "nulls") {
      i = end;
      skip_ws();
      w = peek_word(end);
      if (w != "first" && w != "last")
        return "NULLS must be followed by FIRST or LAST in ORDER BY (at position " + std::to_string(i + 1) + ")";
      item.nulls_first = w == "first";
      i = end;
      skip_ws();
      w = peek_word(end);
    }
    if (w == "collate") return "COLLATE is not allowed in ORDER BY (at position " + std::to_string(i + 1) + ")";
    if (w == "using") return "USING is not allowed in ORDER BY (at position " + std::to_string(i + 1) + ")";
    if (!w.empty())
      return "Only column references, ASC, DESC and NULLS FIRST/LAST are allowed in ORDER BY; unexpected \"" +
             std::string(s.substr(i, end - i)) + "\" (at position " + std::to_string(i + 1) + ")";
    items.push_back(std::move(item));
    if (i == s.size()) return items;
    if (s[i] == ',') {
      ++i;
      continue;
    }
    return trailing_error(s, i);
  }
}

void add_subset_error(ValidationErrors& e, const std::string& field, const std::string& msg) {
  e.errors["subset"][field].push_back(msg);
}

std::variant<SubsetParams, ValidationErrors> parse_subset_params(const QueryMap& q) {
  SubsetParams p;
  ValidationErrors e;
  auto get = [&](const char* k) -> std::optional<std::string> {
    auto it = q.find(std::string(kSubsetPrefix) + k);
    if (it == q.end()) return std::nullopt;
    return it->second;
  };
  if (auto w = get("where"); w && !w->empty()) p.where = *w;
  if (auto raw = get("params"); raw && !raw->empty()) {
    nlohmann::json j;
    bool valid = true;
    try {
      j = nlohmann::json::parse(*raw);
    } catch (const nlohmann::json::parse_error&) {
      valid = false;
    }
    if (!valid) {
      add_subset_error(e, "params", "params must be valid JSON");
    } else if (!j.is_object()) {
      add_subset_error(e, "params", "params must be a JSON object");
    } else {
      std::map<long long, std::string> numbered;
      bool bad_key = false, bad_value = false;
      for (auto& [k, v] : j.items()) {
        long long n;
        bool digits = !k.empty() && k.size() < 6 && std::all_of(k.begin(), k.end(), [](char c) {
          return c >= '0' && c <= '9';
        });
        if (!digits || !parse_int(k, n)) {
          bad_key = true;
          continue;
        }
        if (v.is_string())
          numbered[n] = v.get<std::string>();
        else if (v.is_number() || v.is_boolean())
          numbered[n] = v.dump();
        else
          bad_value = true;
      }
      if (bad_key) add_subset_error(e, "params", "Parameters can only use numbers as keys");
      if (bad_value) add_subset_error(e, "params", "Parameter values must be strings, numbers or booleans");
      long long expect = 1;
      for (auto& [n, v] : numbered) {
        if (n != expect++) {
          add_subset_error(e, "params", "Parameters must be numbered sequentially, starting from 1");
          break;
        }
        p.params.push_back(v);
      }
    }
  }
  auto read_int = [&](const char* name, long long min, const char* msg, std::optional<long long>& out) {
    auto v = get(name);
    if (!v) return;
    long long n;
    if (!parse_int(*v, n)) {
      add_subset_error(e, name, "is invalid");
      return;
    }
    if (n < min) {
      add_subset_error(e, name, msg);
      return;
    }
    out = n;
  };
  read_int("limit", 1, "must be greater than 0", p.limit);
  read_int("offset", 0, "must be greater than or equal to 0", p.offset);
  auto ob = get("order_by");
  bool has_order_by = false;
  if (ob) {
    std::string_view t = *ob;
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
    if (!t.empty()) {
      has_order_by = true;
      auto r = parse_order_by(*ob);
      if (auto* err = std::get_if<std::string>(&r))
        add_subset_error(e, "order_by", *err);
      else
        p.order_by = std::get<std::vector<OrderItem>>(std::move(r));
    }
  }
  if (!has_order_by && (get("limit") || get("offset")))
    add_subset_error(e, "order_by", "order_by is required when limit or offset is present");
  if (!e.empty()) return e;
  return p;
}

std::string check_order_by_columns(const std::vector<OrderItem>& order_by, const TableInfo& t) {
  std::string unknown;
  for (auto& o : order_by) {
    bool found = std::any_of(t.columns.begin(), t.columns.end(), [&](const ColumnInfo& c) { return c.name == o.column; });
    if (!found) unknown += (unknown.empty() ? "" : ", ") + o.column;
  }
  if (unknown.empty()) return "";
  return "Unknown column in ORDER BY: " + unknown;
}

std::string subset_query_sql(const TableInfo& t, const std::vector<size_t>& selected, const std::string& shape_where,
                             const std::string& subset_where, const SubsetParams& p) {
  std::string sql = "SELECT ";
  for (size_t i = 0; i < selected.size(); ++i) {
    if (i) sql += ", ";
    sql += quote_ident(t.columns[selected[i]].name);
  }
  sql += " FROM ONLY " + quote_ident(t.schema) + "." + quote_ident(t.name);
  if (!shape_where.empty() && !subset_where.empty())
    sql += " WHERE (" + shape_where + ") AND (" + subset_where + ")";
  else if (!shape_where.empty())
    sql += " WHERE " + shape_where;
  else if (!subset_where.empty())
    sql += " WHERE " + subset_where;
  if (!p.order_by.empty()) {
    sql += " ORDER BY ";
    for (size_t i = 0; i < p.order_by.size(); ++i) {
      const OrderItem& o = p.order_by[i];
      if (i) sql += ", ";
      sql += quote_ident(o.column);
      if (o.desc) sql += " DESC";
      if (o.nulls_first) sql += *o.nulls_first ? " NULLS FIRST" : " NULLS LAST";
    }
  }
  if (p.limit) sql += " LIMIT " + std::to_string(*p.limit);
  if (p.offset) sql += " OFFSET " + std::to_string(*p.offset);
  return sql;
}

std::string subset_row_message(const std::string& key, const std::string& value_object, std::string_view relation,
                               uint32_t snapshot_mark) {
  return snapshot_row_message(key, value_object, relation, ",\"snapshot_mark\":" + std::to_string(snapshot_mark));
}

std::string subset_body(std::string_view xmin, std::string_view xmax, const std::vector<std::string>& xip,
                        uint64_t database_lsn, uint32_t snapshot_mark, const std::vector<std::string>& rows) {
  std::string o = "{\"metadata\":{";
  append_snapshot_fields(o, xmin, xmax, xip);
  o += ",\"database_lsn\":\"" + std::to_string(database_lsn) + "\",\"snapshot_mark\":" +
       std::to_string(snapshot_mark) + "},\"data\":[";
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i) o += ',';
    o += rows[i];
  }
  o += "]}";
  return o;
}

namespace {

// A PostgreSQL error caused by the request's subset WHERE: its 400 message
// ("At location N: ..."), or nullopt for an operational error.
std::optional<std::string> client_error_message(const PgError& e) {
  if (e.connection_lost || e.sqlstate.empty()) return std::nullopt;
  std::string cls = e.sqlstate.substr(0, 2);
  if (cls != "42" && cls != "0A" && cls != "22" && cls != "2F" && cls != "39" && cls != "P0") return std::nullopt;
  std::string msg = e.what();
  if (e.position > 0) msg = "At location " + std::to_string(e.position) + ": " + msg;
  if (!e.detail.empty()) msg += ". " + e.detail;
  return msg;
}

uint32_t random_mark() {
  thread_local std::mt19937 rng{std::random_device{}()};
  return std::uniform_int_distribution<uint32_t>(0, 0x7fffffff)(rng);
}

}  // namespace

asio::awaitable<Response> App::serve_subset(const Request& req, const QueryMap& q, const ShapeParams& p) {
  auto parsed = parse_subset_params(q);
  if (auto* e = std::get_if<ValidationErrors>(&parsed)) co_return error_400(req, *e);
  SubsetParams sp = std::get<SubsetParams>(std::move(parsed));

  // Validate the subset against the table before any shape is created: the
  // subset WHERE is parsed, analysed and canonicalised by PostgreSQL, and only
  // its canonical form goes into the query.
  std::string canonical;
  {
    ValidationErrors v;
    std::optional<PgError> failed;
    try {
      auto lease = co_await pool_.acquire();
      TableLookup lookup = co_await lookup_table(*lease, p.table);
      if (!lookup.table) {
        v.add("table", lookup.error);
      } else {
        if (std::string err = check_order_by_columns(sp.order_by, *lookup.table); !err.empty())
          add_subset_error(v, "order_by", err);
        if (sp.where) {
          std::optional<std::string> params;
          if (!sp.params.empty()) params = text_array_literal(sp.params);
          PgParams args{std::to_string(lookup.table->relid), *sp.where, params};
          // check_shape() returns a rejected filter as data: nothing in the server log
          PgResult r = co_await lease->exec(
              "SELECT canonical_where, error_message, error_position, error_detail "
              "FROM shapesync.check_shape($1::oid::regclass, $2, $3::text[])", args);
          if (auto m = r.opt(0, 1)) {
            std::string msg = *m;
            if (auto pos = r.opt(0, 2)) msg = "At location " + *pos + ": " + msg;
            if (auto d = r.opt(0, 3)) msg += ". " + *d;
            add_subset_error(v, "where", msg);
          }
          canonical = r.opt(0, 0).value_or("");
        }
      }
    } catch (const PgError& e) {
      failed = e;
    }
    if (failed) {
      auto msg = client_error_message(*failed);
      if (!msg) {
        log_warn("subset validation failed: ", failed->sqlstate, " ", failed->what());
        co_return error_503(req, R"({"code":"database_unreachable","error":"Database is unreachable"})", 10);
      }
      add_subset_error(v, "where", *msg);
    }
    if (!v.empty()) co_return error_400(req, v);
  }

  // The shape (created if needed) and the usual handle check.
  std::string def_key = definition_key(p);
  std::shared_ptr<const TableInfo> table;
  Response err;
  auto shape = co_await get_shape(p, def_key, table, err, req);
  if (!shape) co_return err;
  if (p.offset.kind == RequestOffset::Kind::kAt && *p.handle != shape->handle)
    co_return must_refetch(req, shape->handle);
  std::string handle, schema_header, shape_where, prefix, relation;
  std::vector<size_t> selected;
  {
    std::lock_guard lk(store_.mutex());
    handle = shape->handle;
    schema_header = shape->schema_header;
    shape_where = shape->where;
    prefix = shape->key_prefix;
    relation = shape->relation;
    selected = shape->def.selected;
    table = shape->def.table;
  }
  const TableInfo& t = *table;
  std::string sql = subset_query_sql(t, selected, shape_where, canonical, sp);

  PgResult snap, rows;
  std::optional<PgError> failed;
  {
    auto lease = co_await pool_.acquire();
    PgConn& c = *lease;
    std::exception_ptr failure;
    try {
      co_await c.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      snap = co_await c.exec(
          "SELECT pg_current_snapshot()::text, coalesce((SELECT max(tick_id) FROM shapesync.ticks), 0)");
      rows = co_await c.exec(sql);
      co_await c.exec("COMMIT");
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure) {
      if (c.ok() && PQtransactionStatus(c.raw()) != PQTRANS_IDLE) co_await c.exec("ROLLBACK");
      try {
        std::rethrow_exception(failure);
      } catch (const PgError& e) {
        failed = e;
      }
    }
  }
  if (failed) {
    // The subset WHERE raised for a row (division by zero, a failed cast, ...).
    if (auto msg = client_error_message(*failed); msg && !failed->connection_lost) {
      ValidationErrors v;
      add_subset_error(v, "where", *msg);
      co_return error_400(req, v);
    }
    throw *failed;  // handle() answers 503
  }
  auto ps = PgSnapshot::parse(snap.get(0, 0));
  if (!ps) throw PgError("bad snapshot text", "", false);
  // database_lsn is in the space of global_last_seen_lsn (transaction
  // positions, not WAL LSNs): every transaction visible in this snapshot is
  // sequenced by tick max+2 at the latest (a tick that committed after the
  // snapshot began, max+1, may have taken its own snapshot earlier), so once the
  // client has seen that far it needs the snapshot's visibility no more.
  uint64_t tick = std::stoull(std::string(snap.get(0, 1)));
  uint64_t database_lsn = make_position(tick + 2, 0xffffffffu);
  uint32_t mark = random_mark();

  std::vector<std::string> messages;
  messages.reserve(static_cast<size_t>(rows.rows()));
  RowValues row(t.columns.size());
  for (int i = 0; i < rows.rows(); ++i) {
    for (size_t k = 0; k < selected.size(); ++k) row[selected[k]] = rows.opt(i, static_cast<int>(k));
    std::string value;
    append_value_object(value, t, row, selected);
    messages.push_back(subset_row_message(row_key(prefix, t, row), value, relation, mark));
  }
  Response res = json_response(req, http::status::ok,
                               subset_body(ps->xmin_s, ps->xmax_s, ps->xip_s, database_lsn, mark, messages));
  res.set("electric-handle", handle);
  // The client moves its stream to this offset: echo its own, never skip ahead.
  res.set("electric-offset", p.offset.kind == RequestOffset::Kind::kAt       ? p.offset.at.to_string()
                             : p.offset.kind == RequestOffset::Kind::kNow ? std::string("now")
                                                                           : std::string("-1"));
  res.set("electric-schema", schema_header);
  res.set("electric-snapshot", "true");
  res.set(http::field::cache_control, "no-cache");
  co_return res;
}

}  // namespace shapesync
