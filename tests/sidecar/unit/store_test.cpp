// The shape store: batches become per-shape log entries, reads follow the
// offset and chunking rules of PROTOCOL.md §5.2. No database, no sockets.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include <unistd.h>

#include "shapes/store.hpp"

using namespace shapesync;
using json = nlohmann::json;

namespace {

std::shared_ptr<const TableInfo> table() {
  auto t = std::make_shared<TableInfo>();
  t->relid = 42;
  t->schema = "public";
  t->name = "items";
  t->columns = {{"id", 1, "int4", 0, 0, true, -1, "int4"},
                {"title", 2, "text", 0, -1, false, -1, "text"},
                {"done", 3, "bool", 0, -1, false, -1, "bool"}};
  t->pk = {0};
  return t;
}

RowValues row(std::string id, std::optional<std::string> title, std::string done = "f") {
  return {std::move(id), std::move(title), std::move(done)};
}

Change ins(RowValues r) { return {42, 'I', false, std::move(r), std::nullopt}; }
Change upd(RowValues o, RowValues n) { return {42, 'U', false, std::move(n), std::move(o)}; }
Change del(RowValues o) { return {42, 'D', false, std::nullopt, std::move(o)}; }

Tx tx(uint64_t xid, uint64_t tick, uint32_t rank, std::vector<Change> c) { return {xid, make_position(tick, rank), std::move(c)}; }

struct Fixture : ::testing::Test {
  ShapeStore store{1 << 20};
  std::shared_ptr<Shape> shape(Replica replica = Replica::kDefault, std::string snap = "100:100:",
                               uint64_t start_tick = 1, std::vector<size_t> sel = {0, 1, 2}) {
    ShapeDef d;
    d.table = table();
    d.selected = sel;
    d.replica = replica;
    d.key = "k" + std::to_string(next++);
    auto s = store.begin_create(d);
    s->handle = "h-" + d.key;
    s->snap = *PgSnapshot::parse(snap);
    s->start_tick = start_tick;
    s->snapshot_chunks = {std::make_shared<const std::string>("[]")};
    store.finish_create(s, {});
    return s;
  }
  json read(const std::shared_ptr<Shape>& s, std::string offset) {
    auto r = store.read(*s, *parse_offset(offset));
    last = r;
    return json::parse(r.body());
  }
  void apply(Batch b) {
    store.apply(std::move(b));
  }
  LogRead last;
  int next = 0;
};

}  // namespace

TEST_F(Fixture, InsertUpdateDeleteBecomeMessages) {
  auto s = shape();
  apply({2, {tx(200, 2, 1, {ins(row("1", "a")), upd(row("1", "a"), row("1", "b")), del(row("1", "b"))})}});
  json b = read(s, "0_inf");
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0]["headers"]["operation"], "insert");
  EXPECT_EQ(b[0]["value"], json::parse(R"({"id":"1","title":"a","done":"f"})"));
  EXPECT_EQ(b[1]["headers"]["operation"], "update");
  EXPECT_EQ(b[1]["value"], json::parse(R"({"id":"1","title":"b"})"));  // pk + changed columns
  EXPECT_EQ(b[2]["headers"]["operation"], "delete");
  EXPECT_EQ(b[2]["value"], json::parse(R"({"id":"1"})"));
  EXPECT_EQ(b[0]["headers"]["op_position"], 0);
  EXPECT_EQ(b[2]["headers"]["op_position"], 4);
  EXPECT_FALSE(b[1]["headers"].contains("last"));
  EXPECT_EQ(b[2]["headers"]["last"], true);
  EXPECT_EQ(b[2]["headers"]["txids"], json::array({200}));
  EXPECT_EQ(b[2]["headers"]["lsn"], std::to_string(make_position(2, 1)));
  EXPECT_EQ(b[3]["headers"]["control"], "up-to-date");
  EXPECT_EQ(last.end, (LogOffset{make_position(2, 1), 4}));
  EXPECT_TRUE(last.up_to_date);
}

