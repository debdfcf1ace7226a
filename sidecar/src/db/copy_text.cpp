// COPY text format rows → field values.
#include "db/copy_text.hpp"

#include <charconv>

#include "protocol/encode.hpp"
#include "util/hex.hpp"

namespace shapesync {

bool parse_copy_row(std::string_view line, std::vector<std::optional<std::string>>& out) {
  size_t n = 0;
  size_t i = 0;
  for (;;) {
    size_t end = line.find('\t', i);
    std::string_view f = line.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i);
    if (n >= out.size()) out.emplace_back();
    auto& slot = out[n++];
    if (f == "\\N") {
      slot.reset();
    } else if (f.find('\\') == std::string_view::npos) {
      slot.emplace(f);
    } else {
      std::string v;
      v.reserve(f.size());
      for (size_t k = 0; k < f.size(); ++k) {
        char c = f[k];
        if (c != '\\') {
          v += c;
          continue;
        }
        if (++k >= f.size()) return false;  // a lone trailing backslash
        char e = f[k];
        switch (e) {
          case 'b': v += '\b'; break;
          case 'f': v += '\f'; break;
          case 'n': v += '\n'; break;
          case 'r': v += '\r'; break;
          case 't': v += '\t'; break;
          case 'v': v += '\v'; break;
          case 'x': {
            int x = 0, digits = 0;
            while (digits < 2 && k + 1 < f.size() && hex_value(f[k + 1]) >= 0) x = x * 16 + hex_value(f[++k]), ++digits;
            if (digits == 0) {
              v += 'x';
            } else {
              v += static_cast<char>(x);
            }
            break;
          }
          default:
            if (e >= '0' && e <= '7') {
              int x = e - '0', digits = 1;
              while (digits < 3 && k + 1 < f.size() && f[k + 1] >= '0' && f[k + 1] <= '7') x = x * 8 + (f[++k] - '0'), ++digits;
              v += static_cast<char>(x & 0xff);
            } else {
              v += e;  // \\ and any other escaped character stand for themselves
            }
        }
      }
      slot.emplace(std::move(v));
    }
    if (end == std::string_view::npos) break;
    i = end + 1;
  }
  out.resize(n);
  return true;
}

uint64_t widen_xmin(uint32_t xid, uint64_t next) {
  if (xid < 3) return xid;  // invalid, bootstrap, frozen: no epoch
  uint64_t epoch = next >> 32;
  if (xid > static_cast<uint32_t>(next) && epoch > 0) --epoch;
  return (epoch << 32) | xid;
}

namespace {

// Bytes JSON escapes (control characters, " and \); \ also starts a COPY escape.
struct JsonSpecial {
  bool b[256] = {};
  constexpr JsonSpecial() {
    for (int c = 0; c < 0x20; ++c) b[c] = true;
    b[static_cast<unsigned char>('"')] = true;
    b[static_cast<unsigned char>('\\')] = true;
  }
};
constexpr JsonSpecial kSpecial;

// Appends the JSON string body (no quotes) of a COPY field's value: COPY
// escapes undone (as parse_copy_row does), JSON escapes applied, and with
// double_slash every / doubled (a key part). False on a trailing backslash.
bool append_copy_field_json(std::string& out, std::string_view f, bool double_slash) {
  const char* p = f.data();
  const size_t n = f.size();
  size_t run = 0;
  for (size_t k = 0; k < n; ++k) {
    unsigned char c = static_cast<unsigned char>(p[k]);
    if (!kSpecial.b[c] && !(double_slash && c == '/')) continue;
    out.append(p + run, k - run);
    run = k + 1;
    if (c == '/') {
      out += "//";
      continue;
    }
    if (c != '\\') {
      append_json_escaped(out, c);
      continue;
    }
    if (++k >= n) return false;  // a lone trailing backslash
    run = k + 1;
    char e = p[k];
    unsigned char v;
    switch (e) {
      case 'b': v = '\b'; break;
      case 'f': v = '\f'; break;
      case 'n': v = '\n'; break;
      case 'r': v = '\r'; break;
      case 't': v = '\t'; break;
      case 'v': v = '\v'; break;
      case 'x': {
        int x = 0, digits = 0;
        while (digits < 2 && k + 1 < n && hex_value(p[k + 1]) >= 0) x = x * 16 + hex_value(p[++k]), ++digits;
        v = digits == 0 ? static_cast<unsigned char>('x') : static_cast<unsigned char>(x);
        run = k + 1;
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          int x = e - '0', digits = 1;
          while (digits < 3 && k + 1 < n && p[k + 1] >= '0' && p[k + 1] <= '7') x = x * 8 + (p[++k] - '0'), ++digits;
          v = static_cast<unsigned char>(x & 0xff);
          run = k + 1;
        } else {
          v = static_cast<unsigned char>(e);  // \\ and any other escaped character stand for themselves
        }
    }
    if (double_slash && v == '/')
      out += "//";
    else
      append_json_escaped(out, v);
  }
  out.append(p + run, n - run);
  return true;
}

// The JSON string body (no quotes) of s.
std::string json_body(std::string_view s) {
  std::string o;
  append_json_string(o, s);
  return o.substr(1, o.size() - 2);
}

}  // namespace

