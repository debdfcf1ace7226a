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

bool read_be(std::string_view s, size_t& pos, size_t n, uint64_t& v) {
  if (pos > s.size() || s.size() - pos < n) return false;
  v = 0;
  for (size_t k = 0; k < n; ++k) v = (v << 8) | static_cast<unsigned char>(s[pos + k]);
  pos += n;
  return true;
}

namespace {

// Walks a one-dimensional binary array (lower bound 1), calling count(n)
// once, then element(bytes or nullopt) for each; false on malformed input.
template <typename C, typename F>
bool walk_binary_array(std::string_view s, C&& count, F&& element) {
  size_t pos = 0;
  uint64_t ndim, flags, elemtype;
  if (!read_be(s, pos, 4, ndim) || !read_be(s, pos, 4, flags) || !read_be(s, pos, 4, elemtype)) return false;
  if (ndim == 0) return pos == s.size();
  if (ndim != 1) return false;
  uint64_t n, lbound;
  if (!read_be(s, pos, 4, n) || !read_be(s, pos, 4, lbound) || lbound != 1) return false;
  if (n > s.size()) return false;  // every element takes at least 4 bytes
  count(static_cast<size_t>(n));
  for (uint64_t k = 0; k < n; ++k) {
    uint64_t len;
    if (!read_be(s, pos, 4, len)) return false;
    if (len == 0xFFFFFFFFu) {
      element(std::optional<std::string_view>());
      continue;
    }
    if (len > s.size() - pos) return false;
    element(std::optional<std::string_view>(s.substr(pos, len)));
    pos += len;
  }
  return pos == s.size();
}

}  // namespace

std::optional<RowValues> parse_binary_text_array(std::string_view s) {
  RowValues out;
  // Sized once: a row lives on in the batch window, where a vector grown by
  // doubling would keep up to half of its slots empty.
  bool ok = walk_binary_array(s, [&](size_t n) { out.reserve(n); }, [&](std::optional<std::string_view> e) {
    if (e)
      out.emplace_back(std::string(*e));
    else
      out.emplace_back(std::nullopt);
  });
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::vector<int32_t>> parse_binary_int4_array(std::string_view s) {
  std::vector<int32_t> out;
  bool bad = false;
  bool ok = walk_binary_array(s, [&](size_t n) { out.reserve(n); }, [&](std::optional<std::string_view> e) {
    if (!e) return;
    size_t pos = 0;
    uint64_t v;
    if (e->size() == 4 && read_be(*e, pos, 4, v))
      out.push_back(static_cast<int32_t>(static_cast<uint32_t>(v)));
    else
      bad = true;
  });
  if (!ok || bad) return std::nullopt;
  return out;
}

std::optional<uint64_t> binary_uint(std::string_view s) {
  if (s.size() != 1 && s.size() != 2 && s.size() != 4 && s.size() != 8) return std::nullopt;
  size_t pos = 0;
  uint64_t v;
  read_be(s, pos, s.size(), v);
  return v;
}

}  // namespace shapesync