TEST_F(Fixture, ReplicaFullCarriesWholeRowsAndOldValue) {
  auto s = shape(Replica::kFull);
  apply({2, {tx(200, 2, 1, {upd(row("1", "a"), row("1", "b")), del(row("1", "b"))})}});
  json b = read(s, "0_inf");
  EXPECT_EQ(b[0]["value"], json::parse(R"({"id":"1","title":"b","done":"f"})"));
  EXPECT_EQ(b[0]["old_value"], json::parse(R"({"title":"a"})"));
  EXPECT_EQ(b[1]["value"], json::parse(R"({"id":"1","title":"b","done":"f"})"));
}

TEST_F(Fixture, UpdateOfNoSelectedColumnIsDropped) {
  auto s = shape(Replica::kDefault, "100:100:", 1, {0, 1});
  apply({2, {tx(200, 2, 1, {upd(row("1", "a", "f"), row("1", "a", "t"))})}});
  json b = read(s, "0_inf");
  ASSERT_EQ(b.size(), 1u);  // only up-to-date
  EXPECT_EQ(b[0]["headers"]["control"], "up-to-date");
}

TEST_F(Fixture, PrimaryKeyChangeIsDeletePlusInsert) {
  auto s = shape();
  apply({2, {tx(200, 2, 1, {upd(row("1", "a"), row("2", "a"))})}});
  json b = read(s, "0_inf");
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0]["headers"]["operation"], "delete");
  EXPECT_EQ(b[0]["key"], R"("public"."items"/"1")");
  EXPECT_EQ(b[0]["headers"]["key_change_to"], R"("public"."items"/"2")");
  EXPECT_EQ(b[1]["headers"]["operation"], "insert");
  EXPECT_EQ(b[1]["headers"]["key_change_from"], R"("public"."items"/"1")");
  EXPECT_EQ(b[1]["headers"]["op_position"], 1);
  EXPECT_EQ(b[1]["value"], json::parse(R"({"id":"2","title":"a","done":"f"})"));
}

TEST_F(Fixture, ChangesVisibleInTheShapeSnapshotAreSkipped) {
  // Snapshot 100:105:102 — xid 101 visible (already in the snapshot), 102 in progress.
  auto s = shape(Replica::kDefault, "100:105:102");
  apply({2, {tx(101, 2, 1, {ins(row("1", "a"))}), tx(102, 2, 2, {ins(row("2", "b"))})}});
  json b = read(s, "0_inf");
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0]["value"]["id"], "2");
}

TEST_F(Fixture, BatchesUpToTheStartTickAreSkipped) {
  auto s = shape(Replica::kDefault, "100:100:", 5);
  apply({5, {tx(300, 5, 1, {ins(row("1", "a"))})}});
  EXPECT_EQ(read(s, "0_inf").size(), 1u);
  apply({6, {tx(301, 6, 1, {ins(row("2", "a"))})}});
  EXPECT_EQ(read(s, "0_inf").size(), 2u);
}

TEST_F(Fixture, OtherTablesAreIgnored) {
  auto s = shape();
  Change other = ins(row("9", "z"));
  other.relid = 7;
  apply({2, {tx(200, 2, 1, {other})}});
  EXPECT_EQ(read(s, "0_inf").size(), 1u);
  EXPECT_TRUE(s->log.empty());
}

TEST_F(Fixture, TruncateInvalidatesTheShape) {
  auto s = shape();
  Change t{42, 'T', false, std::nullopt, std::nullopt};
  apply({2, {tx(200, 2, 1, {t})}});
  EXPECT_TRUE(s->invalid);
  EXPECT_EQ(store.active(s->def.key), nullptr);
}

TEST_F(Fixture, UndecodableChangeInvalidatesTheShape) {
  auto s = shape();
  Change c = ins(row("1", "a"));
  c.undecodable = true;
  apply({2, {tx(200, 2, 1, {c})}});
  EXPECT_TRUE(s->invalid);
}

