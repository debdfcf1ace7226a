// Shape store: applying batches to shape logs, chunking, reads, waiters.
#include "shapes/store.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/post.hpp>

#include "util/log.hpp"

namespace shapesync {

// A read whose entries are still in a segment file has no body yet: writing
// one would tell the client it had everything up to r.end (rows lost).
static void require_filled(const LogRead& r) {
  if (r.segment) throw std::logic_error("shape log read serialized before its segment file was read");
}

std::string LogRead::body() const {
  require_filled(*this);
  if (snapshot_chunk) return *snapshot_chunk;
  if (built) return *built;
  std::string out;
  size_t n = 2;
  for (auto& e : entries) n += e->size() + 1;
  out.reserve(n + 96);
  out += '[';
  bool first = true;
  for (auto& e : entries) {
    if (!first) out += ',';
    first = false;
    out += *e;
  }
  if (up_to_date) {
    if (!first) out += ',';
    out += up_to_date_message(global_last_seen);
  }
  out += ']';
  return out;
}

std::string LogRead::events() const {
  require_filled(*this);
  std::string text;
  size_t n = 64;
  for (auto& e : entries) n += e->size() + 8;
  text.reserve(n);
  for (auto& e : entries) {
    text += "data: ";
    text += *e;
    text += "\n\n";
  }
  if (up_to_date) {
    text += "data: ";
    text += up_to_date_message(global_last_seen);
    text += "\n\n";
  }
  return text;
}

std::shared_ptr<Shape> ShapeStore::active_locked(const std::string& def_key) const {
  auto it = active_.find(def_key);
  return it == active_.end() ? nullptr : it->second;
}

std::shared_ptr<Shape> ShapeStore::by_handle_locked(const std::string& handle) const {
  auto it = by_handle_.find(handle);
  return it == by_handle_.end() ? nullptr : it->second;
}

std::shared_ptr<Shape> ShapeStore::begin_create_locked(ShapeDef def) {
  auto s = std::make_shared<Shape>();
  s->def = std::move(def);
  s->counted = true;
  intern_locked(*s);
  s->dir_gen = next_dir_gen_++;
  charge(*s, sizeof(Shape) + cost::kShapeIndexes + s->def.key.size() + s->def.claims.size() +
                 (s->def.role ? s->def.role->size() : 0) + s->def.selected.size() * sizeof(size_t));
  active_[s->def.key] = s;
  return s;
}

void ShapeStore::intern_locked(Shape& s) {
  auto& mine = tables_[s.def.table->relid];
  auto it = std::find_if(mine.begin(), mine.end(), [&](const SharedTable& t) { return *t.table == *s.def.table; });
  if (it == mine.end()) {
    SharedTable t;
    t.table = s.def.table;
    t.key_prefix = std::make_shared<const std::string>(key_prefix(*t.table));
    t.relation = std::make_shared<const std::string>(relation_json(*t.table));
    t.cost = table_cost(*t.table) + 2 * cost::kChunk + t.key_prefix->size() + t.relation->size();
    held_ += t.cost;
    mine.push_back(std::move(t));
    it = std::prev(mine.end());
  }
  ++it->shapes;
  s.def.table = it->table;
  s.key_prefix = it->key_prefix;
  s.relation = it->relation;
  s.schema_header = intern_text_locked(schema_json(*s.def.table, s.def.selected));
}

SharedText ShapeStore::intern_text_locked(std::string text) {
  auto it = texts_.find(text);
  if (it == texts_.end()) {
    size_t cost = 2 * text.size() + cost::kChunk + cost::kAlias;  // the map's key and the shared copy
    SharedTextEntry e;
    e.text = std::make_shared<const std::string>(text);
    it = texts_.emplace(std::move(text), std::move(e)).first;
    held_ += cost;
  }
  ++it->second.shapes;
  return it->second.text;
}

void ShapeStore::unintern_text_locked(const SharedText& t) {
  auto it = texts_.find(*t);
  if (it == texts_.end() || it->second.text != t || --it->second.shapes > 0) return;
  size_t cost = 2 * it->first.size() + cost::kChunk + cost::kAlias;
  held_ -= std::min(held_, cost);
  texts_.erase(it);
}

void ShapeStore::unintern_locked(const Shape& s) {
  unintern_text_locked(s.schema_header);
  auto m = tables_.find(s.def.table->relid);
  if (m == tables_.end()) return;
  auto& mine = m->second;
  auto it = std::find_if(mine.begin(), mine.end(), [&](const SharedTable& t) { return t.table == s.def.table; });
  if (it == mine.end() || --it->shapes > 0) return;
  held_ -= std::min(held_, it->cost);
  mine.erase(it);
  if (mine.empty()) tables_.erase(m);
}

// A table description (one per distinct description, shared by its shapes).
size_t ShapeStore::table_cost(const TableInfo& t) {
  size_t n = sizeof(TableInfo) + cost::kChunk + t.schema.size() + t.name.size() + t.pk.size() * sizeof(size_t);
  n += t.columns.size() * (sizeof(ColumnInfo) + 64);
  return n;
}

size_t ShapeStore::entry_cost(const std::string& json) { return json.capacity() + 1 + cost::kEntry; }

size_t ShapeStore::batch_cost(const Batch& b) {
  size_t bytes = sizeof(Batch);
  for (auto& tx : b.txs) {
    bytes += sizeof(Tx);
    for (auto& c : tx.changes) {
      bytes += sizeof(Change) + c.error.size() + c.shape_ops.size() * sizeof(int32_t);
      for (const auto* v : {&c.new_values, &c.old_values})
        if (*v)
          for (auto& x : **v) bytes += sizeof(x) + (x ? x->size() : 0);
    }
  }
  return bytes;
}

void ShapeStore::set_inflight(size_t bytes, uint64_t span, bool shrunk) {
  std::lock_guard lk(mu_);
  inflight_ = bytes;
  inflight_peak_ = std::max(inflight_peak_, bytes);
  if (span) fetch_span_ = span;
  if (shrunk) ++fetch_shrinks_;
}

bool ShapeStore::over_budget() const {
  std::lock_guard lk(mu_);
  return charged_total_locked() > budget_.max_bytes;
}

void ShapeStore::charge(const Shape& s, size_t n) const {
  if (!s.counted) return;
  s.held_bytes += n;
  held_ += n;
}

void ShapeStore::uncharge(const Shape& s, size_t n) const {
  if (!s.counted) return;
  n = std::min(n, s.held_bytes);
  s.held_bytes -= n;
  held_ -= std::min(held_, n);
}

void ShapeStore::release_locked(Shape& s) {
  if (!s.counted) return;
  unintern_locked(s);
  held_ -= std::min(held_, s.held_bytes);
  log_memory_ -= std::min(log_memory_, s.log_memory_bytes);
  s.held_bytes = 0;
  s.counted = false;
}

void TimerWaiter::wake() {
  asio::post(timer.get_executor(), [self = shared_from_this()] { self->timer.cancel(); });
}

void ShapeStore::add_waiter_locked(Shape& s, Waiter& w) {
  w.waiting_on = &s;
  w.prev = nullptr;
  w.next = s.waiters;
  if (s.waiters) s.waiters->prev = &w;
  s.waiters = &w;
  ++waiting_;
}

void ShapeStore::remove_waiter_locked(Waiter& w) {
  if (!w.waiting_on) return;
  if (w.prev) w.prev->next = w.next;
  else w.waiting_on->waiters = w.next;
  if (w.next) w.next->prev = w.prev;
  w.prev = w.next = nullptr;
  w.waiting_on = nullptr;
  --waiting_;
}

void ShapeStore::wake(Shape& s) {
  Waiter* w = s.waiters;
  s.waiters = nullptr;
  while (w) {
    Waiter* next = w->next;
    w->prev = w->next = nullptr;
    w->waiting_on = nullptr;
    --waiting_;
    w->wake();
    w = next;
  }
}

std::vector<std::pair<std::string, std::string>> ShapeStore::take_progress_locked() {
  std::vector<std::pair<std::string, std::string>> out;
  for (Shape* s : grown_)
    if (!s->invalid) out.emplace_back(s->handle, s->last_offset().to_string());
  grown_.clear();
  return out;
}

void ShapeStore::restore_progress_locked(const std::vector<std::pair<std::string, std::string>>& progress) {
  for (auto& [h, o] : progress)
    if (auto it = by_handle_.find(h); it != by_handle_.end()) grown_.insert(it->second.get());
}

void ShapeStore::wake_all_locked() {
  for (auto& [k, s] : active_) wake(*s);
  for (auto& [h, s] : by_handle_) wake(*s);
}

bool ShapeStore::finish_create_locked(const std::shared_ptr<Shape>& s, const std::vector<Batch>& extra,
                                      uint64_t extra_upto) {
  if (s->invalid || s->failed) return false;  // rotated or failed while it caught up: never ready
  std::vector<std::pair<std::string, std::string>> inv;
  // a reloaded shape's log already holds every batch up to resume_tick
  uint64_t from = std::max(s->start_tick, s->resume_tick);
  uint64_t covered = std::max(from, extra_upto);
  if (covered < window_floor_ && last_tick_ > covered) return false;  // a gap: the caller fetches more
  for (auto& b : extra)
    if (b.tick_id > from && b.tick_id <= extra_upto) apply_batch(b, s.get(), inv);
  for (auto& b : window_)
    if (b.tick_id > covered && b.tick_id <= last_tick_) apply_batch(b, s.get(), inv);
  if (!inv.empty()) {  // truncated, altered or its filter raised while it was being created
    auto sp = s;
    // apply_batch only flagged it (s->invalid): invalidate_locked() must still take
    // it out of the active map, or every later request would find it there
    s->invalid = false;
    invalidate_locked(sp, inv.front().second);
    return false;
  }
  s->ready = true;
  if (!spill_dir_.empty() && s->chunk_ends.size() > keep_chunks_) spill_due_.insert(s.get());
  by_handle_[s->handle] = s;
  by_relid_[s->def.table->relid].emplace(s.get(), s);
  if (s->filtered)
    by_shape_id_[s->shape_id] = s;
  else
    whole_by_relid_[s->def.table->relid].push_back(s);
  wake(*s);
  return true;
}

void ShapeStore::publish_snapshot_chunk_locked(const std::shared_ptr<Shape>& s, std::shared_ptr<const std::string> chunk) {
  charge(*s, chunk->size() + cost::kChunk);
  s->snapshot_chunks.push_back(std::move(chunk));
  wake(*s);
}

bool ShapeStore::can_read(const Shape& s, const RequestOffset& ro) {
  if (s.ready) return true;
  if (s.invalid || s.failed) return false;
  if (ro.kind == RequestOffset::Kind::kBeforeAll) return !s.snapshot_chunks.empty();
  return ro.kind == RequestOffset::Kind::kAt && ro.at.is_snapshot_region() && ro.at.op + 1 < s.snapshot_chunks.size();
}

void ShapeStore::fail_create_locked(const std::shared_ptr<Shape>& s) {
  s->failed = true;
  release_locked(*s);
  if (!s->spilled.empty()) {  // restored from an eviction, then failed: its files go
    dead_dirs_.push_back(shape_dir(*s));
    forget_chunks_locked(s->spilled);
    s->spilled.clear();
  }
  auto it = active_.find(s->def.key);
  if (it != active_.end() && it->second == s) {
    active_.erase(it);
    drop_aliases_locked(s->def.key);
  }
  wake(*s);
}

void ShapeStore::invalidate_locked(const std::shared_ptr<Shape>& s, const std::string& reason) {
  if (s->invalid) return;
  grown_.erase(s.get());
  spill_due_.erase(s.get());
  if (!spill_dir_.empty() && !s->handle.empty()) dead_dirs_.push_back(shape_dir(*s));
  forget_chunks_locked(s->spilled);
  s->invalid = true;
  s->invalid_reason = reason;
  release_locked(*s);
  auto it = active_.find(s->def.key);
  if (it != active_.end() && it->second == s) {
    active_.erase(it);
    drop_aliases_locked(s->def.key);
  }
  by_handle_.erase(s->handle);
  if (auto v = by_relid_.find(s->def.table->relid); v != by_relid_.end()) {
    auto e = v->second.find(s.get());
    if (e != v->second.end() && e->second == s) v->second.erase(e);
  }
  auto& w = whole_by_relid_[s->def.table->relid];
  w.erase(std::remove(w.begin(), w.end(), s), w.end());
  auto it2 = by_shape_id_.find(s->shape_id);
  if (it2 != by_shape_id_.end() && it2->second == s) by_shape_id_.erase(it2);
  wake(*s);
}

void ShapeStore::restart_from_locked(uint64_t t, const std::string& reason) {
  std::vector<std::shared_ptr<Shape>> ready;
  for (auto& [h, s] : by_handle_) ready.push_back(s);
  for (auto& s : ready) invalidate_locked(s, reason);
  window_.clear();
  window_sizes_.clear();
  window_bytes_ = 0;
  last_tick_ = t;
  window_floor_ = t;
  std::vector<std::string> stubs;
  for (auto& [h, e] : evicted_) stubs.push_back(h);
  for (auto& h : stubs) drop_evicted_locked(h);
}


void ShapeStore::append(Shape& s, LogOffset off, std::string json) {
  size_t n = json.size();
  s.log.push_back({off, std::make_shared<const std::string>(std::move(json))});
  s.log_memory_bytes += n;
  if (s.counted) log_memory_ += n;
  charge(s, entry_cost(*s.log.back().json));
  if (s.ready) ++appended_entries_;
  s.open_chunk_bytes += n + 1;
  if (s.open_chunk_bytes >= chunk_bytes_) {
    s.chunk_ends.push_back(s.entry_count() - 1);
    s.open_chunk_bytes = 0;
    if (!spill_dir_.empty() && s.ready) spill_due_.insert(&s);
  }
}

namespace {
std::string dir_name(const std::string& handle, uint64_t gen) {
  std::string name;
  for (char c : handle) name += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') ? c : '_';
  return name + "." + std::to_string(gen);
}
}  // namespace

std::string ShapeStore::shape_dir(const Shape& s) const { return spill_dir_ + "/" + dir_name(s.handle, s.dir_gen); }

std::string ShapeStore::segment_path(const Shape& s, size_t end_index) const {
  return shape_dir(s) + "/" + std::to_string(end_index) + ".seg";
}

std::vector<SpillJob> ShapeStore::take_spills_locked(int64_t now_us) {
  std::vector<SpillJob> jobs;
  for (Shape* raw : spill_due_) {
    auto sp = by_handle_locked(raw->handle);
    if (!sp || sp.get() != raw || sp->invalid) continue;
    Shape& sh = *sp;
    // closed chunks still in memory, oldest first
    std::vector<size_t> ends;
    for (size_t e : sh.chunk_ends)
      if (e >= sh.log_base) ends.push_back(e);
    if (ends.size() <= keep_chunks_) continue;
    size_t first = sh.log_base;
    for (size_t k = 0; k + keep_chunks_ < ends.size(); ++k) {
      SpillJob j;
      j.shape = sp;
      j.first_index = first;
      j.end_index = ends[k];
      for (size_t g = first; g <= ends[k]; ++g) j.entries.push_back(sh.log[g - sh.log_base]);
      j.path = segment_path(sh, ends[k]);
      jobs.push_back(std::move(j));
      first = ends[k] + 1;
    }
  }
  spill_due_.clear();
  if (!spill_dir_.empty()) take_pressure_spills_locked(jobs, now_us);
  return jobs;
}

bool ShapeStore::evictable_locked(const std::shared_ptr<Shape>& sp, int64_t now_us, long other_refs) const {
  const Shape& s = *sp;
  if (s.invalid || !s.ready || !s.counted || s.waiters) return false;
  if (s.live_clients.load(std::memory_order_relaxed) > 0) return false;
  if (now_us - s.last_used_us.load(std::memory_order_relaxed) < budget_.idle_us) return false;
  // Nobody but the store (the caller's copy and `other_refs` spill jobs) holds
  // it: no request is in flight on it. References are only handed out under
  // this lock, so none can appear while we hold it.
  long expected = 4 + other_refs;  // the caller's copy, by_handle_, by_relid_, whole_by_relid_ or by_shape_id_
  if (auto a = active_.find(s.def.key); a != active_.end() && a->second == sp) ++expected;
  return sp.use_count() == expected;
}

void ShapeStore::take_pressure_spills_locked(std::vector<SpillJob>& jobs, int64_t now_us) {
  size_t count = by_handle_.size();
  bool over_bytes = charged_total_locked() > budget_.max_bytes;
  if (!over_bytes && count <= budget_.max_shapes) return;
  if (now_us == 0)
    now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::system_clock::now().time_since_epoch()).count();
  if (fruitless_at_us_ && now_us - fruitless_at_us_ < 1'000'000 && count <= budget_.max_shapes &&
      charged_total_locked() <= fruitless_total_ + budget_.max_bytes / 64)
    return;
  // 0. the batch window is a cache of the change log: it goes first (down to
  // a thirty-second of the budget, and kept there for 10 s after the last
  // pass over budget: apply_all), before shape logs are written to disk
  if (over_bytes) {
    trim_window_locked(SIZE_MAX, budget_.max_bytes / 32);
    window_pressed_until_us_ = now_us + 10'000'000;
  }
  const size_t jobs_before = jobs.size();
  const uint64_t evictions_before = evictions_;
  struct Outcome {  // remembers a pass that freed nothing
    ShapeStore& st;
    std::vector<SpillJob>& jobs;
    size_t jobs_before;
    uint64_t evictions_before;
    int64_t now;
    ~Outcome() {
      bool fruitless = jobs.size() == jobs_before && st.evictions_ == evictions_before;
      st.fruitless_at_us_ = fruitless ? now : 0;
      st.fruitless_total_ = fruitless ? st.charged_total_locked() : 0;
    }
  } outcome{*this, jobs, jobs_before, evictions_before, now_us};
  const size_t target = budget_.low_water();
  size_t pending = 0;  // what the jobs free once written (and the evictions they end with)
  struct Planned {
    size_t jobs = 0;        // spill jobs of this shape
    size_t last_job = 0;    // index of its last one
    size_t next_index = 0;  // first entry no job covers
    size_t bytes = 0;       // counted in `pending`
  };
  std::unordered_map<const Shape*, Planned> planned;
  for (size_t k = 0; k < jobs.size(); ++k) {
    auto& j = jobs[k];
    Planned& p = planned[j.shape.get()];
    ++p.jobs;
    p.last_job = k;
    p.next_index = j.end_index + 1;
    for (auto& e : j.entries) p.bytes += entry_cost(*e.json);
  }
  for (auto& [sh, p] : planned) pending += p.bytes;
  // least recently used first (ties keep the handle order)
  std::vector<std::pair<int64_t, std::shared_ptr<Shape>>> lru;
  lru.reserve(count);
  for (auto& [h, sp] : by_handle_) lru.emplace_back(sp->last_used_us.load(std::memory_order_relaxed), sp);
  std::stable_sort(lru.begin(), lru.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  auto over = [&] {
    size_t total = charged_total_locked();
    return total > target && total - target > pending;
  };
  // Spills what `sp` still has in memory beyond its planned jobs.
  auto spill_rest = [&](const std::shared_ptr<Shape>& sp) {
    Shape& sh = *sp;
    Planned& p = planned[&sh];
    size_t from = p.jobs ? p.next_index : sh.log_base;
    if (from >= sh.entry_count()) return;
    SpillJob j;
    j.shape = sp;
    j.first_index = from;
    j.end_index = sh.entry_count() - 1;
    j.entries.assign(sh.log.begin() + static_cast<std::ptrdiff_t>(from - sh.log_base), sh.log.end());
    for (auto& e : j.entries) {
      pending += entry_cost(*e.json);
      p.bytes += entry_cost(*e.json);
    }
    j.path = segment_path(sh, j.end_index);
    j.pressure = true;
    ++p.jobs;
    p.last_job = jobs.size();
    p.next_index = j.end_index + 1;
    jobs.push_back(std::move(j));
  };
  // 1. the in-memory logs go to segment files:
  //    a. shapes nobody used for kRecentUs, the largest in-memory log first
  //       (each spill is a file: the largest logs free the most per file;
  //       least recently used first among equals) — in LRU order alone, a
  //       store of many idle shapes spilled the same few shapes' newest
  //       handful of entries at every pass, a file each;
  //    b. then the recently used ones (a long-poll client between two
  //       requests), least recently used first;
  //    c. shapes with live clients last (their readers would be sent to the files)
  auto live = [](const Shape& sh) { return sh.waiters || sh.live_clients.load(std::memory_order_relaxed) > 0; };
  constexpr int64_t kRecentUs = 5'000'000;
  {
    std::vector<std::pair<size_t, const std::shared_ptr<Shape>*>> by_size;
    for (auto& [used, sp] : lru)
      if (!sp->invalid && !live(*sp) && now_us - used >= kRecentUs && !sp->log.empty())
        by_size.emplace_back(sp->log_memory_bytes, &sp);
    std::stable_sort(by_size.begin(), by_size.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (auto& [bytes, sp] : by_size) {
      if (!over()) break;
      spill_rest(*sp);
    }
  }
  for (int sweep = 0; sweep < 2; ++sweep)
    for (auto& [used, sp] : lru) {
      if (!over()) break;
      if (!sp->invalid && live(*sp) == (sweep == 1)) spill_rest(sp);  // (spill_rest skips what is planned)
    }
  // 2. idle shapes are evicted, least recently used first: at once when
  // nothing of theirs is in memory, else once their last spill is written
  for (auto& [used, sp] : lru) {
    if (!over() && count <= budget_.max_shapes) break;
    auto it = planned.find(sp.get());
    long jobs_of = it == planned.end() ? 0 : static_cast<long>(it->second.jobs);
    if (!evictable_locked(sp, now_us, jobs_of)) continue;
    if (jobs_of == 0 && sp->log.empty()) {
      evict_locked(sp);  // its charge goes at once (not pending)
    } else {
      spill_rest(sp);
      Planned& p = planned[sp.get()];
      SpillJob& last = jobs[p.last_job];
      last.evict = true;
      last.other_refs = static_cast<long>(p.jobs) - 1;
      pending += sp->held_bytes - std::min(sp->held_bytes, p.bytes);
    }
    --count;
  }
}

void ShapeStore::evict_locked(const std::shared_ptr<Shape>& sp) {
  Shape& s = *sp;
  drop_evicted_locked(s.handle);  // (none expected)
  EvictedShape e;
  e.shape_id = s.shape_id;
  e.start_tick = s.start_tick;
  e.tick = last_tick_;  // every batch up to here is in its log
  e.dir_gen = s.dir_gen;
  e.spilled = s.spilled;
  e.chunk_ends = s.chunk_ends;
  e.log_base = s.log_base;
  e.open_chunk_bytes = s.open_chunk_bytes;
  e.bytes = cost::kStub + 2 * s.handle.size() + e.chunk_ends.size() * sizeof(size_t);
  e.bytes += e.spilled.size() * sizeof(SpilledChunk);
  e.seq = ++evict_seq_;
  grown_.erase(&s);
  spill_due_.erase(&s);
  auto it = active_.find(s.def.key);
  if (it != active_.end() && it->second == sp) {
    active_.erase(it);
    drop_aliases_locked(sp->def.key);
  }
  by_handle_.erase(s.handle);
  if (auto v = by_relid_.find(s.def.table->relid); v != by_relid_.end()) {
    auto e = v->second.find(&s);
    if (e != v->second.end() && e->second == sp) v->second.erase(e);
  }
  auto& w = whole_by_relid_[s.def.table->relid];
  w.erase(std::remove(w.begin(), w.end(), sp), w.end());
  auto it2 = by_shape_id_.find(s.shape_id);
  if (it2 != by_shape_id_.end() && it2->second == sp) by_shape_id_.erase(it2);
  release_locked(s);
  held_ += e.bytes;
  evicted_bytes_ += e.bytes;
  evicted_order_.emplace_back(e.seq, s.handle);
  evicted_.emplace(s.handle, std::move(e));
  ++evictions_;
  trim_evicted_locked();
}

void ShapeStore::drop_evicted_locked(const std::string& handle) {
  auto it = evicted_.find(handle);
  if (it == evicted_.end()) return;
  EvictedShape& e = it->second;
  held_ -= std::min(held_, e.bytes);
  evicted_bytes_ -= std::min(evicted_bytes_, e.bytes);
  forget_chunks_locked(e.spilled);
  if (!spill_dir_.empty()) dead_dirs_.push_back(spill_dir_ + "/" + dir_name(handle, e.dir_gen));
  evicted_.erase(it);
}

void ShapeStore::trim_evicted_locked() {
  // Stubs take at most an eighth of the budget: past that the oldest go (a
  // shape without one is rebuilt from its snapshot and the change log).
  size_t cap = budget_.max_stub_bytes();
  auto live = [&](const std::pair<uint64_t, std::string>& o) {
    auto it = evicted_.find(o.second);
    return it != evicted_.end() && it->second.seq == o.first;
  };
  while (!evicted_order_.empty() && (evicted_bytes_ > cap || !live(evicted_order_.front()))) {
    auto o = std::move(evicted_order_.front());
    evicted_order_.pop_front();
    if (live(o)) drop_evicted_locked(o.second);
  }
  if (evicted_order_.size() > 2 * evicted_.size() + 64) {  // stale entries of reloaded shapes
    std::deque<std::pair<uint64_t, std::string>> kept;
    for (auto& o : evicted_order_)
      if (live(o)) kept.push_back(std::move(o));
    evicted_order_.swap(kept);
  }
}

bool ShapeStore::commit_spill_locked(const SpillJob& job) {
  Shape& sh = *job.shape;
  if (sh.invalid || !sh.counted || sh.log_base != job.first_index || sh.entry_count() <= job.end_index ||
      job.entries.empty())
    return false;
  size_t n = job.end_index - job.first_index + 1;
  size_t freed = 0;
  for (size_t k = 0; k < n; ++k) {
    size_t b = sh.log.front().json->size();
    sh.log_memory_bytes -= b;
    log_memory_ -= std::min(log_memory_, b);
    size_t c = entry_cost(*sh.log.front().json);
    uncharge(sh, c);
    freed += c;
    sh.log.pop_front();
  }
  if (job.pressure) {
    ++pressure_spills_;
    pressure_spilled_bytes_ += freed;
  }
  sh.spilled.push_back(
      {job.entries.front().offset, job.entries.back().offset, job.end_index, job.file_bytes, job.offset, job.pack});
  if (job.pack) ++packs_[job.pack].chunks;
  charge(sh, sizeof(SpilledChunk));
  sh.log_base = job.end_index + 1;
  disk_bytes_ += job.file_bytes;
  // the last spill of a shape chosen for eviction: evicted now, if it is still idle
  if (job.evict && sh.log.empty()) {
    int64_t now = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count();
    if (evictable_locked(job.shape, now, job.other_refs)) evict_locked(job.shape);
  }
  return true;
}

void ShapeStore::forget_chunks_locked(const std::vector<SpilledChunk>& chunks) {
  for (auto& c : chunks) {
    disk_bytes_ -= std::min(disk_bytes_, c.bytes);
    if (c.pack) unref_pack_locked(c.pack);
  }
}

void ShapeStore::unref_pack_locked(uint32_t pack) {
  auto it = packs_.find(pack);
  if (it == packs_.end()) return;
  if (it->second.chunks) --it->second.chunks;
  if (it->second.chunks == 0 && it->second.sealed) {
    dead_dirs_.push_back(pack_path(pack));
    packs_.erase(it);
  }
}

bool ShapeStore::repoint_chunk(const Shape& s, const SpilledChunk& was, size_t file_bytes) {
  std::lock_guard lk(mu_);
  auto sp = by_handle_locked(s.handle);
  if (!sp || sp.get() != &s || s.invalid) return false;
  for (auto& c : sp->spilled) {
    if (c.end_index != was.end_index || c.pack != was.pack || c.offset != was.offset || !c.pack) continue;
    disk_bytes_ -= std::min(disk_bytes_, c.bytes);
    disk_bytes_ += file_bytes;
    uint32_t pack = c.pack;
    c.pack = 0;
    c.offset = 0;
    c.bytes = file_bytes;
    unref_pack_locked(pack);
    return true;
  }
  return false;
}

std::string ShapeStore::pack_path(uint32_t pack) const { return spill_dir_ + "/packs/" + std::to_string(pack); }

std::vector<std::string> ShapeStore::take_dead_dirs_locked() {
  std::vector<std::string> out;
  out.swap(dead_dirs_);
  return out;
}

int64_t ShapeStore::commit_time_locked(LogOffset first) const {
  if (tick_times_.empty()) return 0;
  uint64_t tick = first.tx >> 32;
  auto it = std::lower_bound(tick_times_.begin(), tick_times_.end(), tick,
                             [](const std::pair<uint64_t, int64_t>& e, uint64_t t) { return e.first < t; });
  if (it == tick_times_.end()) return tick_times_.back().second;
  return it->second;  // its tick, or (older than every tick remembered) the oldest
}


std::vector<LogEntry> ShapeStore::replay_locked(const Shape& s, const std::vector<Batch>& batches) {
  Shape scratch;
  scratch.def = s.def;
  scratch.handle = s.handle;
  scratch.shape_id = s.shape_id;
  scratch.filtered = s.filtered;
  scratch.where = s.where;
  scratch.schema_header = s.schema_header;
  scratch.key_prefix = s.key_prefix;
  scratch.relation = s.relation;
  scratch.snap = s.snap;
  scratch.start_tick = s.start_tick;
  std::vector<std::pair<std::string, std::string>> inv;
  for (auto& b : batches) apply_batch(b, &scratch, inv);
  return {scratch.log.begin(), scratch.log.end()};
}

namespace {

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}
void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}
bool get_u64(std::string_view& in, uint64_t& v) {
  if (in.size() < 8) return false;
  v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  in.remove_prefix(8);
  return true;
}
bool get_u32(std::string_view& in, uint32_t& v) {
  if (in.size() < 4) return false;
  v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  in.remove_prefix(4);
  return true;
}
constexpr std::string_view kSegMagic = "SSEG1\n";
constexpr std::string_view kSegEnd = "END\n";

}  // namespace

