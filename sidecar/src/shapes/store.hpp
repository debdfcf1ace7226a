// The shape store: every shape this sidecar serves, its snapshot chunks and its
// log, and the clients waiting on it.
//
// Locking: one mutex guards the whole store (shapes, logs, waiters, the batch
// window and the processed position), and the store owns it: every public
// method takes it itself, no caller is handed it (Beast's chat-multi
// shared_state). Operations that must see and change state at once (read or
// wait, finish a creation against the window) are single methods. Every
// operation under it is short: no I/O, no database call, no JSON parsing. Messages are serialized once when a
// batch is applied and shared (shared_ptr<const std::string>) by every response.
// Waiters are woken by posting a cancel of their timer to their own executor.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <string>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "protocol/encode.hpp"
#include "model/offset.hpp"
#include "model/shape_request.hpp"
#include "db/pg.hpp"
#include "model/batch.hpp"

namespace shapesync {

namespace asio = boost::asio;

struct LogEntry {
  LogOffset offset;
  std::shared_ptr<const std::string> json;
};

// A shape's in-memory log: appended at the back, spilled from the front.
// A vector and the index of its first live entry rather than a std::deque,
// whose empty state alone allocates ~600 bytes (its map and a first node):
// with 100 000 held shapes, most of whose logs are empty or spilled, that
// was 60 MB. Popped entries are released at once; the vector is compacted
// when they are more than half of it, and freed when it empties.
class EntryLog {
 public:
  using const_iterator = std::vector<LogEntry>::const_iterator;
  bool empty() const { return head_ == v_.size(); }
  size_t size() const { return v_.size() - head_; }
  const LogEntry& operator[](size_t i) const { return v_[head_ + i]; }
  const LogEntry& front() const { return v_[head_]; }
  const LogEntry& back() const { return v_.back(); }
  const_iterator begin() const { return v_.begin() + static_cast<std::ptrdiff_t>(head_); }
  const_iterator end() const { return v_.end(); }
  void push_back(LogEntry e) { v_.push_back(std::move(e)); }
  void pop_front() {
    v_[head_++] = LogEntry{};
    if (head_ == v_.size()) {
      std::vector<LogEntry>().swap(v_);
      head_ = 0;
    } else if (head_ >= 16 && head_ * 2 >= v_.size()) {
      v_.erase(v_.begin(), v_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }

 private:
  std::vector<LogEntry> v_;
  size_t head_ = 0;
};

// A closed log chunk moved out of memory into a segment file under the data
// directory. The file is a cache: when it is missing or damaged the chunk is
// rebuilt from the change log (ShapeService::fill_segment).
// What a shape keeps of a chunk it spilled (also in an evicted shape's stub,
// so it is small: the file's path follows from the shape and end_index, or
// from the pack).
struct SpilledChunk {
  LogOffset first, last;  // offsets of its first and last entries
  size_t end_index = 0;   // global index of its last entry
  size_t bytes = 0;       // size of its segment record
  // 0: its own file (<shape dir>/<end_index>.seg). Else the pack file it was
  // written to with the other shapes' pressure spills of the same pass, at
  // `offset` (ShapeStore::pack_path).
  uint64_t offset = 0;
  uint32_t pack = 0;
};

// A spilled chunk and the path of its file (what a read of it needs).
struct SegmentFile : SpilledChunk {
  std::string path;
};

// Segment I/O (no store lock needed; a record is immutable once written).
// A segment record: "SSEG1\n", then per entry u64 tx, u64 op, u32 length,
// JSON bytes, then u32 entry count and "END\n". Little-endian. A chunk's own
// file holds one record; a pack file holds the records of many shapes' chunks
// one after the other.
void append_segment(std::string& out, const std::vector<LogEntry>& entries);
bool write_segment(const std::string& path, const std::vector<LogEntry>& entries, std::string& error);
// Writes `bytes` to `path` through a temporary file and a rename: a reader
// never sees half of it.
bool write_file_whole(const std::string& path, const std::string& bytes, std::string& error);
// The entries of `c` after `after` (JSON texts), or false when the file is
// missing, damaged or not the chunk it should be.
bool read_segment(const SegmentFile& c, LogOffset after, std::vector<std::shared_ptr<const std::string>>& out);
// Makes <data_dir>/shapes empty (segment files of an earlier run are not
// reused) and returns its path; refuses a directory shapesyncd did not create.
bool prepare_segment_dir(const std::string& data_dir, std::string& shapes_dir, std::string& error);


struct Shape;

// A waiting request, linked into its shape's list while it waits: adding and
// removing it allocate nothing. wake() runs under the store mutex, once per
// wake-up (it is unlinked first), and may only post work.
struct Waiter {
  virtual ~Waiter() = default;
  virtual void wake() = 0;
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
  Shape* waiting_on = nullptr;  // null when not linked
};

// A coroutine waiting on a timer: woken by cancelling it on its own executor.
// Owned by a shared_ptr (the wake-up holds a reference until it runs).
struct TimerWaiter : Waiter, std::enable_shared_from_this<TimerWaiter> {
  explicit TimerWaiter(asio::any_io_executor ex) : timer(ex) {}
  void wake() override;
  asio::steady_timer timer;
};

struct ShapeDef {
  std::shared_ptr<const TableInfo> table;
  std::vector<size_t> selected;  // indexes into table->columns
  Replica replica = Replica::kDefault;
  LogMode log_mode = LogMode::kFull;
  std::string key;  // canonical definition, the identity of the shape
  // On whose behalf it was registered (docs/auth.md): its snapshot runs as
  // this role with these claims. nullopt: the sidecar's own rights (auth off).
  std::optional<std::string> role;
  std::string claims = "{}";
  bool policy_applied = false;  // row-level security applied: its responses are private
};

// A text every shape of a table (or of one column list) shares.
using SharedText = std::shared_ptr<const std::string>;

// One shape. Its identity (def, handle, shape_id, filtered, where,
// schema_header, key_prefix, relation) is set once, when the store creates it,
// and read without the lock; everything else belongs to the store's lock.
// def.table and the three texts are shared with the store's other shapes of
// the same table description (ShapeStore interns them: 100 000 shapes of one
// table hold one copy, not 100 000).
struct Shape {
  ShapeDef def;
  std::string handle;
  int32_t shape_id = 0;     // the extension's id, matched against shape_ops
  bool filtered = false;    // has a WHERE: sees only changes listed in shape_ops
  std::string where;        // canonical (deparsed) WHERE, empty for whole-table shapes
  SharedText schema_header = empty_text();
  SharedText key_prefix = empty_text();
  SharedText relation = empty_text();
  static const SharedText& empty_text() {
    static const SharedText e = std::make_shared<const std::string>();
    return e;
  }

  // Snapshot: chunk bodies (complete JSON arrays), the last ends with snapshot-end.
  std::vector<std::shared_ptr<const std::string>> snapshot_chunks;
  PgSnapshot snap;
  uint64_t start_tick = 0;  // batches after this tick apply (filtered by snap)

  // The log: entries with global index >= log_base are in memory (`log`);
  // older ones were spilled, a closed chunk per segment file (`spilled`).
  EntryLog log;
  size_t log_base = 0;
  std::vector<SpilledChunk> spilled;
  std::vector<size_t> chunk_ends;  // global index of the last entry of each closed log chunk
  size_t open_chunk_bytes = 0;
  size_t log_memory_bytes = 0;     // JSON bytes of the entries in memory

  // Memory budget (ShapeStore::set_budget): what the store charges this shape
  // for (its structure, snapshot chunks, in-memory log, cached live bodies);
  // `counted` while it is charged (from begin_create until it is dropped).
  mutable size_t held_bytes = 0;
  bool counted = false;
  uint64_t dir_gen = 0;      // its segment directory is <handle>.<dir_gen> (a reload never meets an old one's files)
  // Every batch up to this tick is in its log already: reloaded after an
  // eviction, or caught up a part at a time (ShapeStore::catch_up) while created.
  uint64_t resume_tick = 0;

  bool ready = false;    // snapshot taken and caught up
  bool failed = false;   // creation failed (waiters retry)
  std::string build_error;  // failed because its filter raised on a row: 400 for its waiters
  std::shared_ptr<const PgError> config_failure;  // failed for want of a grant (this sidecar's): 503 for its waiters
  bool invalid = false;  // rotated: clients must refetch
  std::string invalid_reason;
  Waiter* waiters = nullptr;  // intrusive list (under the store mutex)
  // The last live read's answer, shared by every waiter asking for the same
  // range: one body per change, whatever the number of clients.
  struct LiveCache {
    LogOffset after;
    size_t log_size = 0;
    uint64_t global = 0;
    LogOffset end;
    bool up_to_date = false;
    std::shared_ptr<const std::string> body;
    int64_t commit_us = 0;
  };
  mutable LiveCache live_cache;
  mutable LiveCache event_cache;  // the same for SSE event text

  // Usage, for monitoring (docs/monitoring.md): updated by the HTTP layer with
  // relaxed atomics, read by the stats reporter without the store lock.
  std::atomic<int32_t> live_clients{0};   // parked long-polls and SSE streams on it
  std::atomic<uint64_t> requests{0};      // requests for it
  std::atomic<int64_t> last_used_us{0};   // last request, µs since the Unix epoch

  LogOffset last_offset() const {
    if (!log.empty()) return log.back().offset;
    return spilled.empty() ? LogOffset::snapshot_end() : spilled.back().last;
  }
  size_t entry_count() const { return log_base + log.size(); }
};

// A closed chunk to write to a segment file (outside the store lock), then
// to drop from memory with ShapeStore::commit_spill.
struct SpillJob {
  std::shared_ptr<Shape> shape;
  size_t first_index = 0, end_index = 0;
  std::vector<LogEntry> entries;
  std::string path;
  size_t file_bytes = 0;  // set by the writer (disk usage, for monitoring)
  uint64_t offset = 0;    // set by the writer when it packed the job (SpilledChunk::pack)
  uint32_t pack = 0;
  bool pressure = false;  // written because the store is over its memory budget
  // The shape's last job before its eviction: once written, the shape is
  // evicted if it is still idle (other_refs: its other jobs in the same batch,
  // which hold it too while they live).
  bool evict = false;
  long other_refs = 0;
};

// What a read of the log returns.
struct LogRead {
  std::vector<std::shared_ptr<const std::string>> entries;
  std::shared_ptr<const std::string> snapshot_chunk;  // set for snapshot reads (a complete body)
  // set when the entries are in a segment file: the caller reads them
  // (read_segment(*segment, segment_after, entries)) outside the lock
  std::optional<SegmentFile> segment;
  LogOffset segment_after;
  std::shared_ptr<const std::string> built;           // set by read_live: the whole body, already built
  LogOffset end;
  // Offset of the first (oldest) message it holds (or of where its segment
  // read starts), and, for live reads (read_live, read_events), the recorded
  // time of that message's tick in µs since the Unix epoch (its commit time
  // for the commit-to-send latency; 0 when unknown).
  LogOffset first;
  int64_t commit_us = 0;
  bool up_to_date = false;
  bool out_of_bounds = false;
  uint64_t global_last_seen = 0;
  bool has_data() const { return snapshot_chunk || segment || built || !entries.empty(); }
  // The next entries are in a segment file not read yet (see ShapeSource::fill_segment):
  // such a read has data but no body until it is filled.
  bool needs_segment() const { return segment.has_value(); }
  // The JSON array body. Throws std::logic_error for a read that needs_segment().
  std::string body() const;
  // As SSE event text: "data: <message>\n\n" per message, then the up-to-date.
  // Throws std::logic_error for a read that needs_segment().
  std::string events() const;
};

// A shape's state as a request sees it, copied under the lock.
struct ShapeStatus {
  bool ready = false, invalid = false, failed = false;
  bool streaming = false;  // snapshot chunks are being served while it is built
  std::string build_error;
  std::shared_ptr<const PgError> config_failure;
};

// A read of a shape's log for a request: the log read, or "rotated" with the
// handle of its ready replacement (when there is one).
struct ShapeRead {
  bool rotated = false;
  std::string next_handle;
  LogRead r;
};

// Figures for /metrics.
struct StoreStats {
  size_t shapes = 0, waiting = 0, log_memory_bytes = 0, log_disk_bytes = 0, window_bytes = 0, window_batches = 0;
  uint64_t last_tick = 0, applied_changes = 0, appended_entries = 0;
  // Memory budget (docs/sidecar.md, "Memory budget").
  size_t held_bytes = 0;       // everything the store charges (shapes, stubs, aliases, window)
  size_t max_memory = 0;       // the budget (SIZE_MAX: none)
  size_t evicted_shapes = 0;   // stubs of evicted shapes kept for a cheap reload
  uint64_t pressure_spills = 0, pressure_spilled_bytes = 0, evictions = 0, reloads = 0;
  // Batches read from the change log and not yet applied (ShapeStore::set_inflight):
  // now, the most ever, and how often the follower's read came out over its
  // cap and its span of ticks shrank (FetchPacer).
  size_t inflight_bytes = 0, inflight_peak_bytes = 0;
  uint64_t fetch_shrinks = 0, fetch_span = 0;
};

// The memory budget: above max_bytes the store spills in-memory logs to
// segment files (least recently used shapes first), then evicts idle shapes
// (no request holds them, no live client, unused for idle_us) until it holds
// at most low_water() again; it also keeps at most max_shapes shapes.
struct MemoryBudget {
  size_t max_bytes = SIZE_MAX;
  size_t max_shapes = SIZE_MAX;
  int64_t idle_us = 60'000'000;
  // Stubs of evicted shapes (what a cheap reload needs), at most; past it the
  // oldest go and their shapes are rebuilt from the database. 0: an eighth of max_bytes.
  size_t stub_bytes = 0;
  size_t low_water() const { return max_bytes == SIZE_MAX ? max_bytes : max_bytes - max_bytes / 10; }
  size_t max_stub_bytes() const {
    if (stub_bytes) return stub_bytes;
    return max_bytes == SIZE_MAX ? SIZE_MAX : max_bytes / 8;
  }
  // What one read of the change log may decode to (FetchPacer's cap): a
  // sixteenth of the budget, a sixty-fourth while the store is over it (its
  // logs spill between two reads, so smaller reads let the spilling keep up).
  // The follower, whose next read is in flight while one is applied, gives
  // each of its reads half (ShapeService::process_new_ticks).
  size_t fetch_bytes(bool over) const {
    if (max_bytes == SIZE_MAX) return SIZE_MAX;
    return std::max<size_t>(1, over ? max_bytes / 64 : max_bytes / 16);
  }
};

// What the store charges for (estimates of the allocations behind them, not
// malloc's own figures; counters kept as things are added and dropped, never a walk).
namespace cost {
constexpr size_t kEntry = 112;         // a LogEntry in the deque + its shared string's control block and header
                                       // (the JSON is charged by its capacity, not its length)
constexpr size_t kChunk = 64;          // a shared snapshot chunk or cached body, besides its bytes
constexpr size_t kShapeIndexes = 512;  // the shape's nodes in the store's maps and vectors
constexpr size_t kAlias = 96;          // a request key -> definition key entry, besides the keys
constexpr size_t kStub = 160;          // an evicted shape's stub, besides its segment list
}  // namespace cost

class ShapeStore {
 public:
  explicit ShapeStore(size_t chunk_bytes) : chunk_bytes_(chunk_bytes) {}

  // Spill closed log chunks to segment files under `dir` ("" = keep every
  // entry in memory), keeping the newest `keep_chunks` closed chunks of each
  // shape in memory. Set before use.
  void set_spill(std::string dir, size_t keep_chunks) {
    spill_dir_ = std::move(dir);
    keep_chunks_ = keep_chunks;
  }
  const std::string& spill_dir() const { return spill_dir_; }
  // The memory budget (default: none). Spilling and eviction need set_spill().
  void set_budget(MemoryBudget b);
  MemoryBudget budget() const;
  // What the budget charges for a log entry and a table description (allocations, estimated).
  static size_t entry_cost(const std::string& json);
  static size_t table_cost(const TableInfo& t);
  // What a decoded batch takes (estimated; the window and in-flight reads are charged so).
  static size_t batch_cost(const Batch& b);
  // Decoded batches read from the change log and not applied yet: charged
  // against the budget until set back to 0 (the follower sets it around
  // apply_all); `span` and `shrunk` are the reader's pacing, for monitoring.
  void set_inflight(size_t bytes, uint64_t span = 0, bool shrunk = false);
  // Over the budget now (what the store charges, in-flight reads included)?
  bool over_budget() const;

  // --- shapes ---
  std::shared_ptr<Shape> active(const std::string& def_key) const;
  std::shared_ptr<Shape> by_handle(const std::string& handle) const;
  // The active shape a request's definition key was last registered as.
  std::shared_ptr<Shape> resolve(const std::string& request_key) const;
  // Begins a not-yet-ready shape as the active one for its definition, with
  // the registry's identity; or returns the active shape already there
  // (`created` false). Remembers request_key → def.key for resolve().
  std::shared_ptr<Shape> begin_create(ShapeDef def, const std::string& request_key, std::string handle,
                                      int32_t shape_id, std::string where, bool& created);
  // The same with no identity (tests).
  std::shared_ptr<Shape> begin_create(ShapeDef def);
  ShapeStatus status(const Shape& s) const;
  // The snapshot a shape is built from (and its chunks, when loaded whole).
  void set_snapshot(Shape& s, const PgSnapshot& snap, uint64_t start_tick,
                    const std::vector<std::shared_ptr<const std::string>>* chunks = nullptr);
  // A snapshot chunk of a shape being created is complete: it can be served
  // (offset -1 and 0_k) before the shape is ready.
  void publish_snapshot_chunk(const std::shared_ptr<Shape>& s, std::shared_ptr<const std::string> chunk);
  // Completes creation: applies retained batches after start_tick. Returns
  // false (and fails the shape) when batches it needs are no longer retained.
  // `extra` holds the batches in (start_tick, extra_upto] read from the database;
  // the window must hold every later one (extra_upto >= window_floor()).
  bool finish_create(const std::shared_ptr<Shape>& s, const std::vector<Batch>& extra_batches = {},
                     uint64_t extra_upto = 0);
  // Completes creation from the window alone when it reaches back to
  // start_tick (nullopt); otherwise the window's floor: read the batches in
  // (start_tick, floor] and call finish_with().
  std::optional<uint64_t> finish_or_floor(const std::shared_ptr<Shape>& s, uint64_t start_tick);
  // Completes creation with `extra` = the batches in (start_tick, upto]; false
  // when the window moved past upto meanwhile (read again).
  bool finish_with(const std::shared_ptr<Shape>& s, const std::vector<Batch>& extra, uint64_t upto);
  // Catches a shape being created up by one part of the change log: `part`
  // holds every batch in (after, upto]; those after the shape's own position
  // (its start tick, or where an earlier part or its restored log left it,
  // which must be >= after) go into its log now, and its position moves to
  // upto. So a long catch-up is read and applied a part at a time (memory: one
  // part), then finished with finish_or_floor(). False when the shape can no
  // longer be created (rotated by a change in the part, or failed): stop.
  bool catch_up(const std::shared_ptr<Shape>& s, const std::vector<Batch>& part, uint64_t after, uint64_t upto);
  // A creation failed (no-op for a ready or rotated shape): its waiters learn
  // the filter error (a 400) or this sidecar's configuration failure (a 503).
  void fail_create(const std::shared_ptr<Shape>& s, std::string build_error = {},
                   std::shared_ptr<const PgError> config_failure = nullptr);
  // Can `ro` be read now? Always once ready; before, only published snapshot
  // chunks. Pure: callers pass a shape they read under the lock.
  static bool can_read(const Shape& s, const RequestOffset& ro);
  // Does reading `ro` land in a segment file (read() then returns LogRead::segment)?
  static bool reads_segment(const Shape& s, const RequestOffset& ro);
  // Marks a shape invalid, drops it from the active map and wakes its waiters.
  void invalidate(const std::shared_ptr<Shape>& s, const std::string& reason);
  // Starts over from tick t after changes were lost (the change log was
  // truncated past this process): every ready shape is invalidated here (its
  // clients refetch; it is rebuilt from the database) and the window emptied.
  // Returns the last tick applied before.
  uint64_t restart_from(uint64_t t, const std::string& reason);

  // --- following the change log ---
  // Applies a batch to every ready shape; remembers it in the window.
  // Returns (handle, reason) of shapes invalidated by it (the caller records that in the database).
  std::vector<std::pair<std::string, std::string>> apply(Batch batch);
  // Applies batches, then marks every tick up to `upto` applied and trims the
  // window to `max_batches` / `max_bytes`. Returns the invalidations.
  std::vector<std::pair<std::string, std::string>> apply_all(std::vector<Batch> batches, uint64_t upto,
                                                             size_t max_batches, size_t max_bytes);
  uint64_t last_tick() const;
  // Starting point: nothing before t will be applied or retained.
  void set_last_tick(uint64_t t);
  // Every tick up to t has been applied (empty ticks carry no batch).
  void advance(uint64_t t);
  // Every non-empty batch with tick in (window_floor(), last_tick()] is retained.
  uint64_t window_floor() const;
  void trim_window(size_t max_batches, size_t max_bytes = SIZE_MAX);
  StoreStats stats() const;
  // A ready shape and its log's bytes in memory, for the stats reporter.
  struct ShapeUsage {
    std::shared_ptr<Shape> shape;
    size_t log_bytes = 0;
  };
  std::vector<ShapeUsage> usage() const;
  // The recorded time (µs since the Unix epoch) of the tick of the message at
  // `first` (LogRead::first), or of the oldest tick remembered when that one
  // is older; 0 when no tick time is known.
  int64_t commit_time_us(LogOffset first) const;

  // --- segment files ---
  // Closed chunks due to be spilled (ready shapes only); see SpillJob. Over
  // the memory budget, also the in-memory logs of the least recently used
  // shapes (SpillJob::pressure), and idle shapes with nothing left in memory
  // are evicted (now_us: the time idleness is measured against; 0 = the clock).
  std::vector<SpillJob> take_spills(int64_t now_us = 0);
  // Called when a reloaded shape's snapshot is set (before catching it up):
  // when it was evicted with this snapshot, gives it back its segment files and
  // log position and returns the tick its log is complete up to (it catches up
  // from there); else 0 (it catches up from its snapshot's tick).
  uint64_t restore_evicted(const std::shared_ptr<Shape>& s);
  // Forgets the stub of an evicted shape (retired in the database meanwhile).
  void drop_evicted(const std::string& handle);
  // The job's file is written: drop its entries from memory (no-op when the
  // shape is gone or changed meanwhile; the caller then deletes the file).
  bool commit_spill(const SpillJob& job);
  // Writes the jobs of take_spills() and commits them: closed chunks each to
  // its own file; pressure spills, which are many and small (a pass over
  // 100 000 shapes spills thousands of logs of a few entries), all into one
  // pack file per pass. A pack goes when no shape refers to it any more.
  void write_spills(std::vector<SpillJob>& jobs);
  std::string pack_path(uint32_t pack) const;
  // A chunk whose pack record was lost and rebuilt into its own file
  // (`file_bytes` long, at segment_path): later reads use the file, and the
  // pack loses a reference. False when the shape no longer has that chunk.
  bool repoint_chunk(const Shape& s, const SpilledChunk& was, size_t file_bytes);
  // Segment directories of shapes that are gone (the caller deletes them).
  std::vector<std::string> take_dead_dirs();
  // Directory of a shape's segment files.
  std::string shape_dir(const Shape& s) const;
  std::string segment_path(const Shape& s, size_t end_index) const;  // a spilled chunk's file
  // The entries a shape's log would have for `batches` (a scratch replay, for
  // rebuilding a lost segment file); the shape itself is not touched.
  std::vector<LogEntry> replay(const Shape& s, const std::vector<Batch>& batches);

  // --- reads ---
  // Reads after `after` (a real or snapshot offset) for a ready shape.
  LogRead read(const Shape& s, const RequestOffset& ro) const;
  // The same, with the body built (`built`) and shared by every reader of the
  // same range until the shape's log or the global position moves.
  LogRead read_live(const Shape& s, const RequestOffset& ro) const;
  // The same as SSE event text ("data: <message>\n\n" per message, then the
  // up-to-date), shared likewise.
  LogRead read_events(const Shape& s, const RequestOffset& ro) const;
  // A request's read: rotated (and its replacement), or read()/read_live().
  ShapeRead read_request(const std::shared_ptr<Shape>& s, const RequestOffset& ro, bool live) const;
  // A parked request's read: unlinks `w` if it is linked, then reads as
  // read_request(); when the shape is not rotated and keep_waiting(read) says
  // so, links `w` to the shape instead and returns nullopt. keep_waiting runs
  // under the lock: it may only look at the read.
  std::optional<ShapeRead> read_or_wait(const std::shared_ptr<Shape>& s, const RequestOffset& ro, bool live,
                                        Waiter& w, const std::function<bool(const LogRead&)>& keep_waiting);
  // The same for an SSE stream (read_events()).
  std::optional<ShapeRead> read_events_or_wait(const std::shared_ptr<Shape>& s, const RequestOffset& ro, Waiter& w,
                                               const std::function<bool(const LogRead&)>& keep_waiting);

  // --- waiting ---
  // Evaluates pred(s) under the lock.
  bool holds(const Shape& s, const std::function<bool(const Shape&)>& pred) const;
  // Links w to s unless done(s) (evaluated under the lock) is already true;
  // returns whether it linked. It is unlinked when woken.
  bool wait_unless(Shape& s, Waiter& w, const std::function<bool(const Shape&)>& done);
  // Links w to s (w must not be waiting); it is unlinked when woken.
  void add_waiter(Shape& s, Waiter& w);
  // Unlinks w if it is still waiting.
  void remove_waiter(Waiter& w);
  // Wakes every waiting request (shutdown).
  void wake_all();

  // --- progress reports ---
  // (handle, last offset) of shapes whose log grew since the last call.
  std::vector<std::pair<std::string, std::string>> take_progress();
  // Puts back what take_progress() returned when reporting it failed.
  void restore_progress(const std::vector<std::pair<std::string, std::string>>& progress);

 private:
  // The methods below expect mu_ held (the public ones above take it and call them).
  std::shared_ptr<Shape> active_locked(const std::string& def_key) const;
  void drop_aliases_locked(const std::string& def_key);
  std::shared_ptr<Shape> by_handle_locked(const std::string& handle) const;
  std::shared_ptr<Shape> begin_create_locked(ShapeDef def);
  bool finish_create_locked(const std::shared_ptr<Shape>& s, const std::vector<Batch>& extra_batches,
                            uint64_t extra_upto);
  void fail_create_locked(const std::shared_ptr<Shape>& s);
  void publish_snapshot_chunk_locked(const std::shared_ptr<Shape>& s, std::shared_ptr<const std::string> chunk);
  void invalidate_locked(const std::shared_ptr<Shape>& s, const std::string& reason);
  void restart_from_locked(uint64_t t, const std::string& reason);
  std::vector<std::pair<std::string, std::string>> apply_locked(Batch batch);
  void trim_window_locked(size_t max_batches, size_t max_bytes);
  std::vector<SpillJob> take_spills_locked(int64_t now_us);
  void take_pressure_spills_locked(std::vector<SpillJob>& jobs, int64_t now_us);
  bool evictable_locked(const std::shared_ptr<Shape>& s, int64_t now_us, long other_refs = 0) const;
  void evict_locked(const std::shared_ptr<Shape>& s);
  void drop_evicted_locked(const std::string& handle);
  void trim_evicted_locked();
  // Interned descriptions: begin_create points a new shape at the store's copy
  // of its table description and texts (making one when it has none);
  // release_locked lets go, and the last shape to go takes the copy's charge.
  void intern_locked(Shape& s);
  void unintern_locked(const Shape& s);
  SharedText intern_text_locked(std::string text);
  void unintern_text_locked(const SharedText& t);
  // Memory accounting: charge / uncharge a shape (no-op once it is released).
  void charge(const Shape& s, size_t n) const;
  void uncharge(const Shape& s, size_t n) const;
  // Drops a shape's charge when the store lets go of it.
  void release_locked(Shape& s);
  size_t charged_total_locked() const { return held_ + window_bytes_ + inflight_; }
  bool commit_spill_locked(const SpillJob& job);
  // A shape's (or stub's) spilled chunks are dropped: disk usage and pack references.
  void forget_chunks_locked(const std::vector<SpilledChunk>& chunks);
  void unref_pack_locked(uint32_t pack);
  std::vector<std::string> take_dead_dirs_locked();
  std::vector<LogEntry> replay_locked(const Shape& s, const std::vector<Batch>& batches);
  int64_t commit_time_locked(LogOffset first) const;
  LogRead read_locked(const Shape& s, const RequestOffset& ro) const;
  LogRead read_live_locked(const Shape& s, const RequestOffset& ro) const;
  LogRead read_events_locked(const Shape& s, const RequestOffset& ro) const;
  void add_waiter_locked(Shape& s, Waiter& w);
  void remove_waiter_locked(Waiter& w);
  void wake_all_locked();
  std::vector<std::pair<std::string, std::string>> take_progress_locked();
  void restore_progress_locked(const std::vector<std::pair<std::string, std::string>>& progress);
  ShapeRead rotated_locked(const Shape& s) const;
  uint64_t global_position_locked() const { return (last_tick_ << 32) | 0xffffffffULL; }

  // Where in the log a read of `ro` starts, or nullopt when it reads a snapshot chunk.
  static std::optional<LogOffset> log_after(const Shape& s, const RequestOffset& ro);
  // Applies b to every registered shape, or only to `only` (a shape being created).
  void apply_batch(const Batch& b, Shape* only, std::vector<std::pair<std::string, std::string>>& invalidated);
  std::vector<std::shared_ptr<Shape>> shapes_of(uint32_t relid) const;
  void append(Shape& s, LogOffset off, std::string json);
  void wake(Shape& s);
  template <class Format>
  LogRead read_cached(const Shape& s, const RequestOffset& ro, Shape::LiveCache& c, Format format) const;

  size_t chunk_bytes_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Shape>> active_;     // definition key → shape
  std::map<std::string, std::string> aliases_;               // request definition key → definition key
  // definition key → the request keys aliased to it: they go when its shape
  // leaves active_ (evicted, invalidated, failed), so aliases stay bounded by
  // the shapes held (a request without one looks its definition up again)
  std::unordered_map<std::string, std::vector<std::string>> aliases_of_;
  std::map<std::string, std::shared_ptr<Shape>> by_handle_;  // handle → shape (ready ones)
  // every ready shape, by table (a map per table: removing one of 100 000 shapes is not a scan)
  std::unordered_map<uint32_t, std::unordered_map<const Shape*, std::shared_ptr<Shape>>> by_relid_;
  std::map<uint32_t, std::vector<std::shared_ptr<Shape>>> whole_by_relid_;  // ready whole-table shapes
  std::unordered_map<int32_t, std::shared_ptr<Shape>> by_shape_id_;          // ready filtered shapes
  std::deque<Batch> window_;
  std::deque<size_t> window_sizes_;
  size_t window_bytes_ = 0;
  size_t inflight_ = 0, inflight_peak_ = 0;  // set_inflight()
  uint64_t fetch_shrinks_ = 0, fetch_span_ = 0;
  uint64_t applied_changes_ = 0;   // changes of batches applied (apply())
  uint64_t appended_entries_ = 0;  // entries appended to ready shapes' logs
  size_t disk_bytes_ = 0;          // segment files of live shapes
  // (tick id, tick time in µs) of the latest non-empty ticks applied, for
  // commit_time_locked(); ascending, at most kTickTimes.
  static constexpr size_t kTickTimes = 65536;
  std::deque<std::pair<uint64_t, int64_t>> tick_times_;
  std::string spill_dir_;
  size_t keep_chunks_ = 1;
  std::unordered_set<Shape*> spill_due_;
  std::vector<std::string> dead_dirs_;
  std::unordered_set<Shape*> grown_;
  uint64_t last_tick_ = 0;
  uint64_t window_floor_ = 0;
  size_t waiting_ = 0;

  // Memory budget.
  MemoryBudget budget_;
  mutable size_t held_ = 0;        // charged: shapes (held_bytes), stubs, aliases (the window apart)
  mutable size_t log_memory_ = 0;  // JSON bytes of in-memory log entries of charged shapes
  uint64_t next_dir_gen_ = 1;
  struct SharedTable {
    std::shared_ptr<const TableInfo> table;
    SharedText key_prefix, relation;
    size_t cost = 0;  // charged in held_ while shapes use it
    size_t shapes = 0;
  };
  std::unordered_map<uint32_t, std::vector<SharedTable>> tables_;  // relid -> descriptions in use
  struct SharedTextEntry {
    SharedText text;
    size_t shapes = 0;
  };
  std::unordered_map<std::string, SharedTextEntry> texts_;  // schema headers in use
  struct Pack {
    size_t chunks = 0;    // chunks that refer to it
    bool sealed = false;  // every job of its pass committed (or not): it may go at 0
  };
  std::unordered_map<uint32_t, Pack> packs_;
  uint32_t next_pack_ = 1;
  struct EvictedShape {
    int32_t shape_id = 0;
    uint64_t start_tick = 0, tick = 0, dir_gen = 0;
    std::vector<SpilledChunk> spilled;
    std::vector<size_t> chunk_ends;
    size_t log_base = 0, open_chunk_bytes = 0;
    size_t bytes = 0;  // charged for it
    uint64_t seq = 0;  // eviction order
  };
  std::unordered_map<std::string, EvictedShape> evicted_;  // handle -> stub
  std::deque<std::pair<uint64_t, std::string>> evicted_order_;  // (seq, handle), oldest first (stale entries skipped)
  uint64_t evict_seq_ = 0;
  size_t evicted_bytes_ = 0;
  uint64_t pressure_spills_ = 0, pressure_spilled_bytes_ = 0, evictions_ = 0, reloads_ = 0;
  // A pass over budget that could free nothing (every shape live or busy):
  // the next full pass waits until the count grew by 1/64 of the budget or a
  // second went by, so a store kept over budget by live shapes does not sort
  // every shape under the lock at every tick.
  int64_t fruitless_at_us_ = 0;
  int64_t window_pressed_until_us_ = 0;  // the window stays small until then (take_pressure_spills_locked)
  size_t fruitless_total_ = 0;
};

}  // namespace shapesync