TEST_F(Fixture, ReadsFollowOffsetsAndUpToDateRule) {
  auto s = shape();
  {
    s->snapshot_chunks = {std::make_shared<const std::string>("[1]"), std::make_shared<const std::string>("[2]")};
  }
  EXPECT_EQ(read(s, "-1"), json::parse("[1]"));
  EXPECT_EQ(last.end.to_string(), "0_0");
  EXPECT_FALSE(last.up_to_date);
  EXPECT_EQ(read(s, "0_0"), json::parse("[2]"));
  EXPECT_EQ(last.end.to_string(), "0_1");
  // After the last snapshot chunk: the (empty) log, up to date at 0_inf.
  json b = read(s, "0_1");
  EXPECT_EQ(last.end.to_string(), "0_inf");
  EXPECT_TRUE(last.up_to_date);
  EXPECT_FALSE(last.has_data());
  apply({2, {tx(200, 2, 1, {ins(row("1", "a")), ins(row("2", "b"))})}});
  apply({3, {tx(201, 3, 1, {ins(row("3", "c"))})}});
  b = read(s, std::to_string(make_position(2, 1)) + "_0");
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0]["value"]["id"], "2");
  EXPECT_EQ(b[1]["value"]["id"], "3");
  // Caught up: nothing, up to date, offset unchanged.
  std::string end = last.end.to_string();
  b = read(s, end);
  EXPECT_EQ(b.size(), 1u);
  EXPECT_EQ(last.end.to_string(), end);
  // Beyond everything processed: out of bounds.
  read(s, std::to_string(make_position(99, 1)) + "_0");
  EXPECT_TRUE(last.out_of_bounds);
  // "now"
  b = read(s, "now");
  EXPECT_EQ(last.end.to_string(), end);
  EXPECT_TRUE(last.up_to_date);
}

TEST_F(Fixture, LogChunksHaveFixedBoundaries) {
  ShapeStore small(200);
  ShapeDef d;
  d.table = table();
  d.selected = {0, 1, 2};
  d.key = "c";
  std::shared_ptr<Shape> s;
  {
    s = small.begin_create(d);
    s->handle = "h";
    s->snap = *PgSnapshot::parse("1:1:");
    s->snapshot_chunks = {std::make_shared<const std::string>("[]")};
    small.finish_create(s, {});
    std::vector<Change> many;
    for (int i = 0; i < 10; ++i) many.push_back(ins(row(std::to_string(i), "title")));
    small.apply({2, {tx(200, 2, 1, many)}});
  }
  ASSERT_GE(s->chunk_ends.size(), 2u);
  auto r1 = small.read(*s, *parse_offset("0_inf"));
  EXPECT_FALSE(r1.up_to_date);  // a chunk end inside the transaction: no up-to-date
  EXPECT_EQ(r1.entries.size(), s->chunk_ends[0] + 1);
  // The same offset always gives the same chunk, even after more changes.
  small.apply({3, {tx(201, 3, 1, {ins(row("100", "x"))})}});
  auto r2 = small.read(*s, *parse_offset("0_inf"));
  EXPECT_EQ(r2.body(), r1.body());
  // Walk the chunks to the end.
  LogOffset at = r1.end;
  size_t total = r1.entries.size();
  for (int guard = 0; guard < 20; ++guard) {
    auto r = small.read(*s, RequestOffset{RequestOffset::Kind::kAt, at});
    total += r.entries.size();
    at = r.end;
    if (r.up_to_date) break;
  }
  EXPECT_EQ(total, 11u);
}

namespace {
Change with_ops(Change c, std::vector<int32_t> ops) {
  c.shape_ops = std::move(ops);
  return c;
}
}  // namespace

TEST_F(Fixture, FilteredShapesSeeOnlyTheirShapeOps) {
  auto s = shape();
  {
    // Re-register as a filtered shape with id 7.
    store.invalidate(s, "test");
    ShapeDef d;
    d.table = table();
    d.selected = {0, 1, 2};
    d.key = "filtered";
    s = store.begin_create(d);
    s->handle = "hf";
    s->shape_id = 7;
    s->filtered = true;
    s->snap = *PgSnapshot::parse("100:100:");
    s->start_tick = 1;
    s->snapshot_chunks = {std::make_shared<const std::string>("[]")};
    store.finish_create(s, {});
  }
  apply({2, {tx(200, 2, 1,
                {with_ops(ins(row("1", "a")), {7 * 4 + 1}),               // insert into the shape
                 ins(row("2", "b")),                                        // not in it
                 with_ops(upd(row("2", "b"), row("2", "in")), {7 * 4 + 1}),  // move-in: insert
                 with_ops(upd(row("1", "a"), row("1", "out")), {7 * 4 + 3}),  // move-out: delete
                 with_ops(upd(row("2", "in"), row("2", "in2")), {8 * 4 + 2, 7 * 4 + 2})})}});
  json b = read(s, "0_inf");
  ASSERT_EQ(b.size(), 5u);
  EXPECT_EQ(b[0]["headers"]["operation"], "insert");
  EXPECT_EQ(b[0]["value"]["id"], "1");
  EXPECT_EQ(b[1]["headers"]["operation"], "insert");
  EXPECT_EQ(b[1]["value"], json::parse(R"({"id":"2","title":"in","done":"f"})"));
  EXPECT_EQ(b[2]["headers"]["operation"], "delete");
  EXPECT_EQ(b[2]["key"], R"("public"."items"/"1")");
  EXPECT_EQ(b[3]["headers"]["operation"], "update");
  EXPECT_EQ(b[3]["value"], json::parse(R"({"id":"2","title":"in2"})"));
  EXPECT_EQ(b[3]["headers"]["op_position"], 8);
}