void append_segment(std::string& buf, const std::vector<LogEntry>& entries) {
  buf += kSegMagic;
  for (auto& e : entries) {
    put_u64(buf, e.offset.tx);
    put_u64(buf, e.offset.op);
    put_u32(buf, static_cast<uint32_t>(e.json->size()));
    buf += *e.json;
  }
  put_u32(buf, static_cast<uint32_t>(entries.size()));
  buf += kSegEnd;
}

bool write_segment(const std::string& path, const std::vector<LogEntry>& entries, std::string& error) {
  std::string buf;
  append_segment(buf, entries);
  return write_file_whole(path, buf, error);
}

bool write_file_whole(const std::string& path, const std::string& buf, std::string& error) {
  // write a temporary file and rename it: a reader never sees half a segment
  // (a temporary name of its own: two reads rebuilding one lost chunk may write it at once)
  static std::atomic<uint64_t> seq{0};
  std::string tmp = path + ".tmp" + std::to_string(seq.fetch_add(1, std::memory_order_relaxed));
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) {
    error = "cannot create " + tmp + ": " + std::strerror(errno);
    return false;
  }
  bool ok = std::fwrite(buf.data(), 1, buf.size(), f) == buf.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    error = "cannot write " + path + ": " + std::strerror(errno);
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

