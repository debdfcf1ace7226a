// Shape store: applying batches to shape logs, chunking, reads, waiters.
#include "shapes/store.hpp"

#include <algorithm>

#include <boost/asio/post.hpp>

namespace shapesync {

std::string LogRead::body() const {
  if (snapshot_chunk) return *snapshot_chunk;
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

std::shared_ptr<Shape> ShapeStore::active(const std::string& def_key) const {
  auto it = active_.find(def_key);
  return it == active_.end() ? nullptr : it->second;
}

std::shared_ptr<Shape> ShapeStore::by_handle(const std::string& handle) const {
  auto it = by_handle_.find(handle);
  return it == by_handle_.end() ? nullptr : it->second;
}

std::shared_ptr<Shape> ShapeStore::begin_create(ShapeDef def) {
  auto s = std::make_shared<Shape>();
  s->def = std::move(def);
  s->key_prefix = key_prefix(*s->def.table);
  s->relation = relation_json(*s->def.table);
  s->schema_header = schema_json(*s->def.table, s->def.selected);
  active_[s->def.key] = s;
  return s;
}

void ShapeStore::wake(Shape& s) {
  for (auto& w : s.waiters) {
    auto wp = w;
    asio::post(w->timer.get_executor(), [wp] { wp->timer.cancel(); });
  }
  s.waiters.clear();
}

bool ShapeStore::finish_create(const std::shared_ptr<Shape>& s, std::vector<Batch> extra) {
  // Batches (start_tick, last_tick_] must be applied: from `extra` (read from the
  // database by the caller) or the window.
  std::vector<std::string> ignored;
  uint64_t next = s->start_tick + 1;
  for (auto& b : extra) {
    if (b.tick_id < next) continue;
    apply_to_shape(*s, b, ignored);
    next = b.tick_id + 1;
  }
  for (auto& b : window_) {
    if (b.tick_id < next) continue;
    if (b.tick_id > last_tick_) break;
    apply_to_shape(*s, b, ignored);
    next = b.tick_id + 1;
  }
  if (!ignored.empty()) {  // truncated or changed while it was being created
    auto sp = s;
    invalidate(sp, s->invalid_reason);
    return false;
  }
  s->ready = true;
  by_handle_[s->handle] = s;
  by_relid_[s->def.table->relid].push_back(s);
  wake(*s);
  return true;
}

void ShapeStore::fail_create(const std::shared_ptr<Shape>& s) {
  s->failed = true;
  auto it = active_.find(s->def.key);
  if (it != active_.end() && it->second == s) active_.erase(it);
  wake(*s);
}

void ShapeStore::invalidate(const std::shared_ptr<Shape>& s, const std::string& reason) {
  if (s->invalid) return;
  s->invalid = true;
  s->invalid_reason = reason;
  auto it = active_.find(s->def.key);
  if (it != active_.end() && it->second == s) active_.erase(it);
  by_handle_.erase(s->handle);
  auto& v = by_relid_[s->def.table->relid];
  v.erase(std::remove(v.begin(), v.end(), s), v.end());
  wake(*s);
}

void ShapeStore::invalidate_table(uint32_t relid, const std::string& reason) {
  auto it = by_relid_.find(relid);
  if (it == by_relid_.end()) return;
  auto shapes = it->second;
  for (auto& s : shapes) invalidate(s, reason);
}

void ShapeStore::remove_waiter(const std::shared_ptr<Shape>& s, const std::shared_ptr<Waiter>& w) {
  auto& v = s->waiters;
  v.erase(std::remove(v.begin(), v.end(), w), v.end());
}

void ShapeStore::append(Shape& s, LogOffset off, std::string json) {
  size_t n = json.size();
  s.log.push_back({off, std::make_shared<const std::string>(std::move(json))});
  s.open_chunk_bytes += n + 1;
  if (s.open_chunk_bytes >= chunk_bytes_) {
    s.chunk_ends.push_back(s.log.size() - 1);
    s.open_chunk_bytes = 0;
  }
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

struct Pending {
  std::string key;
  std::string value;
  std::optional<std::string> old_value;
  std::string_view op;
  uint64_t op_position;
  std::optional<std::string> key_change_to, key_change_from;
};

}  // namespace

void ShapeStore::apply_to_shape(Shape& s, const Batch& b, std::vector<std::string>& invalidated) {
  if (s.invalid || b.tick_id <= s.start_tick) return;
  const TableInfo& t = *s.def.table;
  const auto& sel = s.def.selected;
  bool full = s.def.replica == Replica::kFull;
  for (const Tx& tx : b.txs) {
    if (s.snap.visible(tx.xid)) continue;
    std::vector<Pending> out;
    for (size_t i = 0; i < tx.changes.size(); ++i) {
      const Change& c = tx.changes[i];
      if (c.relid != t.relid) continue;
      uint64_t pos = 2 * i;
      if (c.op == 'T') {
        invalidated.push_back(s.handle);
        s.invalid_reason = "truncate";
        return;
      }
      bool ok = !c.undecodable;
      RowValues nv, ov;
      if (ok && c.new_values) nv = by_column(t, *c.new_values, ok);
      if (ok && c.old_values) ov = by_column(t, *c.old_values, ok);
      if (!ok || (c.op != 'D' && !c.new_values) || (c.op != 'I' && !c.old_values)) {
        invalidated.push_back(s.handle);
        s.invalid_reason = "schema changed";
        return;
      }
      Pending p;
      p.op_position = pos;
      if (c.op == 'I') {
        p.op = "insert";
        p.key = row_key(s.key_prefix, t, nv);
        append_value_object(p.value, t, nv, sel);
        out.push_back(std::move(p));
      } else if (c.op == 'D') {
        p.op = "delete";
        p.key = row_key(s.key_prefix, t, ov);
        append_value_object(p.value, t, ov, full ? sel : t.pk);
        out.push_back(std::move(p));
      } else {  // 'U'
        std::string old_key = row_key(s.key_prefix, t, ov);
        std::string new_key = row_key(s.key_prefix, t, nv);
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
          out.push_back(std::move(d));
          out.push_back(std::move(ins));
          continue;
        }
        std::vector<size_t> changed;
        for (size_t idx : sel)
          if (nv[idx] != ov[idx]) changed.push_back(idx);
        if (changed.empty()) continue;
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
    uint32_t xid32 = static_cast<uint32_t>(tx.xid & 0xffffffffULL);
    for (size_t k = 0; k < out.size(); ++k) {
      Pending& p = out[k];
      ChangeHeaders h;
      h.operation = p.op;
      h.relation = s.relation;
      h.txid = xid32;
      h.lsn = tx.position;
      h.op_position = p.op_position;
      h.last = k + 1 == out.size();
      h.key_change_to = p.key_change_to;
      h.key_change_from = p.key_change_from;
      append(s, LogOffset{tx.position, p.op_position},
             change_message(p.key, p.value, p.old_value ? &*p.old_value : nullptr, h));
    }
  }
}

std::vector<std::string> ShapeStore::apply(Batch batch) {
  std::vector<std::string> invalidated;
  std::vector<uint32_t> touched;
  for (auto& tx : batch.txs)
    for (auto& c : tx.changes) touched.push_back(c.relid);
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  for (uint32_t relid : touched) {
    auto it = by_relid_.find(relid);
    if (it == by_relid_.end()) continue;
    auto shapes = it->second;  // copy: invalidation edits the list
    for (auto& s : shapes) {
      size_t before = s->log.size();
      std::vector<std::string> inv;
      apply_to_shape(*s, batch, inv);
      if (!inv.empty()) {
        std::string reason = s->invalid_reason.empty() ? "truncate" : s->invalid_reason;
        s->invalid = false;  // let invalidate() do the bookkeeping
        invalidate(s, reason);
        invalidated.insert(invalidated.end(), inv.begin(), inv.end());
      } else if (s->log.size() != before) {
        wake(*s);
      }
    }
  }
  last_tick_ = std::max(last_tick_, batch.tick_id);
  window_.push_back(std::move(batch));
  return invalidated;
}

void ShapeStore::trim_window(size_t max_batches) {
  while (window_.size() > max_batches) window_.pop_front();
}

LogRead ShapeStore::read(const Shape& s, const RequestOffset& ro) const {
  LogRead r;
  r.global_last_seen = global_position();
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
  after = ro.at;
  if (after.is_snapshot_region()) {
    if (after.op + 1 < s.snapshot_chunks.size()) {
      r.snapshot_chunk = s.snapshot_chunks[after.op + 1];
      r.end = LogOffset{0, after.op + 1};
      return r;
    }
    after = LogOffset::snapshot_end();
  }
  LogOffset last = s.last_offset();
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
  size_t i = static_cast<size_t>(it - s.log.begin());
  auto ce = std::lower_bound(s.chunk_ends.begin(), s.chunk_ends.end(), i);
  size_t j = ce == s.chunk_ends.end() ? s.log.size() - 1 : *ce;
  r.entries.reserve(j - i + 1);
  for (size_t k = i; k <= j; ++k) r.entries.push_back(s.log[k].json);
  r.end = s.log[j].offset;
  r.up_to_date = j + 1 == s.log.size();
  r.global_last_seen = std::max(r.global_last_seen, r.end.tx);
  return r;
}

}  // namespace shapesync
