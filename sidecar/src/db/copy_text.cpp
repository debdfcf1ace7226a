// COPY text format rows → field values.
#include "db/copy_text.hpp"

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

}  // namespace shapesync