void ShapeStore::write_spills(std::vector<SpillJob>& jobs) {
  std::error_code ec;
  std::string pack_bytes;
  {  // one allocation for the pack (it is tens of MB under a large budget)
    size_t total = 0;
    for (auto& j : jobs)
      if (j.pressure) {
        total += kSegMagic.size() + 4 + kSegEnd.size();
        for (auto& e : j.entries) total += 20 + e.json->size();
      }
    pack_bytes.reserve(total);
  }
  std::vector<SpillJob*> packed;
  for (auto& j : jobs) {
    std::string err;
    if (j.pressure) {
      j.offset = pack_bytes.size();
      append_segment(pack_bytes, j.entries);
      j.file_bytes = pack_bytes.size() - j.offset;
      packed.push_back(&j);
      continue;
    }
    std::filesystem::create_directories(std::filesystem::path(j.path).parent_path(), ec);
    if (!write_segment(j.path, j.entries, err)) {
      log_warn("shape ", j.shape->handle, ": keeping its log chunk in memory: ", err);
      continue;
    }
    auto size = std::filesystem::file_size(j.path, ec);
    j.file_bytes = ec ? 0 : static_cast<size_t>(size);
    if (!commit_spill(j)) std::filesystem::remove(j.path, ec);
  }
  if (packed.empty()) return;
  uint32_t id;
  {
    std::lock_guard lk(mu_);
    id = next_pack_++;
    packs_[id];
  }
  std::string path = pack_path(id), err;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  bool written = write_file_whole(path, pack_bytes, err);
  if (!written) log_warn("keeping ", packed.size(), " shapes' logs in memory: ", err);
  for (SpillJob* j : packed) {
    if (!written) break;
    j->pack = id;
    j->path = path;
    commit_spill(*j);
  }
  std::lock_guard lk(mu_);
  auto it = packs_.find(id);
  it->second.sealed = true;
  if (it->second.chunks == 0) {
    packs_.erase(it);
    dead_dirs_.push_back(path);
  }
}

