// pg_snapshot parsing and visibility.
#include "model/batch.hpp"

#include <algorithm>
#include <charconv>

namespace shapesync {

namespace {
std::optional<uint64_t> to_u64(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}
}  // namespace

std::optional<PgSnapshot> PgSnapshot::parse(std::string_view s) {
  PgSnapshot snap;
  auto c1 = s.find(':');
  if (c1 == std::string_view::npos) return std::nullopt;
  auto c2 = s.find(':', c1 + 1);
  if (c2 == std::string_view::npos) return std::nullopt;
  auto a = to_u64(s.substr(0, c1));
  auto b = to_u64(s.substr(c1 + 1, c2 - c1 - 1));
  if (!a || !b) return std::nullopt;
  snap.xmin = *a;
  snap.xmax = *b;
  snap.xmin_s = std::string(s.substr(0, c1));
  snap.xmax_s = std::string(s.substr(c1 + 1, c2 - c1 - 1));
  auto rest = s.substr(c2 + 1);
  while (!rest.empty()) {
    auto comma = rest.find(',');
    auto tok = rest.substr(0, comma);
    auto v = to_u64(tok);
    if (!v) return std::nullopt;
    snap.xip.push_back(*v);
    snap.xip_s.emplace_back(tok);
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  std::sort(snap.xip.begin(), snap.xip.end());
  return snap;
}

bool PgSnapshot::visible(uint64_t xid) const {
  if (xid < xmin) return true;
  if (xid >= xmax) return false;
  return !std::binary_search(xip.begin(), xip.end(), xid);
}

}  // namespace shapesync
