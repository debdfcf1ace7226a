// Monitoring wiring without sockets or a database: the store's figures for
// monitoring (tick times behind the commit-to-send latency, segment bytes on
// disk, per-shape usage) and the process metrics' hooks (requests by route,
// status and mode; a delivery counts and observes together).
#include <gtest/gtest.h>

#include <filesystem>

#include <unistd.h>

#include "metrics/sidecar.hpp"
#include "shapes/store.hpp"

using namespace shapesync;

namespace {

std::shared_ptr<const TableInfo> table() {
  auto t = std::make_shared<TableInfo>();
  t->relid = 42;
  t->schema = "public";
  t->name = "items";
  t->columns = {{"id", 1, "int4", 0, 0, true, -1, "int4"}, {"title", 2, "text", 0, -1, false, -1, "text"}};
  t->pk = {0};
  return t;
}

Change ins(std::string id) { return {42, 'I', false, RowValues{std::move(id), std::string("t")}, std::nullopt}; }

Batch batch(uint64_t tick, int64_t time_us, std::vector<std::string> ids) {
  Tx t{1000 + tick, make_position(tick, 1), {}};
  for (auto& id : ids) t.changes.push_back(ins(id));
  Batch b{tick, {std::move(t)}};
  b.tick_time_us = time_us;
  return b;
}

std::shared_ptr<Shape> ready_shape(ShapeStore& store, std::string key) {
  ShapeDef d;
  d.table = table();
  d.selected = {0, 1};
  d.key = key;
  auto s = store.begin_create(d);
  s->handle = "h-" + key;
  s->snap = *PgSnapshot::parse("1:1:");
  s->snapshot_chunks = {std::make_shared<const std::string>("[]")};
  store.finish_create(s, {});
  return s;
}

RequestOffset at(LogOffset o) { return RequestOffset{RequestOffset::Kind::kAt, o}; }

}  // namespace

TEST(StoreMonitoring, LiveReadsCarryTheTickTimeOfTheirOldestChange) {
  ShapeStore store(1 << 20);
  auto s = ready_shape(store, "a");
  store.apply(batch(2, 1'000'000, {"1"}));
  LogRead first = store.read_live(*s, at(LogOffset::snapshot_end()));
  EXPECT_EQ(first.commit_us, 1'000'000);
  store.apply(batch(3, 2'000'000, {"2"}));
  store.apply(batch(4, 3'000'000, {"3"}));
  // from the start: the oldest change is tick 2's
  EXPECT_EQ(store.read_live(*s, at(LogOffset::snapshot_end())).commit_us, 1'000'000);
  // after tick 2's change: tick 3's; the cached body keeps it; SSE text the same
  LogRead r = store.read_live(*s, at(first.end));
  EXPECT_EQ(r.commit_us, 2'000'000);
  EXPECT_EQ(store.read_live(*s, at(first.end)).commit_us, 2'000'000);
  EXPECT_EQ(store.read_events(*s, at(first.end)).commit_us, 2'000'000);
  // nothing new: no time
  EXPECT_EQ(store.read_live(*s, at(store.read_live(*s, at(first.end)).end)).commit_us, 0);
  // an offset's tick older than every tick remembered: the oldest remembered
  EXPECT_EQ(store.commit_time_us(LogOffset{make_position(1, 1), 0}), 1'000'000);
  EXPECT_EQ(store.commit_time_us(LogOffset{make_position(4, 1), 0}), 3'000'000);
}