bool prepare_segment_dir(const std::string& data_dir, std::string& shapes_dir, std::string& error) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir(data_dir);
  fs::path shapes = dir / "shapes";
  fs::path marker = dir / ".shapesyncd";
  fs::create_directories(dir, ec);
  if (ec) {
    error = "cannot create " + dir.string() + ": " + ec.message();
    return false;
  }
  if (fs::exists(shapes, ec) && !fs::exists(marker, ec)) {
    error = shapes.string() + " exists but was not made by shapesyncd (no " + marker.string() +
            "): refusing to clear it; choose another --data-dir";
    return false;
  }
  fs::remove_all(shapes, ec);
  if (ec) {
    error = "cannot clear " + shapes.string() + ": " + ec.message();
    return false;
  }
  fs::create_directories(shapes, ec);
  if (ec) {
    error = "cannot create " + shapes.string() + ": " + ec.message();
    return false;
  }
  FILE* f = std::fopen(marker.c_str(), "w");
  if (!f || std::fputs("shapesyncd segment cache: the shapes/ directory is cleared at every start\n", f) < 0) {
    if (f) std::fclose(f);
    error = "cannot write " + marker.string() + ": " + std::strerror(errno);
    return false;
  }
  std::fclose(f);
  shapes_dir = shapes.string();
  return true;
}

