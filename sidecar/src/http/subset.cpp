// Subset snapshots: parsing, validation, SQL and encoding (pure functions;
// App::serve_subset, which needs the database, is in subset_serve.cpp).
#include "http/subset.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <nlohmann/json.hpp>

#include "http/validate.hpp"

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
    // Bounded nesting: a body nested thousands deep must not reach a recursive walk.
    auto parsed = parse_json_bounded(body);
    if (auto* msg = std::get_if<std::string>(&parsed)) {
      nlohmann::json err = {{"error", "Invalid JSON in request body"}, {"details", *msg}};
      return BodyError{400, err.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)};
    }
    j = std::move(std::get<nlohmann::json>(parsed));
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
    std::vector<std::pair<std::string, std::string>> pairs;
    if (std::string err = read_params_object(*raw, pairs); !err.empty()) {
      add_subset_error(e, "params", err);
    } else {
      std::map<int, std::string> numbered;
      check_numbered_params(pairs, numbered, e, true);
      for (auto& [n, v] : numbered) p.params.push_back(v);
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

std::string subset_row_message(const std::string& key, const std::string& value_object, std::string_view relation,
                               uint32_t snapshot_mark, std::string_view version) {
  return snapshot_row_message(key, value_object, relation,
                              version_header(version) + ",\"snapshot_mark\":" + std::to_string(snapshot_mark));
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

}  // namespace shapesync
