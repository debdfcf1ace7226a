// Query-string parsing and database-free validation of shape requests.
#include "http/params.hpp"

#include <cctype>

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
  return j.dump();
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
  // params[n]
  bool bad_key = false;
  for (auto& [k, v] : q) {
    if (k.rfind("params[", 0) != 0 || k.back() != ']') continue;
    std::string n = k.substr(7, k.size() - 8);
    bool digits = !n.empty() && n.size() < 6;
    for (char c : n) digits = digits && c >= '0' && c <= '9';
    if (!digits) {
      bad_key = true;
      continue;
    }
    p.params[std::stoi(n)] = v;
  }
  if (bad_key) {
    e.add("params", "Parameters can only use numbers as keys");
  } else {
    int expect = 1;
    for (auto& [n, v] : p.params) {
      if (n != expect++) {
        e.add("params", "Parameters must be numbered sequentially, starting from 1");
        break;
      }
    }
  }
  if (auto s = get(q, "secret"))
    p.secret = *s;
  else if (auto s2 = get(q, "api_secret"))
    p.secret = *s2;
  if (!e.empty()) return e;
  return p;
}

}  // namespace shapesync