bool read_segment(const SegmentFile& c, LogOffset after, std::vector<std::shared_ptr<const std::string>>& out) {
  std::string buf;
  if (c.pack) {  // its record in a pack file
    int fd = ::open(c.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    buf.resize(c.bytes);
    ssize_t got = ::pread(fd, buf.data(), c.bytes, static_cast<off_t>(c.offset));
    ::close(fd);
    if (got != static_cast<ssize_t>(c.bytes)) return false;
  } else {
    FILE* f = std::fopen(c.path.c_str(), "rb");
    if (!f) return false;
    char tmp[65536];
    size_t n;
    while ((n = std::fread(tmp, 1, sizeof(tmp), f)) > 0) buf.append(tmp, n);
    bool err = std::ferror(f) != 0;
    std::fclose(f);
    if (err) return false;
  }
  std::string_view in(buf);
  if (in.substr(0, kSegMagic.size()) != kSegMagic) return false;
  in.remove_prefix(kSegMagic.size());
  std::vector<std::shared_ptr<const std::string>> got;
  LogOffset first{}, last{};
  uint32_t count = 0;
  while (in.size() > 4 + kSegEnd.size()) {
    uint64_t tx, op;
    uint32_t len;
    if (!get_u64(in, tx) || !get_u64(in, op) || !get_u32(in, len) || in.size() < len) return false;
    LogOffset o{tx, op};
    if (count == 0) first = o;
    else if (!(last < o)) return false;
    last = o;
    ++count;
    if (after < o) got.push_back(std::make_shared<const std::string>(in.substr(0, len)));
    in.remove_prefix(len);
  }
  uint32_t stored;
  if (!get_u32(in, stored) || stored != count || in != kSegEnd) return false;
  if (count == 0 || !(first == c.first) || !(last == c.last)) return false;
  for (auto& g : got) out.push_back(std::move(g));
  return true;
}

namespace {

RowValues by_column(const TableInfo& t, const RowValues& by_attnum, bool& ok) {
  RowValues r(t.columns.size());
  for (size_t i = 0; i < t.columns.size(); ++i) {
    size_t a = static_cast<size_t>(t.columns[i].attnum - 1);
    if (a >= by_attnum.size()) {
      ok = false;
      return r;
    }
    r[i] = by_attnum[a];
  }
  return r;
}

// The values of a decoded row (indexed by attnum - 1) indexed like t.columns:
// the decoded row itself when no column was ever dropped before the last
// (column i is attnum i + 1: nothing to copy), else a copy in `scratch`.
const RowValues* columns_of(const TableInfo& t, const RowValues& by_attnum, RowValues& scratch, bool& ok) {
  bool same = by_attnum.size() >= t.columns.size();
  for (size_t i = 0; same && i < t.columns.size(); ++i) same = t.columns[i].attnum == static_cast<int>(i) + 1;
  if (same) return &by_attnum;
  scratch = by_column(t, by_attnum, ok);
  return &scratch;
}

struct Pending {
  std::string key;
  std::string value;
  std::optional<std::string> old_value;
  std::string_view op;
  uint64_t op_position;
  uint64_t version = 0;  // inserts and updates: the new row's
  std::optional<std::string> key_change_to, key_change_from;
};

}  // namespace

std::vector<std::shared_ptr<Shape>> ShapeStore::shapes_of(uint32_t relid) const {
  std::vector<std::shared_ptr<Shape>> out;
  auto it = by_relid_.find(relid);
  if (it == by_relid_.end()) return out;
  out.reserve(it->second.size());
  for (auto& [p, sp] : it->second) out.push_back(sp);
  // in creation order (the order applies do not depend on hashing)
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a->dir_gen < b->dir_gen; });
  return out;
}

namespace {

// Builds the messages of one change for one shape, given what the change is for it.
void emit(const Shape& s, const Change& c, ShapeOp op, uint64_t pos, std::vector<Pending>& out) {
  const TableInfo& t = *s.def.table;
  const auto& sel = s.def.selected;
  bool full = s.def.replica == Replica::kFull;
  bool ok = !c.undecodable;
  static const RowValues kNone;
  RowValues nv_copy, ov_copy;
  const RowValues* nvp = &kNone;
  const RowValues* ovp = &kNone;
  if (ok && c.new_values) nvp = columns_of(t, *c.new_values, nv_copy, ok);
  if (ok && c.old_values) ovp = columns_of(t, *c.old_values, ov_copy, ok);
  const RowValues& nv = *nvp;
  const RowValues& ov = *ovp;
  Pending p;
  p.op_position = pos;
  p.version = c.version;
  if (op == ShapeOp::kInsert) {
    p.op = "insert";
    p.key = row_key(*s.key_prefix, t, nv);
    append_value_object(p.value, t, nv, sel);
    out.push_back(std::move(p));
  } else if (op == ShapeOp::kDelete) {
    p.op = "delete";
    p.key = row_key(*s.key_prefix, t, ov);
    append_value_object(p.value, t, ov, full ? sel : t.pk);
    out.push_back(std::move(p));
  } else if (op == ShapeOp::kUpdate) {
    std::string old_key = row_key(*s.key_prefix, t, ov);
    std::string new_key = row_key(*s.key_prefix, t, nv);
    if (old_key != new_key) {
      Pending d;
      d.op = "delete";
      d.op_position = pos;
      d.key = old_key;
      append_value_object(d.value, t, ov, full ? sel : t.pk);
      d.key_change_to = new_key;
      Pending ins;
      ins.op = "insert";
      ins.op_position = pos + 1;
      ins.key = new_key;
      append_value_object(ins.value, t, nv, sel);
      ins.key_change_from = old_key;
      ins.version = c.version;
      out.push_back(std::move(d));
      out.push_back(std::move(ins));
      return;
    }
    std::vector<size_t> changed;
    for (size_t idx : sel)
      if (nv[idx] != ov[idx]) changed.push_back(idx);
    if (changed.empty()) return;
    p.op = "update";
    p.key = new_key;
    if (full) {
      append_value_object(p.value, t, nv, sel);
      std::string old;
      append_value_object(old, t, ov, changed);
      p.old_value = std::move(old);
    } else {
      std::vector<size_t> cols = t.pk;
      for (size_t idx : changed)
        if (t.columns[idx].pk_index < 0) cols.push_back(idx);
      std::sort(cols.begin(), cols.end());
      append_value_object(p.value, t, nv, cols);
    }
    out.push_back(std::move(p));
  }
}

bool decodable_for(const Shape& s, const Change& c) {
  if (c.undecodable) return false;
  const TableInfo& t = *s.def.table;
  for (const auto* v : {&c.new_values, &c.old_values}) {
    if (!*v) continue;
    for (auto& col : t.columns)
      if (static_cast<size_t>(col.attnum - 1) >= (*v)->size()) return false;
  }
  return true;
}

}  // namespace