TEST_F(Fixture, FilterErrorInvalidatesOnlyThatShape) {
  auto whole = shape();
  std::shared_ptr<Shape> f;
  {
    ShapeDef d;
    d.table = table();
    d.selected = {0, 1, 2};
    d.key = "f";
    f = store.begin_create(d);
    f->handle = "hf";
    f->shape_id = 9;
    f->filtered = true;
    f->snap = *PgSnapshot::parse("100:100:");
    f->start_tick = 1;
    f->snapshot_chunks = {std::make_shared<const std::string>("[]")};
    store.finish_create(f, {});
  }
  Change x{42, 'X'};
  x.shape_ops = {9 * 4};
  x.error = "division by zero";
  apply({2, {tx(200, 2, 1, {x, ins(row("1", "a"))})}});
  EXPECT_TRUE(f->invalid);
  EXPECT_EQ(f->invalid_reason, "division by zero");
  EXPECT_FALSE(whole->invalid);
  EXPECT_EQ(whole->log.size(), 1u);
}

TEST_F(Fixture, CatchUpNeedsBatchesOlderThanTheWindowFromTheDatabase) {
  {
    store.set_last_tick(1);
    for (uint64_t t = 2; t <= 5; ++t) store.apply({t, {tx(200 + t, t, 1, {ins(row(std::to_string(t), "x"))})}});
    store.trim_window(2);  // keeps ticks 4 and 5; 2 and 3 are gone
    EXPECT_EQ(store.window_floor(), 3u);
  }
  ShapeDef d;
  d.table = table();
  d.selected = {0, 1, 2};
  d.key = "late";
  auto s = store.begin_create(d);
  s->handle = "late";
  s->snap = *PgSnapshot::parse("100:100:");
  s->start_tick = 1;
  s->snapshot_chunks = {std::make_shared<const std::string>("[]")};
  EXPECT_FALSE(store.finish_create(s));  // ticks 2..3 are missing
  EXPECT_FALSE(s->ready);
  std::vector<Batch> extra{{2, {tx(202, 2, 1, {ins(row("2", "x"))})}}, {3, {tx(203, 3, 1, {ins(row("3", "x"))})}}};
  EXPECT_TRUE(store.finish_create(s, extra, 3));
  EXPECT_TRUE(s->ready);
  ASSERT_EQ(s->log.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(s->log[i].offset.tx, make_position(i + 2, 1));
}

// Closed chunks beyond the newest one go to segment files; reads of them come
// back as a segment that read_segment turns into exactly the entries the
// memory held; a damaged file is refused; a gone shape's directory is listed.
TEST(StoreSpill, SpilledChunksReadBackByteIdentical) {
  std::string base = ::testing::TempDir() + "/spill-" + std::to_string(::getpid());
  std::string dir, err;
  ASSERT_TRUE(prepare_segment_dir(base, dir, err)) << err;
  ShapeStore small(200);
  small.set_spill(dir, 1);
  ShapeDef d;
  d.table = table();
  d.selected = {0, 1, 2};
  d.key = "c";
  std::shared_ptr<Shape> s;
  std::vector<std::string> before;  // body of every chunk, read while all is in memory
  auto walk = [&](std::vector<std::string>& bodies) {
    LogOffset at = LogOffset::snapshot_end();
    for (int guard = 0; guard < 100; ++guard) {
      LogRead r;
      {
        r = small.read(*s, RequestOffset{RequestOffset::Kind::kAt, at});
      }
      if (r.segment) {
        std::vector<std::shared_ptr<const std::string>> got;
        if (!read_segment(*r.segment, r.segment_after, got)) return false;
        r.entries = std::move(got);
        r.segment.reset();
      }
      bodies.push_back(r.body());
      at = r.end;
      if (r.up_to_date) return true;
    }
    return false;
  };
  {
    s = small.begin_create(d);
    s->handle = "h/../x";  // never a path
    s->snap = *PgSnapshot::parse("1:1:");
    s->snapshot_chunks = {std::make_shared<const std::string>("[]")};
    small.finish_create(s, {});
    std::vector<Change> many;
    for (int i = 0; i < 30; ++i) many.push_back(ins(row(std::to_string(i), "title " + std::to_string(i))));
    small.apply({2, {tx(200, 2, 1, many)}});
    small.apply({3, {tx(201, 3, 1, {ins(row("100", "x"))})}});
  }
  ASSERT_TRUE(walk(before));
  ASSERT_GE(before.size(), 4u);
  size_t mem_before;
  std::vector<SpillJob> jobs;
  {
    mem_before = s->log_memory_bytes;
    jobs = small.take_spills();
  }
  ASSERT_EQ(jobs.size(), s->chunk_ends.size() - 1) << "all closed chunks but the newest";
  for (auto& j : jobs) {
    EXPECT_EQ(j.path.find(".."), std::string::npos);
    std::filesystem::create_directories(std::filesystem::path(j.path).parent_path());
    ASSERT_TRUE(write_segment(j.path, j.entries, err)) << err;
    ASSERT_TRUE(small.commit_spill(j));
  }
  {
    EXPECT_EQ(s->spilled.size(), jobs.size());
    EXPECT_LT(s->log_memory_bytes, mem_before / 2);
    EXPECT_EQ(s->last_offset(), s->log.back().offset);
  }
  std::vector<std::string> after;
  ASSERT_TRUE(walk(after));
  EXPECT_EQ(after, before);
  // a read from the middle of a spilled chunk starts after that offset
  {
    LogRead r;
    r = small.read(*s, RequestOffset{RequestOffset::Kind::kAt, jobs[0].entries[0].offset});
    ASSERT_TRUE(r.segment.has_value());
    std::vector<std::shared_ptr<const std::string>> got;
    ASSERT_TRUE(read_segment(*r.segment, r.segment_after, got));
    EXPECT_EQ(got.size(), json::parse(before[0]).size() - 1);
  }
  // damaged: truncated file, or a file of another chunk
  {
    std::string p = jobs[0].path;
    SegmentFile seg0{s->spilled[0], small.segment_path(*s, s->spilled[0].end_index)};
    EXPECT_EQ(seg0.path, p);
    std::filesystem::resize_file(p, std::filesystem::file_size(p) - 3);
    std::vector<std::shared_ptr<const std::string>> got;
    EXPECT_FALSE(read_segment(seg0, LogOffset::snapshot_end(), got));
    std::filesystem::copy_file(jobs[1].path, p, std::filesystem::copy_options::overwrite_existing);
    EXPECT_FALSE(read_segment(seg0, LogOffset::snapshot_end(), got));
    std::filesystem::remove(p);
    EXPECT_FALSE(read_segment(seg0, LogOffset::snapshot_end(), got));
  }
  // the scratch replay gives the same entries as the log had
  {
    std::vector<Change> many;
    for (int i = 0; i < 30; ++i) many.push_back(ins(row(std::to_string(i), "title " + std::to_string(i))));
    std::vector<Batch> bs{{2, {tx(200, 2, 1, many)}}};
    auto replayed = small.replay(*s, bs);
    ASSERT_EQ(replayed.size(), 30u);
    std::vector<std::shared_ptr<const std::string>> got;
    ASSERT_TRUE(read_segment(SegmentFile{s->spilled[1], small.segment_path(*s, s->spilled[1].end_index)},
                            LogOffset::snapshot_end(), got));
    size_t first = s->spilled[0].end_index + 1;
    for (size_t k = 0; k < got.size(); ++k) EXPECT_EQ(*got[k], *replayed[first + k].json);
  }
  // gone: its directory is handed back for deletion
  {
    small.invalidate(s, "test");
    auto dead = small.take_dead_dirs();
    ASSERT_EQ(dead.size(), 1u);
    EXPECT_EQ(std::filesystem::path(jobs[0].path).parent_path().string(), dead[0]);
  }
  // the directory of a previous run is cleared; a foreign one is refused
  EXPECT_TRUE(prepare_segment_dir(base, dir, err)) << err;
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  std::filesystem::remove(base + "/.shapesyncd");
  EXPECT_FALSE(prepare_segment_dir(base, dir, err));
  EXPECT_NE(err.find("refusing"), std::string::npos) << err;
  std::filesystem::remove_all(base);
}

TEST_F(Fixture, WindowIsBoundedByBytes) {
  {
    for (uint64_t t = 2; t < 50; ++t) store.apply({t, {tx(100 + t, t, 1, {ins(row(std::to_string(t), std::string(1000, 'x')))})}});
    store.advance(49);
    EXPECT_EQ(store.stats().window_batches, 48u);
    store.trim_window(1000, 10'000);
    EXPECT_LE(store.stats().window_bytes, 10'000u);
    EXPECT_GT(store.stats().window_batches, 0u);
    EXPECT_LT(store.stats().window_batches, 48u);
    EXPECT_GT(store.window_floor(), 2u);
  }
}

namespace {

struct CountingWaiter : Waiter {
  int woken = 0;
  void wake() override { ++woken; }
};

}  // namespace

TEST_F(Fixture, AChangeWakesEveryWaiterOfItsShapeOnce) {
  auto s = shape();
  auto other = shape();
  CountingWaiter a, b, c, gone;
  {
    store.add_waiter(*s, a);
    store.add_waiter(*s, b);
    store.add_waiter(*s, gone);
    store.add_waiter(*other, c);
    store.remove_waiter(gone);  // its client went away
    store.remove_waiter(gone);  // unlinking twice is harmless
    EXPECT_EQ(store.stats().waiting, 3u);
  }
  apply({2, {tx(200, 2, 1, {ins(row("1", "a"))})}});
  EXPECT_EQ(a.woken, 1);
  EXPECT_EQ(b.woken, 1);
  EXPECT_EQ(gone.woken, 0);
  EXPECT_EQ(c.woken, 1);  // same table: a whole-table shape sees the change too
  EXPECT_EQ(store.stats().waiting, 0u);
  EXPECT_EQ(a.waiting_on, nullptr);
  store.remove_waiter(a);  // woken waiters are no longer linked
  EXPECT_EQ(store.stats().waiting, 0u);
}

TEST_F(Fixture, LiveReadsShareOneBodyPerChange) {
  auto s = shape();
  apply({2, {tx(200, 2, 1, {ins(row("1", "a"))})}});
  auto at = *parse_offset("0_inf");
  LogRead r1 = store.read_live(*s, at);
  LogRead r2 = store.read_live(*s, at);
  ASSERT_TRUE(r1.built);
  EXPECT_EQ(r1.built, r2.built);  // the same string, built once
  EXPECT_EQ(r1.body(), store.read(*s, at).body());
  EXPECT_EQ(r2.end, r1.end);
  EXPECT_TRUE(r2.up_to_date);
  store.advance(3);  // the global position moves: the up-to-date message changes
  LogRead r3 = store.read_live(*s, at);
  EXPECT_NE(r3.built, r1.built);
  EXPECT_EQ(r3.body(), store.read(*s, at).body());
  EXPECT_FALSE(store.read_live(*s, *parse_offset(r3.end.to_string())).has_data());
}

// A shape whose catch-up meets a TRUNCATE of its table is invalid and no
// longer the active shape of its definition (else every later request would
// be handed the dead shape; found by the filter-errors e2e test).
TEST_F(Fixture, RotatedDuringCreationLeavesTheActiveMap) {
  store.set_last_tick(1);
  store.apply({2, {tx(202, 2, 1, {Change{42, 'T', false, std::nullopt, std::nullopt}})}});
  store.advance(2);
  ShapeDef d;
  d.table = table();
  d.selected = {0, 1, 2};
  d.key = "rotated";
  auto s = store.begin_create(d);
  s->handle = "rotated";
  s->snap = *PgSnapshot::parse("100:100:");
  s->start_tick = 1;
  s->snapshot_chunks = {std::make_shared<const std::string>("[]")};
  ASSERT_EQ(store.active("rotated"), s);
  EXPECT_FALSE(store.finish_create(s));
  EXPECT_TRUE(s->invalid);
  EXPECT_EQ(s->invalid_reason, "truncate");
  EXPECT_EQ(store.active("rotated"), nullptr);
  EXPECT_EQ(store.by_handle("rotated"), nullptr);
}

// Issue 8: a client waiting at the end of the log is woken by a transaction
// larger than a chunk; before it reads, the first chunks of that transaction
// go to segment files. Every read a waiter can make (long-poll's read_live,
// SSE's read_events, a plain read) must say the entries are in a segment
// (needs_segment) and refuse to serialize without them; following the reads
// from the waiter's offset, filling each segment, yields every row once.
// Run with 0, 1 and 3 closed chunks kept in memory.
class SpillWhileWaiting : public ::testing::TestWithParam<size_t> {};

TEST_P(SpillWhileWaiting, LiveReadWhoseNextEntryIsInASegmentLosesNothing) {
  size_t keep = GetParam();
  std::string base = ::testing::TempDir() + "/spill-live-" + std::to_string(::getpid()) + "-" + std::to_string(keep);
  std::string dir, err;
  ASSERT_TRUE(prepare_segment_dir(base, dir, err)) << err;
  ShapeStore small(150);
  small.set_spill(dir, keep);
  ShapeDef d;
  d.table = table();
  d.selected = {0, 1, 2};
  d.key = "live";
  std::shared_ptr<Shape> s;
  LogOffset waiting_at;
  {
    s = small.begin_create(d);
    s->handle = "h-live";
    s->snap = *PgSnapshot::parse("1:1:");
    s->snapshot_chunks = {std::make_shared<const std::string>("[]")};
    small.finish_create(s, {});
    small.apply({2, {tx(200, 2, 1, {ins(row("0", "first"))})}});
    waiting_at = s->last_offset();
    // the waiter's view before the big transaction: nothing new
    auto r = small.read_live(*s, RequestOffset{RequestOffset::Kind::kAt, waiting_at});
    ASSERT_FALSE(r.has_data());
  }
  const int kRows = 40;
  std::vector<SpillJob> jobs;
  {
    std::vector<Change> many;
    for (int i = 1; i <= kRows; ++i) many.push_back(ins(row(std::to_string(i), std::string(30, 'a' + i % 26))));
    small.apply({3, {tx(201, 3, 1, many)}});
    jobs = small.take_spills();
  }
  ASSERT_FALSE(jobs.empty()) << "the transaction closes chunks due to be spilled";
  for (auto& j : jobs) {
    std::filesystem::create_directories(std::filesystem::path(j.path).parent_path());
    ASSERT_TRUE(write_segment(j.path, j.entries, err)) << err;
    ASSERT_TRUE(small.commit_spill(j));
  }
  RequestOffset ro{RequestOffset::Kind::kAt, waiting_at};
  {
    for (LogRead r : {small.read_live(*s, ro), small.read_events(*s, ro), small.read(*s, ro)}) {
      EXPECT_TRUE(r.has_data());
      ASSERT_TRUE(r.needs_segment()) << "the waiter's next entry is in a segment file";
      EXPECT_FALSE(r.built) << "no shared body may be built without the segment's entries";
      EXPECT_THROW(r.body(), std::logic_error);
      EXPECT_THROW(r.events(), std::logic_error);
    }
  }
  // Follow from the waiter's offset, as the long-poll and SSE paths do.
  std::vector<std::string> ids;
  LogOffset at = waiting_at;
  bool up_to_date = false;
  for (int guard = 0; guard < 100 && !up_to_date; ++guard) {
    LogRead r;
    {
      r = guard % 2 ? small.read_live(*s, RequestOffset{RequestOffset::Kind::kAt, at})
                    : small.read_events(*s, RequestOffset{RequestOffset::Kind::kAt, at});
    }
    if (r.needs_segment()) {
      std::vector<std::shared_ptr<const std::string>> got;
      ASSERT_TRUE(read_segment(*r.segment, r.segment_after, got));
      r.entries = std::move(got);
      r.segment.reset();
    }
    if (r.built && guard % 2) {  // long-poll body: a JSON array
      for (auto& m : json::parse(*r.built))
        if (m.contains("key")) ids.push_back(m["value"]["id"]);
    } else if (r.built) {  // SSE event text: "data: <message>\n\n" each
      std::string text = *r.built;
      for (size_t p = text.find("data: "); p != std::string::npos; p = text.find("data: ", p + 1)) {
        auto m = json::parse(text.substr(p + 6, text.find("\n\n", p) - p - 6));
        if (m.contains("key")) ids.push_back(m["value"]["id"]);
      }
    } else {
      for (auto& e : r.entries) ids.push_back(json::parse(*e)["value"]["id"]);
    }
    ASSERT_LE(at, r.end);
    at = r.end;
    up_to_date = r.up_to_date;
  }
  ASSERT_TRUE(up_to_date);
  ASSERT_EQ(ids.size(), static_cast<size_t>(kRows));
  for (int i = 1; i <= kRows; ++i) EXPECT_EQ(ids[i - 1], std::to_string(i));
  std::filesystem::remove_all(base);
}

INSTANTIATE_TEST_SUITE_P(KeptChunks, SpillWhileWaiting, ::testing::Values(0, 1, 3));

// The store owns its lock: an operation that restarts the store (and so
// invalidates shapes and resets the window under that lock) must not take it
// again; it returns, hands back the previous position, and the store works on.
TEST_F(Fixture, RestartFromTakesTheLockOnceAndStartsOver) {
  auto s = shape();
  apply({2, {tx(200, 2, 1, {ins(row("1", "a"))})}});
  store.advance(5);
  EXPECT_EQ(store.restart_from(9, "fell behind"), 5u);
  EXPECT_TRUE(store.status(*s).invalid);
  EXPECT_EQ(store.last_tick(), 9u);
  EXPECT_EQ(store.window_floor(), 9u);
  EXPECT_EQ(store.stats().window_batches, 0u);
  auto s2 = shape(Replica::kDefault, "100:100:", 9);  // a snapshot taken after the restart
  apply({10, {tx(300, 10, 1, {ins(row("2", "b"))})}});
  EXPECT_EQ(read(s2, "0_inf").size(), 2u);  // the insert and up-to-date
}

// A table with a dropped column: decoded rows are indexed by attnum - 1, the
// table's columns skip the dropped one, so values must be mapped, not taken
// by position (the identity fast path is only for tables without such gaps).
TEST_F(Fixture, ValuesOfATableWithADroppedColumnAreMappedByAttnum) {
  auto t = std::make_shared<TableInfo>();
  t->relid = 42;
  t->schema = "public";
  t->name = "items";
  t->columns = {{"id", 1, "int4", 0, 0, true, -1, "int4"}, {"done", 3, "bool", 0, -1, false, -1, "bool"}};
  t->pk = {0};
  t->natts = 3;
  ShapeDef d;
  d.table = t;
  d.selected = {0, 1};
  d.replica = Replica::kFull;
  d.key = "dropped";
  auto s = store.begin_create(d);
  s->handle = "h-dropped";
  s->snap = *PgSnapshot::parse("100:100:");
  s->start_tick = 1;
  s->snapshot_chunks = {std::make_shared<const std::string>("[]")};
  store.finish_create(s, {});
  // attnum 2 (dropped) decodes as NULL
  RowValues a{std::string("7"), std::nullopt, std::string("f")};
  RowValues b{std::string("7"), std::nullopt, std::string("t")};
  apply({2, {tx(200, 2, 1, {ins(a), upd(a, b), del(b)})}});
  json m = read(s, "0_inf");
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[0]["value"], json::parse(R"({"id":"7","done":"f"})"));
  EXPECT_EQ(m[1]["value"], json::parse(R"({"id":"7","done":"t"})"));
  EXPECT_EQ(m[1]["old_value"], json::parse(R"({"done":"f"})"));
  EXPECT_EQ(m[2]["value"], json::parse(R"({"id":"7","done":"t"})"));
  EXPECT_EQ(m[0]["key"], "\"public\".\"items\"/\"7\"");
}
