// PostgreSQL text[] literals.
#include "db/text_array.hpp"

namespace shapesync {

std::string text_array_literal(const std::vector<std::string>& v) {
  std::string o = "{";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) o += ',';
    o += '"';
    for (char c : v[i]) {
      if (c == '"' || c == '\\') o += '\\';
      o += c;
    }
    o += '"';
  }
  o += '}';
  return o;
}

std::optional<RowValues> parse_text_array(std::string_view s) {
  RowValues out;
  if (s.size() < 2 || s.front() != '{' || s.back() != '}') return std::nullopt;
  size_t i = 1, end = s.size() - 1;
  if (i == end) return out;
  while (true) {
    if (i >= end) return std::nullopt;
    if (s[i] == '"') {
      std::string v;
      ++i;
      bool closed = false;
      while (i < end) {
        char c = s[i++];
        if (c == '\\') {
          if (i >= end) return std::nullopt;
          v += s[i++];
        } else if (c == '"') {
          closed = true;
          break;
        } else {
          v += c;
        }
      }
      if (!closed) return std::nullopt;
      out.emplace_back(std::move(v));
    } else {
      size_t j = i;
      while (j < end && s[j] != ',') ++j;
      std::string_view tok = s.substr(i, j - i);
      if (tok.empty()) return std::nullopt;
      if (tok == "NULL")
        out.emplace_back(std::nullopt);
      else
        out.emplace_back(std::string(tok));
      i = j;
    }
    if (i == end) break;
    if (s[i] != ',') return std::nullopt;
    ++i;
  }
  return out;
}

}  // namespace shapesync