void ShapeStore::apply_batch(const Batch& b, Shape* only,
                             std::vector<std::pair<std::string, std::string>>& invalidated) {
  auto eligible = [&](const Shape& s, const Tx& tx) {
    return !s.invalid && b.tick_id > s.start_tick && !s.snap.visible(tx.xid);
  };
  auto kill = [&](Shape& s, const std::string& reason) {
    if (s.invalid) return;
    invalidated.emplace_back(s.handle, reason);
    if (only) {
      s.invalid_reason = reason;
      s.invalid = true;  // finish_create turns this into a proper invalidation
      return;
    }
    auto sp = by_handle_locked(s.handle);
    if (sp) invalidate_locked(sp, reason);
  };
  // Per transaction: the messages of each shape, in log order.
  std::vector<Shape*> order;
  std::unordered_map<Shape*, std::vector<Pending>> out;
  for (const Tx& tx : b.txs) {
    order.clear();
    out.clear();
    auto target = [&](Shape& s, const Change& c, ShapeOp op, uint64_t pos) {
      if (!eligible(s, tx)) return;
      if (!decodable_for(s, c)) {
        kill(s, "schema changed");
        return;
      }
      auto [it, inserted] = out.try_emplace(&s);
      if (inserted) order.push_back(&s);
      emit(s, c, op, pos, it->second);
    };
    for (size_t i = 0; i < tx.changes.size(); ++i) {
      const Change& c = tx.changes[i];
      uint64_t pos = 2 * i;
      if (c.op == 'T' || c.op == 'S') {
        std::string reason = c.op == 'T' ? "truncate" : (c.error.empty() ? "schema changed" : c.error);
        if (only) {
          if (only->def.table->relid == c.relid && eligible(*only, tx)) kill(*only, reason);
        } else {
          for (auto& s : shapes_of(c.relid))
            if (eligible(*s, tx)) kill(*s, reason);
        }
        continue;
      }
      if (c.op == 'X') {
        for (int32_t so : c.shape_ops) {
          int32_t id = so >> 2;
          if (only) {
            if (only->filtered && only->shape_id == id && eligible(*only, tx)) kill(*only, c.error);
          } else if (auto it = by_shape_id_.find(id); it != by_shape_id_.end() && eligible(*it->second, tx)) {
            kill(*it->second, c.error);
          }
        }
        continue;
      }
      ShapeOp whole = c.op == 'I' ? ShapeOp::kInsert : c.op == 'U' ? ShapeOp::kUpdate : ShapeOp::kDelete;
      if (only) {
        if (only->def.table->relid != c.relid) continue;
        if (!only->filtered) {
          target(*only, c, whole, pos);
        } else {
          for (int32_t so : c.shape_ops)
            if ((so >> 2) == only->shape_id) target(*only, c, static_cast<ShapeOp>(so & 3), pos);
        }
        continue;
      }
      if (auto w = whole_by_relid_.find(c.relid); w != whole_by_relid_.end())
        for (auto& s : w->second) target(*s, c, whole, pos);
      for (int32_t so : c.shape_ops) {
        auto it = by_shape_id_.find(so >> 2);
        if (it != by_shape_id_.end() && it->second->def.table->relid == c.relid)
          target(*it->second, c, static_cast<ShapeOp>(so & 3), pos);
      }
    }
    uint32_t xid32 = static_cast<uint32_t>(tx.xid & 0xffffffffULL);
    for (Shape* s : order) {
      if (s->invalid) continue;
      auto& msgs = out[s];
      for (size_t k = 0; k < msgs.size(); ++k) {
        Pending& p = msgs[k];
        ChangeHeaders h;
        h.operation = p.op;
        h.relation = *s->relation;
        h.txid = xid32;
        h.lsn = tx.position;
        h.op_position = p.op_position;
        h.version = p.op == "delete" ? 0 : p.version;
        h.last = k + 1 == msgs.size();
        h.key_change_to = p.key_change_to;
        h.key_change_from = p.key_change_from;
        append(*s, LogOffset{tx.position, p.op_position},
               change_message(p.key, p.value, p.old_value ? &*p.old_value : nullptr, h));
      }
      if (!only && !msgs.empty()) {
        wake(*s);
        grown_.insert(s);
      }
    }
  }
}

std::vector<std::pair<std::string, std::string>> ShapeStore::apply_locked(Batch batch) {
  std::vector<std::pair<std::string, std::string>> invalidated;
  apply_batch(batch, nullptr, invalidated);
  last_tick_ = std::max(last_tick_, batch.tick_id);
  for (auto& tx : batch.txs) applied_changes_ += tx.changes.size();
  if (batch.tick_time_us && !batch.txs.empty() && (tick_times_.empty() || tick_times_.back().first < batch.tick_id)) {
    tick_times_.emplace_back(batch.tick_id, batch.tick_time_us);
    if (tick_times_.size() > kTickTimes) tick_times_.pop_front();
  }
  if (!batch.txs.empty()) {
    size_t bytes = batch.cost ? batch.cost : batch_cost(batch);
    window_.push_back(std::move(batch));
    window_sizes_.push_back(bytes);
    window_bytes_ += bytes;
  }
  return invalidated;
}

void ShapeStore::trim_window_locked(size_t max_batches, size_t max_bytes) {
  while (!window_.empty() && (window_.size() > max_batches || window_bytes_ > max_bytes)) {
    window_floor_ = window_.front().tick_id;
    window_.pop_front();
    window_bytes_ -= window_sizes_.front();
    window_sizes_.pop_front();
  }
}

std::optional<LogOffset> ShapeStore::log_after(const Shape& s, const RequestOffset& ro) {
  if (ro.kind != RequestOffset::Kind::kAt) return std::nullopt;
  if (!ro.at.is_snapshot_region()) return ro.at;
  if (ro.at.op + 1 < s.snapshot_chunks.size()) return std::nullopt;  // a snapshot chunk
  return LogOffset::snapshot_end();
}

bool ShapeStore::reads_segment(const Shape& s, const RequestOffset& ro) {
  if (s.spilled.empty()) return false;
  auto after = log_after(s, ro);
  return after && *after < s.spilled.back().last;
}

LogRead ShapeStore::read_locked(const Shape& s, const RequestOffset& ro) const {
  LogRead r;
  r.global_last_seen = global_position_locked();
  LogOffset after;
  if (ro.kind == RequestOffset::Kind::kBeforeAll) {
    r.snapshot_chunk = s.snapshot_chunks.front();
    r.end = LogOffset{0, 0};
    return r;
  }
  if (ro.kind == RequestOffset::Kind::kNow) {
    r.end = s.last_offset();
    r.up_to_date = true;
    return r;
  }
  auto log_from = log_after(s, ro);
  if (!log_from) {
    r.snapshot_chunk = s.snapshot_chunks[ro.at.op + 1];
    r.end = LogOffset{0, ro.at.op + 1};
    return r;
  }
  after = *log_from;
  LogOffset last = s.last_offset();
  // the next entry is in a spilled chunk: the caller reads its file
  if (reads_segment(s, ro)) {
    auto sc = std::upper_bound(s.spilled.begin(), s.spilled.end(), after,
                               [](const LogOffset& o, const SpilledChunk& c) { return o < c.last; });
    r.segment = SegmentFile{*sc, sc->pack ? pack_path(sc->pack) : segment_path(s, sc->end_index)};
    r.segment_after = after;
    r.first = after < sc->first ? sc->first : after;
    r.end = sc->last;
    r.global_last_seen = std::max(r.global_last_seen, r.end.tx);
    return r;
  }
  auto it = std::upper_bound(s.log.begin(), s.log.end(), after,
                             [](const LogOffset& o, const LogEntry& e) { return o < e.offset; });
  if (it == s.log.end()) {
    if (after > last && after.tx > r.global_last_seen) {
      r.out_of_bounds = true;
      return r;
    }
    r.end = after;
    r.up_to_date = true;
    return r;
  }
  size_t i = s.log_base + static_cast<size_t>(it - s.log.begin());  // global indexes
  auto ce = std::lower_bound(s.chunk_ends.begin(), s.chunk_ends.end(), i);
  size_t j = ce == s.chunk_ends.end() ? s.entry_count() - 1 : *ce;
  r.entries.reserve(j - i + 1);
  for (size_t k = i; k <= j; ++k) r.entries.push_back(s.log[k - s.log_base].json);
  r.first = s.log[i - s.log_base].offset;
  r.end = s.log[j - s.log_base].offset;
  r.up_to_date = j + 1 == s.entry_count();
  r.global_last_seen = std::max(r.global_last_seen, r.end.tx);
  return r;
}

