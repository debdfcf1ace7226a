// The shape store: every shape this sidecar serves, its snapshot chunks and its
// log, and the clients waiting on it.
//
// Locking: one mutex guards the whole store (shapes, logs, waiters, the batch
// window and the processed position). Every operation under it is short: no
// I/O, no database call, no JSON parsing. Messages are serialized once when a
// batch is applied and shared (shared_ptr<const std::string>) by every response.
// Waiters are woken by posting a cancel of their timer to their own executor.
#pragma once
#include <chrono>
#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <string>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "http/encode.hpp"
#include "http/offset.hpp"
#include "http/params.hpp"
#include "shapes/batch.hpp"

namespace shapesync {

namespace asio = boost::asio;

struct LogEntry {
  LogOffset offset;
  std::shared_ptr<const std::string> json;
};

// A waiting request: woken by cancelling its timer.
struct Waiter {
  explicit Waiter(asio::any_io_executor ex) : timer(ex) {}
  asio::steady_timer timer;
};

struct ShapeDef {
  std::shared_ptr<const TableInfo> table;
  std::vector<size_t> selected;  // indexes into table->columns
  Replica replica = Replica::kDefault;
  LogMode log_mode = LogMode::kFull;
  std::string key;  // canonical definition, the identity of the shape
};

struct Shape {
  ShapeDef def;
  std::string handle;
  int32_t shape_id = 0;     // the extension's id, matched against shape_ops
  bool filtered = false;    // has a WHERE: sees only changes listed in shape_ops
  std::string where;        // canonical (deparsed) WHERE, empty for whole-table shapes
  std::string schema_header;
  std::string key_prefix;
  std::string relation;

  // Snapshot: chunk bodies (complete JSON arrays), the last ends with snapshot-end.
  std::vector<std::shared_ptr<const std::string>> snapshot_chunks;
  PgSnapshot snap;
  uint64_t start_tick = 0;  // batches after this tick apply (filtered by snap)

  std::vector<LogEntry> log;
  std::vector<size_t> chunk_ends;  // index of the last entry of each closed log chunk
  size_t open_chunk_bytes = 0;

  bool ready = false;    // snapshot taken and caught up
  bool failed = false;   // creation failed (waiters retry)
  bool invalid = false;  // rotated: clients must refetch
  std::string invalid_reason;
  std::unordered_set<std::shared_ptr<Waiter>> waiters;

  LogOffset last_offset() const { return log.empty() ? LogOffset::snapshot_end() : log.back().offset; }
};

// What a read of the log returns.
struct LogRead {
  std::vector<std::shared_ptr<const std::string>> entries;
  std::shared_ptr<const std::string> snapshot_chunk;  // set for snapshot reads (a complete body)
  LogOffset end;
  bool up_to_date = false;
  bool out_of_bounds = false;
  uint64_t global_last_seen = 0;
  bool has_data() const { return snapshot_chunk || !entries.empty(); }
  std::string body() const;
};

class ShapeStore {
 public:
  explicit ShapeStore(size_t chunk_bytes) : chunk_bytes_(chunk_bytes) {}

  std::mutex& mutex() { return mu_; }

  // --- all below: caller holds mutex() ---

  std::shared_ptr<Shape> active(const std::string& def_key) const;
  std::shared_ptr<Shape> by_handle(const std::string& handle) const;
  // Inserts a not-yet-ready shape as the active one for its definition.
  std::shared_ptr<Shape> begin_create(ShapeDef def);
  // Completes creation: applies retained batches after start_tick. Returns
  // false (and fails the shape) when batches it needs are no longer retained.
  // `extra` holds the batches in (start_tick, extra_upto] read from the database;
  // the window must hold every later one (extra_upto >= window_floor()).
  bool finish_create(const std::shared_ptr<Shape>& s, std::vector<Batch> extra_batches = {},
                     uint64_t extra_upto = 0);
  void fail_create(const std::shared_ptr<Shape>& s);
  // Marks a shape invalid, drops it from the active map and wakes its waiters.
  void invalidate(const std::shared_ptr<Shape>& s, const std::string& reason);
  void invalidate_table(uint32_t relid, const std::string& reason);

  // Applies a batch to every ready shape; remembers it in the window.
  // Returns (handle, reason) of shapes invalidated by it (the caller records that in the database).
  std::vector<std::pair<std::string, std::string>> apply(Batch batch);
  uint64_t last_tick() const { return last_tick_; }
  // Starting point: nothing before t will be applied or retained.
  void set_last_tick(uint64_t t) {
    last_tick_ = t;
    window_floor_ = t;
  }
  // Every tick up to t has been applied (empty ticks carry no batch).
  void advance(uint64_t t) { last_tick_ = std::max(last_tick_, t); }
  // Every non-empty batch with tick in (window_floor(), last_tick()] is retained.
  uint64_t window_floor() const { return window_floor_; }
  // Oldest retained batch's tick (0 when none).
  void trim_window(size_t max_batches);

  // Reads after `after` (a real or snapshot offset) for a ready shape.
  LogRead read(const Shape& s, const RequestOffset& ro) const;
  // The position up to which every batch has been applied, as a tx value.
  uint64_t global_position() const { return (last_tick_ << 32) | 0xffffffffULL; }

  void add_waiter(const std::shared_ptr<Shape>& s, std::shared_ptr<Waiter> w) { s->waiters.insert(std::move(w)); }
  void remove_waiter(const std::shared_ptr<Shape>& s, const std::shared_ptr<Waiter>& w);

  size_t shape_count() const { return by_handle_.size(); }
  // Wakes every waiting request (shutdown).
  void wake_all();
  // (handle, last offset) of shapes whose log grew since the last call.
  std::vector<std::pair<std::string, std::string>> take_progress();
  // Puts back what take_progress() returned when reporting it failed.
  void restore_progress(const std::vector<std::pair<std::string, std::string>>& progress);

 private:
  // Applies b to every registered shape, or only to `only` (a shape being created).
  void apply_batch(const Batch& b, Shape* only, std::vector<std::pair<std::string, std::string>>& invalidated);
  std::vector<std::shared_ptr<Shape>> shapes_of(uint32_t relid) const;
  void append(Shape& s, LogOffset off, std::string json);
  static void wake(Shape& s);

  size_t chunk_bytes_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Shape>> active_;     // definition key → shape
  std::map<std::string, std::shared_ptr<Shape>> by_handle_;  // handle → shape (ready ones)
  std::map<uint32_t, std::vector<std::shared_ptr<Shape>>> by_relid_;        // every ready shape
  std::map<uint32_t, std::vector<std::shared_ptr<Shape>>> whole_by_relid_;  // ready whole-table shapes
  std::unordered_map<int32_t, std::shared_ptr<Shape>> by_shape_id_;          // ready filtered shapes
  std::deque<Batch> window_;
  std::unordered_set<Shape*> grown_;
  uint64_t last_tick_ = 0;
  uint64_t window_floor_ = 0;
};

}  // namespace shapesync