CopyRowEncoder::CopyRowEncoder(const TableInfo& t, const std::vector<size_t>& selected, size_t lead,
                               bool with_version, uint64_t widen_from)
    : width_(lead + selected.size() + (with_version ? 1 : 0)),
      lead_(lead),
      with_version_(with_version),
      widen_from_(widen_from) {
  fields_.reserve(width_);
  head_ = "{\"key\":\"" + json_body(key_prefix(t));
  for (size_t pk : t.pk) {
    long at = -1;
    for (size_t k = 0; k < selected.size(); ++k)
      if (selected[k] == pk) at = static_cast<long>(lead + k);
    pk_fields_.push_back(at);
  }
  for (size_t k = 0; k < selected.size(); ++k) {
    std::string name = k == 0 ? "{" : ",";
    append_json_string(name, t.columns[selected[k]].name);
    name += ':';
    names_.push_back(std::move(name));
  }
  tail_ = ",\"headers\":{\"operation\":\"insert\",\"relation\":" + relation_json(t);
}

bool CopyRowEncoder::split(std::string_view line) {
  fields_.clear();
  size_t i = 0;
  for (;;) {
    size_t end = line.find('\t', i);
    if (end == std::string_view::npos) {
      fields_.push_back(line.substr(i));
      break;
    }
    fields_.push_back(line.substr(i, end - i));
    i = end + 1;
  }
  return fields_.size() == width_;
}

bool CopyRowEncoder::append_message(std::string& out) const {
  static constexpr std::string_view kNull = "\\N";
  const size_t before = out.size();
  auto fail = [&] {
    out.resize(before);
    return false;
  };
  out += head_;
  for (size_t i = 0; i < pk_fields_.size(); ++i) {
    if (i) out += '/';
    if (pk_fields_[i] < 0 || fields_[static_cast<size_t>(pk_fields_[i])] == kNull) {
      out += '_';
      continue;
    }
    out += "\\\"";
    if (!append_copy_field_json(out, fields_[static_cast<size_t>(pk_fields_[i])], true)) return fail();
    out += "\\\"";
  }
  out += "\",\"value\":";
  for (size_t k = 0; k < names_.size(); ++k) {
    out += names_[k];
    std::string_view f = fields_[lead_ + k];
    if (f == kNull) {
      out += "null";
      continue;
    }
    out += '"';
    if (!append_copy_field_json(out, f, false)) return fail();
    out += '"';
  }
  out += names_.empty() ? "{}" : "}";
  out += tail_;
  if (with_version_ && fields_.back() != kNull && !fields_.back().empty()) {  // as version_header: none when empty
    out += ",\"version\":\"";
    if (widen_from_ == 0) {
      if (!append_copy_field_json(out, fields_.back(), false)) return fail();
    } else {
      std::string_view f = fields_.back();
      uint32_t xid = 0;
      auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), xid);
      if (ec != std::errc() || end != f.data() + f.size()) return fail();
      char digits[24];
      auto r = std::to_chars(digits, digits + sizeof digits, widen_xmin(xid, widen_from_));
      out.append(digits, r.ptr);
    }
    out += '"';
  }
  out += "}}";
  return true;
}

}  // namespace shapesync