template <class Format>
LogRead ShapeStore::read_cached(const Shape& s, const RequestOffset& ro, Shape::LiveCache& c, Format format) const {
  bool cacheable = ro.kind == RequestOffset::Kind::kAt && !ro.at.is_snapshot_region();
  if (cacheable && c.body && c.after == ro.at && c.log_size == s.entry_count() && c.global == last_tick_) {
    LogRead r;
    r.built = c.body;
    r.end = c.end;
    r.commit_us = c.commit_us;
    r.up_to_date = c.up_to_date;
    r.global_last_seen = std::max(global_position_locked(), c.end.tx);
    return r;
  }
  LogRead r = read_locked(s, ro);
  if (r.has_data() && !r.snapshot_chunk) r.commit_us = commit_time_locked(r.first);
  if (!cacheable || r.out_of_bounds || !r.has_data() || r.segment) return r;  // a segment: the caller reads it
  r.built = std::make_shared<const std::string>(format(r));
  r.entries.clear();
  c.after = ro.at;
  c.log_size = s.entry_count();
  c.global = last_tick_;
  c.end = r.end;
  c.up_to_date = r.up_to_date;
  c.commit_us = r.commit_us;
  if (c.body) uncharge(s, c.body->size() + cost::kChunk);
  c.body = r.built;
  charge(s, c.body->size() + cost::kChunk);
  return r;
}

LogRead ShapeStore::read_live_locked(const Shape& s, const RequestOffset& ro) const {
  return read_cached(s, ro, s.live_cache, [](const LogRead& r) { return r.body(); });
}

LogRead ShapeStore::read_events_locked(const Shape& s, const RequestOffset& ro) const {
  return read_cached(s, ro, s.event_cache, [](const LogRead& r) { return r.events(); });
}

}  // namespace shapesync

// ---------------------------------------------------------------------------
// The public face: each method takes the lock, then does its work.

