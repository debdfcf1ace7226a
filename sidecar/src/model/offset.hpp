// Shape log offsets (PROTOCOL.md §5): "-1", "now", "<tx>_<op>", "<tx>_inf".
//
// In shapesync, tx is the transaction position: (tick_id << 32) | rank of the
// transaction within its tick's batch (rank >= 1). tx = 0 is the snapshot region.
#pragma once
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace shapesync {

struct LogOffset {
  static constexpr uint64_t kInf = UINT64_MAX;
  uint64_t tx = 0;
  uint64_t op = 0;  // kInf for "_inf"

  auto operator<=>(const LogOffset&) const = default;

  // End of the snapshot region / start of the real log.
  static constexpr LogOffset snapshot_end() { return {0, kInf}; }
  bool is_snapshot_region() const { return tx == 0 && op != kInf; }

  std::string to_string() const;
};

// What the `offset` query parameter asked for.
struct RequestOffset {
  enum class Kind { kBeforeAll, kNow, kAt } kind = Kind::kBeforeAll;
  LogOffset at;
};

// Parses "-1", "now", "<int>_<int>", "<int>_inf". Nullopt on bad format.
std::optional<RequestOffset> parse_offset(std::string_view s);

// Transaction position helpers.
inline uint64_t make_position(uint64_t tick_id, uint32_t rank) { return (tick_id << 32) | rank; }
inline uint64_t position_tick(uint64_t pos) { return pos >> 32; }

}  // namespace shapesync
