// Query-string parsing and database-free validation of shape requests.
#include "http/params.hpp"

#include <algorithm>
#include <cctype>

#include "http/validate.hpp"
#include "util/hex.hpp"

namespace shapesync {

namespace {

std::optional<std::string> get(const QueryMap& q, const std::string& key) {
  auto it = q.find(key);
  if (it == q.end()) return std::nullopt;
  return it->second;
}

// Plug semantics: anything but the literal "false" is true; absent is false.
bool truthy(const QueryMap& q, const std::string& key, bool dflt = false) {
  auto v = get(q, key);
  if (!v) return dflt;
  return *v != "false";
}

bool unquoted_ok(std::string_view s) {
  if (s.empty()) return false;
  auto first = static_cast<unsigned char>(s[0]);
  if (!(std::isalpha(first) || first == '_' || first >= 0x80)) return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '_' || c == '$' || c >= 0x80)) return false;
  return true;
}

// Parses identifiers separated by `sep` starting at s; fills parts. Returns error or "".
std::string parse_identifier_list(std::string_view s, char sep, std::vector<std::string>& parts,
                                  bool relation) {
  size_t i = 0;
  while (true) {
    // skip spaces only in column lists
    if (!relation)
      while (i < s.size() && s[i] == ' ') ++i;
    std::string part;
    if (i < s.size() && s[i] == '"') {
      ++i;
      bool closed = false;
      while (i < s.size()) {
        if (s[i] == '"') {
          if (i + 1 < s.size() && s[i + 1] == '"') {
            part += '"';
            i += 2;
            continue;
          }
          closed = true;
          ++i;
          break;
        }
        part += s[i++];
      }
      if (!closed) return "Invalid unquoted identifier contains special characters: " + std::string(s);
      if (part.empty()) return "Invalid zero-length delimited identifier";
    } else {
      size_t j = i;
      while (j < s.size() && s[j] != sep) ++j;
      std::string_view raw = s.substr(i, j - i);
      if (!relation)
        while (!raw.empty() && raw.back() == ' ') raw.remove_suffix(1);
      if (raw.empty()) return "Invalid zero-length delimited identifier";
      if (!unquoted_ok(raw)) return "Invalid unquoted identifier contains special characters: " + std::string(raw);
      for (char c : raw) part += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      i = j;
    }
    if (part.size() > 63) return "Identifier is too long (max length is 63)";
    parts.push_back(std::move(part));
    if (!relation)
      while (i < s.size() && s[i] == ' ') ++i;
    if (i == s.size()) return "";
    if (s[i] != sep) return "Invalid unquoted identifier contains special characters: " + std::string(s);
    ++i;
  }
}


}  // namespace

std::string read_params_object(std::string_view text, std::vector<std::pair<std::string, std::string>>& out) {
  auto parsed = parse_json_bounded(text, 2);  // an object of scalars
  if (auto* err = std::get_if<std::string>(&parsed))
    return err->rfind("JSON nests", 0) == 0 ? "Parameter values must be strings, numbers or booleans"
                                            : "params must be valid JSON";
  const nlohmann::json& j = std::get<nlohmann::json>(parsed);
  if (!j.is_object()) return "params must be a JSON object";
  for (auto& [k, v] : j.items()) {
    if (v.is_string())
      out.emplace_back(k, v.get<std::string>());
    else if (v.is_number() || v.is_boolean())
      out.emplace_back(k, v.dump());
    else
      return "Parameter values must be strings, numbers or booleans";
  }
  return "";
}

void check_numbered_params(const std::vector<std::pair<std::string, std::string>>& pairs,
                           std::map<int, std::string>& out, ValidationErrors& e, bool in_subset) {
  auto add = [&](const std::string& m) {
    if (in_subset)
      e.errors["subset"]["params"].push_back(m);
    else
      e.add("params", m);
  };
  bool bad_key = false;
  for (auto& [n, v] : pairs) {
    bool digits = !n.empty() && std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) {
      bad_key = true;
      continue;
    }
    // Compared as text first: any number of digits is a number, not a bad key.
    std::string_view d = n;
    while (d.size() > 1 && d.front() == '0') d.remove_prefix(1);
    if (d.size() > 5 || std::stoi(std::string(d)) > kMaxShapeParams) {
      add("Parameter $" + std::string(d) + " is out of range: parameters are numbered from 1 to " +
          std::to_string(kMaxShapeParams));
      return;
    }
    out[std::stoi(std::string(d))] = v;
  }
  if (bad_key) {
    add("Parameters can only use numbers as keys");
    return;
  }
  int expect = 1;
  for (auto& [n, v] : out) {
    if (n != expect++) {
      add("Parameters must be numbered sequentially, starting from 1");
      return;
    }
  }
}

std::string url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

QueryMap parse_query(std::string_view query) {
  QueryMap q;
  size_t i = 0;
  while (i <= query.size()) {
    size_t amp = query.find('&', i);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view pair = query.substr(i, amp - i);
    if (!pair.empty()) {
      size_t eq = pair.find('=');
      if (eq == std::string_view::npos)
        q.emplace(url_decode(pair), "");
      else
        q.emplace(url_decode(pair.substr(0, eq)), url_decode(pair.substr(eq + 1)));
    }
    i = amp + 1;
  }
  return q;
}

