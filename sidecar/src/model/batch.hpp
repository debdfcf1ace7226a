// Batches of changes between two ticks, as read from the extension's change
// log, and PostgreSQL snapshots (pg_snapshot) for visibility tests.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/table.hpp"

namespace shapesync {

struct PgSnapshot {
  uint64_t xmin = 0, xmax = 0;
  std::vector<uint64_t> xip;  // sorted
  std::string xmin_s, xmax_s;
  std::vector<std::string> xip_s;
  // Parses pg_snapshot's text form "xmin:xmax:xip1,xip2".
  static std::optional<PgSnapshot> parse(std::string_view s);
  // True when the transaction's effects are visible in this snapshot.
  bool visible(uint64_t xid) const;
};

// Operation of a change for one filtered shape (shape_ops element & 3).
enum class ShapeOp : int { kNone = 0, kInsert = 1, kUpdate = 2, kDelete = 3 };

struct Change {
  uint32_t relid = 0;
  char op = 'I';  // I U D T, S (schema change), X (a shape's filter raised)
  bool undecodable = false;
  std::optional<RowValues> new_values;  // indexed by attnum - 1
  std::optional<RowValues> old_values;
  std::vector<int32_t> shape_ops;       // shape_id * 4 + ShapeOp, filtered shapes only
  std::string error;                    // for S and X
  // The new row's version (docs/mutations.md "Row versions": the xid8 of the
  // (sub)transaction that wrote it); 0 when it has none (deletes, 0.1.0).
  uint64_t version = 0;
};

struct Tx {
  uint64_t xid = 0;
  uint64_t position = 0;  // (tick_id << 32) | rank
  std::vector<Change> changes;
};

struct Batch {
  uint64_t tick_id = 0;
  std::vector<Tx> txs;
  // shapesync.ticks.tick_time of the tick, in microseconds since the Unix
  // epoch (0: not read): the latest its changes can have committed, give or
  // take the tick interval (docs/monitoring.md, "commit time").
  int64_t tick_time_us = 0;
  // ShapeStore::batch_cost(), once computed (0: not yet): the follower paces
  // its reads by it and the window charges it, for the same unchanged batch.
  size_t cost = 0;
};

}  // namespace shapesync