namespace shapesync {

std::shared_ptr<Shape> ShapeStore::active(const std::string& def_key) const {
  std::lock_guard lk(mu_);
  return active_locked(def_key);
}

std::shared_ptr<Shape> ShapeStore::by_handle(const std::string& handle) const {
  std::lock_guard lk(mu_);
  return by_handle_locked(handle);
}

void ShapeStore::drop_aliases_locked(const std::string& def_key) {
  auto o = aliases_of_.find(def_key);
  if (o == aliases_of_.end()) return;
  for (auto& rk : o->second) {
    auto a = aliases_.find(rk);
    if (a == aliases_.end() || a->second != def_key) continue;
    held_ -= std::min(held_, rk.size() + def_key.size() + cost::kAlias);
    aliases_.erase(a);
  }
  aliases_of_.erase(o);
}

std::shared_ptr<Shape> ShapeStore::resolve(const std::string& request_key) const {
  std::lock_guard lk(mu_);
  auto a = aliases_.find(request_key);
  return a == aliases_.end() ? nullptr : active_locked(a->second);
}

std::shared_ptr<Shape> ShapeStore::begin_create(ShapeDef def, const std::string& request_key, std::string handle,
                                                int32_t shape_id, std::string where, bool& created) {
  std::lock_guard lk(mu_);
  // one lock: concurrent registrations of one definition make one shape
  if (auto [a, inserted] = aliases_.try_emplace(request_key, def.key); inserted) {
    held_ += request_key.size() + def.key.size() + cost::kAlias;
    aliases_of_[def.key].push_back(request_key);
  } else if (a->second != def.key) {
    if (auto o = aliases_of_.find(a->second); o != aliases_of_.end()) {
      std::erase(o->second, request_key);
      if (o->second.empty()) aliases_of_.erase(o);
    }
    held_ -= std::min(held_, a->second.size());
    held_ += def.key.size();
    a->second = def.key;
    aliases_of_[def.key].push_back(request_key);
  }
  created = false;
  if (auto existing = active_locked(def.key)) return existing;
  auto s = begin_create_locked(std::move(def));
  s->handle = std::move(handle);
  s->shape_id = shape_id;
  s->filtered = !where.empty();
  s->where = std::move(where);
  charge(*s, s->handle.size() + s->where.size());
  created = true;
  return s;
}

std::shared_ptr<Shape> ShapeStore::begin_create(ShapeDef def) {
  std::lock_guard lk(mu_);
  return begin_create_locked(std::move(def));
}

ShapeStatus ShapeStore::status(const Shape& s) const {
  std::lock_guard lk(mu_);
  return {s.ready, s.invalid, s.failed, !s.snapshot_chunks.empty(), s.build_error, s.config_failure};
}

void ShapeStore::set_snapshot(Shape& s, const PgSnapshot& snap, uint64_t start_tick,
                              const std::vector<std::shared_ptr<const std::string>>* chunks) {
  std::lock_guard lk(mu_);
  s.snap = snap;
  s.start_tick = start_tick;
  if (chunks) {
    for (auto& c : s.snapshot_chunks) uncharge(s, c->size() + cost::kChunk);
    s.snapshot_chunks = *chunks;
    for (auto& c : s.snapshot_chunks) charge(s, c->size() + cost::kChunk);
  }
}

void ShapeStore::set_budget(MemoryBudget b) {
  std::lock_guard lk(mu_);
  budget_ = b;
}

MemoryBudget ShapeStore::budget() const {
  std::lock_guard lk(mu_);
  return budget_;
}

uint64_t ShapeStore::restore_evicted(const std::shared_ptr<Shape>& s) {
  std::lock_guard lk(mu_);
  auto it = evicted_.find(s->handle);
  if (it == evicted_.end() || s->ready || !s->log.empty() || !s->spilled.empty()) return 0;
  EvictedShape& e = it->second;
  if (e.shape_id != s->shape_id || e.start_tick != s->start_tick) {  // not the same snapshot: start afresh
    drop_evicted_locked(s->handle);
    return 0;
  }
  s->spilled = std::move(e.spilled);
  s->chunk_ends = std::move(e.chunk_ends);
  s->log_base = e.log_base;
  s->open_chunk_bytes = e.open_chunk_bytes;
  s->dir_gen = e.dir_gen;
  s->resume_tick = e.tick;
  charge(*s, s->spilled.size() * sizeof(SpilledChunk));
  held_ -= std::min(held_, e.bytes);
  evicted_bytes_ -= std::min(evicted_bytes_, e.bytes);
  evicted_.erase(it);  // its files now belong to the shape (disk_bytes_ unchanged)
  ++reloads_;
  return s->resume_tick;
}

void ShapeStore::drop_evicted(const std::string& handle) {
  std::lock_guard lk(mu_);
  drop_evicted_locked(handle);
}

void ShapeStore::publish_snapshot_chunk(const std::shared_ptr<Shape>& s, std::shared_ptr<const std::string> chunk) {
  std::lock_guard lk(mu_);
  publish_snapshot_chunk_locked(s, std::move(chunk));
}

bool ShapeStore::finish_create(const std::shared_ptr<Shape>& s, const std::vector<Batch>& extra_batches,
                               uint64_t extra_upto) {
  std::lock_guard lk(mu_);
  return finish_create_locked(s, extra_batches, extra_upto);
}

std::optional<uint64_t> ShapeStore::finish_or_floor(const std::shared_ptr<Shape>& s, uint64_t start_tick) {
  std::lock_guard lk(mu_);
  if (start_tick >= window_floor_ || last_tick_ <= start_tick) {
    finish_create_locked(s, {}, 0);
    return std::nullopt;
  }
  return window_floor_;
}

bool ShapeStore::catch_up(const std::shared_ptr<Shape>& s, const std::vector<Batch>& part, uint64_t after,
                          uint64_t upto) {
  std::lock_guard lk(mu_);
  if (s->ready || s->invalid || s->failed) return false;
  uint64_t from = std::max(s->start_tick, s->resume_tick);
  if (from >= upto) return true;  // the part is behind it
  if (from < after) throw std::logic_error("catch_up: the part starts after the shape's position (changes would be lost)");
  std::vector<std::pair<std::string, std::string>> inv;
  for (auto& b : part)
    if (b.tick_id > from && b.tick_id <= upto) apply_batch(b, s.get(), inv);
  if (!inv.empty()) {  // as in finish_create_locked: rotated while it was being created
    s->invalid = false;
    invalidate_locked(s, inv.front().second);
    return false;
  }
  s->resume_tick = upto;
  return true;
}

bool ShapeStore::finish_with(const std::shared_ptr<Shape>& s, const std::vector<Batch>& extra, uint64_t upto) {
  std::lock_guard lk(mu_);
  if (window_floor_ > upto) return false;
  finish_create_locked(s, extra, upto);
  return true;
}

void ShapeStore::fail_create(const std::shared_ptr<Shape>& s, std::string build_error,
                             std::shared_ptr<const PgError> config_failure) {
  std::lock_guard lk(mu_);
  if (s->ready || s->invalid) return;
  if (!build_error.empty()) s->build_error = std::move(build_error);
  if (config_failure) s->config_failure = std::move(config_failure);
  fail_create_locked(s);
}

void ShapeStore::invalidate(const std::shared_ptr<Shape>& s, const std::string& reason) {
  std::lock_guard lk(mu_);
  invalidate_locked(s, reason);
}

uint64_t ShapeStore::restart_from(uint64_t t, const std::string& reason) {
  std::lock_guard lk(mu_);
  uint64_t was = last_tick_;
  restart_from_locked(t, reason);
  return was;
}

std::vector<std::pair<std::string, std::string>> ShapeStore::apply(Batch batch) {
  std::lock_guard lk(mu_);
  return apply_locked(std::move(batch));
}

std::vector<std::pair<std::string, std::string>> ShapeStore::apply_all(std::vector<Batch> batches, uint64_t upto,
                                                                       size_t max_batches, size_t max_bytes) {
  std::lock_guard lk(mu_);
  std::vector<std::pair<std::string, std::string>> invalidated;
  for (auto& b : batches) {
    auto inv = apply_locked(std::move(b));
    invalidated.insert(invalidated.end(), inv.begin(), inv.end());
  }
  last_tick_ = std::max(last_tick_, upto);
  if (window_pressed_until_us_) {
    int64_t now = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count();
    if (now < window_pressed_until_us_) max_bytes = std::min(max_bytes, budget_.max_bytes / 32);
    else window_pressed_until_us_ = 0;
  }
  trim_window_locked(max_batches, max_bytes);
  return invalidated;
}

uint64_t ShapeStore::last_tick() const {
  std::lock_guard lk(mu_);
  return last_tick_;
}

void ShapeStore::set_last_tick(uint64_t t) {
  std::lock_guard lk(mu_);
  last_tick_ = t;
  window_floor_ = t;
}

void ShapeStore::advance(uint64_t t) {
  std::lock_guard lk(mu_);
  last_tick_ = std::max(last_tick_, t);
}

uint64_t ShapeStore::window_floor() const {
  std::lock_guard lk(mu_);
  return window_floor_;
}

void ShapeStore::trim_window(size_t max_batches, size_t max_bytes) {
  std::lock_guard lk(mu_);
  trim_window_locked(max_batches, max_bytes);
}

StoreStats ShapeStore::stats() const {
  std::lock_guard lk(mu_);
  StoreStats st;
  st.shapes = by_handle_.size();
  st.waiting = waiting_;
  st.log_memory_bytes = log_memory_;
  st.held_bytes = charged_total_locked();
  st.max_memory = budget_.max_bytes;
  st.evicted_shapes = evicted_.size();
  st.pressure_spills = pressure_spills_;
  st.pressure_spilled_bytes = pressure_spilled_bytes_;
  st.evictions = evictions_;
  st.reloads = reloads_;
  st.log_disk_bytes = disk_bytes_;
  st.window_bytes = window_bytes_;
  st.window_batches = window_.size();
  st.inflight_bytes = inflight_;
  st.inflight_peak_bytes = inflight_peak_;
  st.fetch_shrinks = fetch_shrinks_;
  st.fetch_span = fetch_span_;
  st.last_tick = last_tick_;
  st.applied_changes = applied_changes_;
  st.appended_entries = appended_entries_;
  return st;
}

std::vector<ShapeStore::ShapeUsage> ShapeStore::usage() const {
  std::lock_guard lk(mu_);
  std::vector<ShapeUsage> out;
  out.reserve(by_handle_.size());
  for (auto& [h, sh] : by_handle_)
    if (!sh->invalid) out.push_back({sh, sh->log_memory_bytes});
  return out;
}

int64_t ShapeStore::commit_time_us(LogOffset first) const {
  std::lock_guard lk(mu_);
  return commit_time_locked(first);
}

std::vector<SpillJob> ShapeStore::take_spills(int64_t now_us) {
  std::lock_guard lk(mu_);
  return take_spills_locked(now_us);
}

bool ShapeStore::commit_spill(const SpillJob& job) {
  std::lock_guard lk(mu_);
  return commit_spill_locked(job);
}

std::vector<std::string> ShapeStore::take_dead_dirs() {
  std::lock_guard lk(mu_);
  return take_dead_dirs_locked();
}

std::vector<LogEntry> ShapeStore::replay(const Shape& s, const std::vector<Batch>& batches) {
  std::lock_guard lk(mu_);
  return replay_locked(s, batches);
}

LogRead ShapeStore::read(const Shape& s, const RequestOffset& ro) const {
  std::lock_guard lk(mu_);
  return read_locked(s, ro);
}

LogRead ShapeStore::read_live(const Shape& s, const RequestOffset& ro) const {
  std::lock_guard lk(mu_);
  return read_live_locked(s, ro);
}

LogRead ShapeStore::read_events(const Shape& s, const RequestOffset& ro) const {
  std::lock_guard lk(mu_);
  return read_events_locked(s, ro);
}

ShapeRead ShapeStore::rotated_locked(const Shape& s) const {
  ShapeRead out;
  out.rotated = true;
  auto next = active_locked(s.def.key);
  if (next && next->ready) out.next_handle = next->handle;
  return out;
}

ShapeRead ShapeStore::read_request(const std::shared_ptr<Shape>& s, const RequestOffset& ro, bool live) const {
  std::lock_guard lk(mu_);
  if (s->invalid) return rotated_locked(*s);
  ShapeRead out;
  out.r = live ? read_live_locked(*s, ro) : read_locked(*s, ro);
  return out;
}

std::optional<ShapeRead> ShapeStore::read_or_wait(const std::shared_ptr<Shape>& s, const RequestOffset& ro, bool live,
                                                  Waiter& w, const std::function<bool(const LogRead&)>& keep_waiting) {
  std::lock_guard lk(mu_);
  remove_waiter_locked(w);  // still linked when its deadline woke it
  if (s->invalid) return rotated_locked(*s);
  ShapeRead out;
  out.r = live ? read_live_locked(*s, ro) : read_locked(*s, ro);
  if (!out.r.needs_segment() && keep_waiting(out.r)) {
    add_waiter_locked(*s, w);
    return std::nullopt;
  }
  return out;
}

std::optional<ShapeRead> ShapeStore::read_events_or_wait(const std::shared_ptr<Shape>& s, const RequestOffset& ro,
                                                         Waiter& w,
                                                         const std::function<bool(const LogRead&)>& keep_waiting) {
  std::lock_guard lk(mu_);
  remove_waiter_locked(w);
  if (s->invalid) return rotated_locked(*s);
  ShapeRead out;
  out.r = read_events_locked(*s, ro);
  if (!out.r.needs_segment() && keep_waiting(out.r)) {
    add_waiter_locked(*s, w);
    return std::nullopt;
  }
  return out;
}

bool ShapeStore::holds(const Shape& s, const std::function<bool(const Shape&)>& pred) const {
  std::lock_guard lk(mu_);
  return pred(s);
}

bool ShapeStore::wait_unless(Shape& s, Waiter& w, const std::function<bool(const Shape&)>& done) {
  std::lock_guard lk(mu_);
  if (done(s)) return false;
  add_waiter_locked(s, w);
  return true;
}

void ShapeStore::add_waiter(Shape& s, Waiter& w) {
  std::lock_guard lk(mu_);
  add_waiter_locked(s, w);
}

void ShapeStore::remove_waiter(Waiter& w) {
  std::lock_guard lk(mu_);
  remove_waiter_locked(w);
}

void ShapeStore::wake_all() {
  std::lock_guard lk(mu_);
  wake_all_locked();
}

std::vector<std::pair<std::string, std::string>> ShapeStore::take_progress() {
  std::lock_guard lk(mu_);
  return take_progress_locked();
}

void ShapeStore::restore_progress(const std::vector<std::pair<std::string, std::string>>& progress) {
  std::lock_guard lk(mu_);
  restore_progress_locked(progress);
}

}  // namespace shapesync