std::variant<QualifiedName, std::string> parse_relation(std::string_view s) {
  std::vector<std::string> parts;
  std::string err = parse_identifier_list(s, '.', parts, true);
  if (!err.empty()) return err;
  if (parts.size() > 2) return "Invalid relation identifier, too many delimiters: " + std::string(s);
  if (parts.size() == 1) return QualifiedName{"public", parts[0]};
  return QualifiedName{parts[0], parts[1]};
}

std::variant<std::vector<std::string>, std::string> parse_columns(std::string_view s) {
  std::vector<std::string> parts;
  std::string err = parse_identifier_list(s, ',', parts, false);
  if (!err.empty()) return err;
  return parts;
}

std::string ValidationErrors::body() const {
  nlohmann::json j = {{"message", "Invalid request"}, {"errors", errors}};
  // Messages may quote client text: never let an invalid byte turn a 400 into a 500.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::variant<ShapeParams, ValidationErrors> parse_shape_params(const QueryMap& q) {
  ShapeParams p;
  ValidationErrors e;

  // Stage: offset required and well-formed.
  auto offset = get(q, "offset");
  if (!offset || offset->empty()) {
    e.add("offset", "can't be blank");
    return e;
  }
  auto parsed = parse_offset(*offset);
  if (!parsed) {
    e.add("offset", "has invalid format");
    return e;
  }
  p.offset = *parsed;

  // Stage: handle vs offset.
  bool special = p.offset.kind != RequestOffset::Kind::kAt;
  auto handle = get(q, "handle");
  if (!special) {
    if (!handle || handle->empty()) {
      e.add("handle", "can't be blank when offset != -1");
      return e;
    }
    p.handle = *handle;
  }

  // Stage: live vs offset, live_sse.
  p.live = truthy(q, "live");
  if (p.live && p.offset.kind == RequestOffset::Kind::kBeforeAll) {
    e.add("live", "can't be true when offset == -1");
    return e;
  }
  if (p.live && p.offset.kind == RequestOffset::Kind::kNow) {
    e.add("live", "can't be true when offset is 'now'");
    return e;
  }
  p.live_sse = truthy(q, "live_sse", truthy(q, "experimental_live_sse"));
  if (p.live_sse && !p.live) {
    e.add("live_sse", "can't be true unless live is also true");
    return e;
  }
  if (auto c = get(q, "cursor")) {
    try {
      size_t used = 0;
      p.cursor = std::stoll(*c, &used);
      if (used != c->size()) p.cursor = 0;
    } catch (...) {
      p.cursor = 0;
    }
  }

  // Stage: shape definition (the parts that need no database).
  auto table = get(q, "table");
  if (!table || table->empty()) {
    e.add("table", "can't be blank");
  } else {
    auto rel = parse_relation(*table);
    if (auto* err = std::get_if<std::string>(&rel))
      e.add("table", *err);
    else
      p.table = std::get<QualifiedName>(rel);
  }
  if (auto r = get(q, "replica")) {
    if (*r == "full")
      p.replica = Replica::kFull;
    else if (*r != "default")
      e.add("replica", "is invalid");
  }
  if (auto l = get(q, "log")) {
    if (*l == "changes_only")
      p.log = LogMode::kChangesOnly;
    else if (*l != "full")
      e.add("log", "is invalid");
  }
  if (auto c = get(q, "columns")) {
    auto cols = parse_columns(*c);
    if (auto* err = std::get_if<std::string>(&cols))
      e.add("columns", *err);
    else
      p.columns = std::get<std::vector<std::string>>(cols);
  }
  if (auto w = get(q, "where"); w && !w->empty()) p.where = *w;
  // $n values: params[n]=v (deepObject), or params={"1":"v",...} (the JSON
  // object form subset__params takes), not both.
  auto json_form = get(q, "params");
  bool bracket_form = false;
  for (auto& [k, v] : q) bracket_form = bracket_form || k.rfind("params[", 0) == 0;
  if (json_form && bracket_form) {
    e.add("params", "Use either params[n]=value or params={\"n\":\"value\"}, not both");
  } else if (json_form) {
    std::vector<std::pair<std::string, std::string>> pairs;
    if (std::string err = read_params_object(*json_form, pairs); !err.empty())
      e.add("params", err);
    else
      check_numbered_params(pairs, p.params, e);
  } else if (bracket_form) {
    std::vector<std::pair<std::string, std::string>> pairs;
    for (auto& [k, v] : q) {
      if (k.rfind("params[", 0) != 0) continue;
      if (k.back() != ']') {
        e.add("params", "Malformed parameter name " + k + ": expected params[n]");
        continue;
      }
      pairs.emplace_back(k.substr(7, k.size() - 8), v);
    }
    check_numbered_params(pairs, p.params, e);
  }
  if (auto s = get(q, "secret"))
    p.secret = *s;
  else if (auto s2 = get(q, "api_secret"))
    p.secret = *s2;
  if (!e.empty()) return e;
  return p;
}

}  // namespace shapesync