TEST(StoreMonitoring, SegmentBytesOnDiskAndUsage) {
  std::string base = ::testing::TempDir() + "/mon-spill-" + std::to_string(::getpid());
  std::string dir, err;
  ASSERT_TRUE(prepare_segment_dir(base, dir, err)) << err;
  ShapeStore store(200);
  store.set_spill(dir, 1);
  auto s = ready_shape(store, "b");
  std::vector<std::string> ids;
  for (int i = 0; i < 30; ++i) ids.push_back(std::to_string(i));
  store.apply(batch(2, 1, ids));
  store.apply(batch(3, 2, {"100"}));
  auto usage = store.usage();
  ASSERT_EQ(usage.size(), 1u);
  EXPECT_EQ(usage[0].shape, s);
  EXPECT_EQ(usage[0].log_bytes, s->log_memory_bytes);
  EXPECT_GT(usage[0].log_bytes, 0u);
  EXPECT_EQ(store.stats().log_disk_bytes, 0u);
  size_t written = 0;
  for (auto& j : store.take_spills()) {
    std::filesystem::create_directories(std::filesystem::path(j.path).parent_path());
    ASSERT_TRUE(write_segment(j.path, j.entries, err)) << err;
    j.file_bytes = std::filesystem::file_size(j.path);
    written += j.file_bytes;
    ASSERT_TRUE(store.commit_spill(j));
  }
  ASSERT_GT(written, 0u);
  EXPECT_EQ(store.stats().log_disk_bytes, written);
  EXPECT_LT(store.stats().log_memory_bytes, usage[0].log_bytes);
  // a retired shape's files are deleted: they no longer count, nor does it
  store.invalidate(s, "test");
  EXPECT_EQ(store.stats().log_disk_bytes, 0u);
  EXPECT_TRUE(store.usage().empty());
  std::filesystem::remove_all(base);
}

TEST(ProcessMetrics, RequestsByRouteStatusAndMode) {
  auto& pm = metrics::process_metrics();
  auto& live200 = pm.http_requests.labels({"/v1/shape", "200", "live"});
  auto& odd = pm.http_requests.labels({"/dashboard", "418", "none"});
  uint64_t l0 = live200.value(), o0 = odd.value(), t0 = pm.requests_total();
  pm.count_request(metrics::Route::kShape, 200, metrics::Mode::kLive);
  pm.count_request(metrics::Route::kShape, 200, metrics::Mode::kLive);
  pm.count_request(metrics::Route::kDashboard, 418, metrics::Mode::kNone);  // not in the fixed table
  EXPECT_EQ(live200.value(), l0 + 2);
  EXPECT_EQ(odd.value(), o0 + 1);
  EXPECT_EQ(pm.requests_total(), t0 + 3);
  EXPECT_NE(pm.registry.render().find("shapesync_http_requests_total{route=\"/v1/shape\",status=\"200\",mode=\"live\"}"),
            std::string::npos);
}

TEST(ProcessMetrics, ADeliveryCountsAndObservesItsLatencyTogether) {
  auto& pm = metrics::process_metrics();
  uint64_t d0 = pm.deliveries.value(), c0 = pm.commit_to_send.count();
  double s0 = pm.commit_to_send.sum();
  pm.delivered(metrics::unix_now_us() - 1'500'000);  // committed 1.5 s ago
  pm.delivered(0);                                   // unknown: observed as 0
  EXPECT_EQ(pm.deliveries.value(), d0 + 2);
  EXPECT_EQ(pm.commit_to_send.count(), c0 + 2);
  EXPECT_EQ(pm.commit_to_send.count(), pm.deliveries.value());
  EXPECT_NEAR(pm.commit_to_send.sum() - s0, 1.5, 0.25);
  auto p99 = pm.commit_to_send.quantile_last_minute(0.99);
  ASSERT_TRUE(p99.has_value());
  EXPECT_GT(*p99, 1.0);
}

TEST(ProcessMetrics, AuthFailuresByReason) {
  auto& pm = metrics::process_metrics();
  uint64_t v0 = pm.auth_failures.labels({"expired"}).value();
  metrics::count_auth_failure("expired");
  metrics::count_auth_failure("expired");
  EXPECT_EQ(pm.auth_failures.labels({"expired"}).value(), v0 + 2);
  EXPECT_NE(pm.registry.render().find("shapesync_auth_failures_total{reason=\"expired\"}"), std::string::npos);
}
