// How many ticks one read of the change log spans (docs/sidecar.md, "Memory
// budget"). A range of ticks is read, decoded and applied whole, so its
// decoded batches are memory in flight that nothing else bounds: a sidecar
// that fell behind a heavy write load used to read 500 ticks at once, which
// could be millions of changes. The pacer keeps one read's decoded bytes near
// a cap: after a read that came out larger it shrinks the span in proportion,
// after a full read that came out under half of it it doubles the span again.
// Nothing is skipped or dropped: a smaller span only means more reads.
// One tick is the floor: a single tick is read whole whatever its size (one
// huge transaction is in flight at once).
//
// Pure (no lock, no I/O): each reader owns its pacer.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace shapesync {

class FetchPacer {
 public:
  // max_span: what a read spans when memory does not limit it. The first read
  // spans one tick (nothing is known of their size yet); full reads under half
  // the cap double it, so a follower far behind reaches max_span in a few reads.
  explicit FetchPacer(uint64_t max_span = 500) : max_span_(std::max<uint64_t>(1, max_span)), span_(1) {}

  // Ticks the next read may span.
  uint64_t span() const { return span_; }

  // A read of `ticks` ticks decoded to `bytes` (ShapeStore::batch_cost);
  // `cap` is what one read may decode to now (SIZE_MAX: no limit).
  void observe(uint64_t ticks, size_t bytes, size_t cap) {
    if (ticks == 0) return;
    if (bytes > cap) {
      // as many ticks as fit in cap at this read's bytes per tick
      double fit = static_cast<double>(ticks) * static_cast<double>(cap) / static_cast<double>(bytes);
      span_ = std::clamp<uint64_t>(static_cast<uint64_t>(fit), 1, std::min(span_, max_span_));
      ++shrunk_;
    } else if (ticks >= span_ && bytes <= cap / 2) {
      span_ = std::min(max_span_, span_ * 2);
    }
  }

  // Times a read came out over its cap (and the span shrank), for monitoring.
  uint64_t shrunk() const { return shrunk_; }

 private:
  uint64_t max_span_;
  uint64_t span_;
  uint64_t shrunk_ = 0;
};

}  // namespace shapesync
