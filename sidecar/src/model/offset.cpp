// Parsing and printing of shape log offsets.
#include "model/offset.hpp"

#include <charconv>

namespace shapesync {

std::string LogOffset::to_string() const {
  std::string s = std::to_string(tx);
  s += '_';
  if (op == kInf)
    s += "inf";
  else
    s += std::to_string(op);
  return s;
}

namespace {
// Parses a non-empty run of decimal digits (leading zeros allowed) that fits in 63 bits.
std::optional<uint64_t> parse_uint(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : s)
    if (c < '0' || c > '9') return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}
}  // namespace

std::optional<RequestOffset> parse_offset(std::string_view s) {
  if (s == "-1") return RequestOffset{RequestOffset::Kind::kBeforeAll, {}};
  if (s == "now") return RequestOffset{RequestOffset::Kind::kNow, {}};
  auto us = s.find('_');
  if (us == std::string_view::npos) return std::nullopt;
  auto tx = parse_uint(s.substr(0, us));
  if (!tx) return std::nullopt;
  auto rest = s.substr(us + 1);
  if (rest == "inf") return RequestOffset{RequestOffset::Kind::kAt, {*tx, LogOffset::kInf}};
  auto op = parse_uint(rest);
  if (!op) return std::nullopt;
  return RequestOffset{RequestOffset::Kind::kAt, {*tx, *op}};
}

}  // namespace shapesync
