// Metrics and their Prometheus text exposition (sidecar/src/metrics).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "metrics/metrics.hpp"

using namespace shapesync::metrics;

TEST(Metrics, RendersCountersAndGaugesWithHelpAndType) {
  Registry r;
  Counter& c = r.counter("t_requests_total", "Requests.");
  Gauge& g = r.gauge("t_shapes", "Shapes held.");
  c.inc();
  c.inc(41);
  g.set(3);
  g.add(0.5);
  g.sub(1);
  EXPECT_EQ(c.value(), 42u);
  EXPECT_DOUBLE_EQ(g.value(), 2.5);
  EXPECT_EQ(r.render(),
            "# HELP t_requests_total Requests.\n"
            "# TYPE t_requests_total counter\n"
            "t_requests_total 42\n"
            "# HELP t_shapes Shapes held.\n"
            "# TYPE t_shapes gauge\n"
            "t_shapes 2.5\n");
}

TEST(Metrics, LabelsAreEscapedAndSorted) {
  Registry r;
  auto& f = r.counter_family("t_http_requests_total", "By route.\nSecond line \\ backslash.", {"route", "status"});
  f.labels({"/v1/shape", "200"}).inc(2);
  f.labels({"a\"b\\c\nd", "500"}).inc();
  Counter& again = f.labels({"/v1/shape", "200"});
  again.inc();
  EXPECT_EQ(r.render(),
            "# HELP t_http_requests_total By route.\\nSecond line \\\\ backslash.\n"
            "# TYPE t_http_requests_total counter\n"
            "t_http_requests_total{route=\"/v1/shape\",status=\"200\"} 3\n"
            "t_http_requests_total{route=\"a\\\"b\\\\c\\nd\",status=\"500\"} 1\n");
  EXPECT_THROW(f.labels({"only-one"}), std::invalid_argument);
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Registry r;
  Histogram& h = r.histogram("t_latency_seconds", "Latency.", {0.005, 0.01, 0.1});
  h.observe(0.001);
  h.observe(0.005);  // le is inclusive
  h.observe(0.05);
  h.observe(7);
  EXPECT_EQ(h.count(), 4u);
  EXPECT_EQ(r.render(),
            "# HELP t_latency_seconds Latency.\n"
            "# TYPE t_latency_seconds histogram\n"
            "t_latency_seconds_bucket{le=\"0.005\"} 2\n"
            "t_latency_seconds_bucket{le=\"0.01\"} 2\n"
            "t_latency_seconds_bucket{le=\"0.1\"} 3\n"
            "t_latency_seconds_bucket{le=\"+Inf\"} 4\n"
            "t_latency_seconds_sum 7.056\n"
            "t_latency_seconds_count 4\n");
}

TEST(Metrics, LabelledHistogramPutsLeLast) {
  Registry r;
  auto& f = r.histogram_family("t_snapshot_seconds", "Snapshots.", {"table"}, {1, 10});
  f.labels({"items"}).observe(2);
  std::string text = r.render();
  EXPECT_NE(text.find("t_snapshot_seconds_bucket{table=\"items\",le=\"1\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("t_snapshot_seconds_bucket{table=\"items\",le=\"10\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("t_snapshot_seconds_bucket{table=\"items\",le=\"+Inf\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("t_snapshot_seconds_sum{table=\"items\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("t_snapshot_seconds_count{table=\"items\"} 1\n"), std::string::npos) << text;
}

TEST(Metrics, CallbackGaugeIsReadWhenRendering) {
  Registry r;
  double v = 1;
  r.callback_gauge("t_log_bytes", "Log bytes.", [&v] { return v; });
  EXPECT_NE(r.render().find("t_log_bytes 1\n"), std::string::npos);
  v = 1e12;
  EXPECT_NE(r.render().find("t_log_bytes 1e+12\n"), std::string::npos) << r.render();
}

TEST(Metrics, NamingConventionsAreEnforced) {
  Registry r;
  EXPECT_THROW(r.counter("t_requests", "no _total"), std::invalid_argument);
  EXPECT_THROW(r.gauge("t_things_total", "gauge with _total"), std::invalid_argument);
  EXPECT_THROW(r.gauge("1abc", "bad name"), std::invalid_argument);
  EXPECT_THROW(r.gauge("a-b", "bad name"), std::invalid_argument);
  EXPECT_THROW(r.counter_family("t_x_total", "bad label", {"__reserved"}), std::invalid_argument);
  EXPECT_THROW(r.counter_family("t_y_total", "bad label", {"a b"}), std::invalid_argument);
  EXPECT_THROW(r.counter_family("t_z_total", "twice", {"a", "a"}), std::invalid_argument);
  EXPECT_THROW(r.histogram_family("t_h_seconds", "le", {"le"}, {1}), std::invalid_argument);
  EXPECT_THROW(r.histogram("t_h2_seconds", "unsorted", {1, 0.5}), std::invalid_argument);
  EXPECT_THROW(r.histogram("t_h3_seconds", "empty", {}), std::invalid_argument);
  EXPECT_THROW(r.histogram("t_h4_seconds", "inf", {1, std::numeric_limits<double>::infinity()}),
               std::invalid_argument);
  r.gauge("t_ok:sub_metric", "colons are fine in metric names");
  EXPECT_THROW(r.gauge("t_ok:sub_metric", "twice"), std::invalid_argument);
  // nothing half-registered by the failures
  EXPECT_EQ(r.render(), "# HELP t_ok:sub_metric colons are fine in metric names\n# TYPE t_ok:sub_metric gauge\nt_ok:sub_metric 0\n");
}

TEST(Metrics, FormatsValuesAsPrometheusReadsThem) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(1), "1");
  EXPECT_EQ(format_value(-2.5), "-2.5");
  EXPECT_EQ(format_value(0.005), "0.005");
  EXPECT_EQ(format_value(0.1), "0.1");
  EXPECT_EQ(format_value(1e-9), "1e-09");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::nan("")), "NaN");
  EXPECT_EQ(escape_label_value("plain"), "plain");
  EXPECT_EQ(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(escape_help("say \"hi\"\\\n"), "say \"hi\"\\\\\\n");  // quotes stay in HELP
}

TEST(Metrics, UpdatesFromManyThreadsAreNotLost) {
  Registry r;
  Counter& c = r.counter("t_n_total", "n");
  Gauge& g = r.gauge("t_g", "g");
  Histogram& h = r.histogram("t_h_seconds", "h", latency_buckets(), true);
  auto& f = r.counter_family("t_f_total", "f", {"k"});
  constexpr int kThreads = 8, kEach = 50000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      Counter& mine = f.labels({t % 2 ? "odd" : "even"});
      for (int i = 0; i < kEach; ++i) {
        c.inc();
        g.add(1);
        h.observe(0.002);
        mine.inc();
      }
    });
  std::thread renderer([&] {
    for (int i = 0; i < 50; ++i) (void)r.render();
  });
  for (auto& t : ts) t.join();
  renderer.join();
  EXPECT_EQ(c.value(), uint64_t(kThreads) * kEach);
  EXPECT_DOUBLE_EQ(g.value(), double(kThreads) * kEach);
  EXPECT_EQ(h.count(), uint64_t(kThreads) * kEach);
  EXPECT_NEAR(h.sum(), 0.002 * kThreads * kEach, 1e-6);
  EXPECT_EQ(f.labels({"odd"}).value() + f.labels({"even"}).value(), uint64_t(kThreads) * kEach);
  auto p50 = h.quantile_last_minute(0.5);
  ASSERT_TRUE(p50);
  EXPECT_GT(*p50, 0.001);
  EXPECT_LE(*p50, 0.0025);
}

TEST(Metrics, QuantilesOverTheLastMinute) {
  Histogram h({0.001, 0.01, 0.1, 1}, true);
  EXPECT_FALSE(h.quantile_last_minute_at(0.5, 1000));  // nothing observed
  // 100 observations at second 1000: 90 fast (<= 1 ms), 10 slow (in (0.1, 1])
  for (int i = 0; i < 90; ++i) h.observe_at(0.0005, 1000);
  for (int i = 0; i < 10; ++i) h.observe_at(0.5, 1000);
  auto p50 = h.quantile_last_minute_at(0.5, 1000);
  auto p99 = h.quantile_last_minute_at(0.99, 1000);
  ASSERT_TRUE(p50 && p99);
  EXPECT_NEAR(*p50, 0.001 * 50 / 90, 1e-12);       // interpolated inside [0, 0.001]
  EXPECT_NEAR(*p99, 0.1 + 0.9 * (99 - 90) / 10.0, 1e-12);  // inside (0.1, 1]
  // still there 59 s later, gone after 60 s
  EXPECT_TRUE(h.quantile_last_minute_at(0.5, 1059));
  EXPECT_FALSE(h.quantile_last_minute_at(0.5, 1060));
  // the ring slot of second 1000 is reused by second 1060: cleared first
  h.observe_at(0.05, 1060);
  auto only = h.quantile_last_minute_at(0.5, 1060);
  ASSERT_TRUE(only);
  EXPECT_GT(*only, 0.01);
  EXPECT_LE(*only, 0.1);
  // above the largest bound: the largest bound is all we can say
  Histogram big({0.1, 1}, true);
  big.observe_at(30, 5);
  EXPECT_EQ(big.quantile_last_minute_at(0.99, 5), 1.0);
  // the cumulative totals are not windowed
  EXPECT_EQ(h.count(), 101u);
  // without keep_last_minute there is no estimate
  Histogram plain({1});
  plain.observe(0.5);
  EXPECT_FALSE(plain.quantile_last_minute(0.5));
  EXPECT_FALSE(h.quantile_last_minute_at(1.0, 1060));
}

// The format rules of the text exposition 0.0.4, checked line by line:
// every family has HELP then TYPE before its samples, samples belong to the
// family just declared (histograms: _bucket/_sum/_count), label sets are
// well formed, values parse, histogram buckets are cumulative and end in
// +Inf equal to _count, counters end in _total.
static void check_exposition(const std::string& text) {
  static const std::regex help_re(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$)");
  static const std::regex type_re(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
  static const std::regex sample_re(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\\\|\\"|\\n)*",?)*\})? (\S+)$)");
  static const std::regex le_re(R"(le="([^"]*)\")");
  ASSERT_FALSE(text.empty());
  ASSERT_EQ(text.back(), '\n');
  std::istringstream in(text);
  std::string line, family, type, helped;
  std::set<std::string> seen;
  double last_bucket = -1;
  std::string last_bucket_series;
  for (int n = 1; std::getline(in, line); ++n) {
    std::smatch m;
    if (std::regex_match(line, m, help_re)) {
      family = m[1];
      ASSERT_TRUE(seen.insert(family).second) << "family twice: " << line;
      helped = family;
      type.clear();
      last_bucket = -1;
      last_bucket_series.clear();
      continue;
    }
    if (std::regex_match(line, m, type_re)) {
      ASSERT_EQ(m[1], helped) << "TYPE without its HELP: " << line;
      type = m[2];
      if (type == "counter") {
        EXPECT_TRUE(family.ends_with("_total")) << family;
      }
      continue;
    }
    ASSERT_TRUE(std::regex_match(line, m, sample_re)) << "line " << n << ": " << line;
    ASSERT_FALSE(type.empty()) << "sample before TYPE: " << line;
    std::string name = m[1], value = m[5];
    char* end = nullptr;
    std::string v = value == "+Inf" ? "inf" : value == "-Inf" ? "-inf" : value;
    double d = std::strtod(v.c_str(), &end);
    ASSERT_EQ(*end, '\0') << "bad value: " << line;
    if (type == "histogram") {
      std::string labels = m[2];
      std::smatch lm;
      if (name == family + "_bucket") {
        ASSERT_TRUE(std::regex_search(labels, lm, le_re)) << line;
        std::string series = std::regex_replace(labels, le_re, "");
        if (series != last_bucket_series) last_bucket = -1;
        EXPECT_GE(d, last_bucket) << "buckets not cumulative: " << line;
        last_bucket = d;
        last_bucket_series = series;
      } else if (name == family + "_count") {
        EXPECT_EQ(d, last_bucket) << "_count differs from the +Inf bucket: " << line;
      } else {
        ASSERT_EQ(name, family + "_sum") << line;
      }
    } else {
      ASSERT_EQ(name, family) << line;
    }
  }
}

static SidecarMetrics& busy_sidecar_metrics() {
  static SidecarMetrics m;
  static bool once = [] {
    m.http_requests.labels({"/v1/shape", "200", "live"}).inc(5);
    m.http_requests.labels({"/v1/shape", "400", "initial"}).inc();
    m.live_connections.labels({"long_poll"}).set(3);
    m.live_connections.labels({"sse"}).set(1);
    m.deliveries.inc(7);
    m.sent_bytes.inc(12345);
    m.changes.inc(9);
    for (double v : {0.0004, 0.003, 0.003, 0.02, 0.7, 12.0}) m.commit_to_send.observe(v);
    m.shapes.set(2);
    m.log_memory_bytes.set(4096);
    m.snapshot_duration.observe(0.3);
    m.auth_failures.labels({"expired \"token\"\n"}).inc();
    m.db_reconnects.inc();
    m.ticks_behind.set(0);
    m.lag_seconds.set(0.25);
    return true;
  }();
  (void)once;
  return m;
}

TEST(Metrics, SidecarMetricsFollowTheTextFormat) {
  std::string text = busy_sidecar_metrics().registry.render();
  check_exposition(text);
  for (const char* name : {"shapesync_http_requests_total", "shapesync_live_connections", "shapesync_deliveries_total",
                           "shapesync_sent_bytes_total", "shapesync_changes_total", "shapesync_commit_to_send_seconds",
                           "shapesync_shapes", "shapesync_log_memory_bytes", "shapesync_log_disk_bytes",
                           "shapesync_snapshot_duration_seconds", "shapesync_auth_failures_total",
                           "shapesync_db_reconnects_total", "shapesync_ticks_behind", "shapesync_lag_seconds"})
    EXPECT_NE(text.find(std::string("# TYPE ") + name + ' '), std::string::npos) << name;
  EXPECT_NE(text.find("shapesync_commit_to_send_seconds_count 6\n"), std::string::npos) << text;
  EXPECT_NE(text.find("shapesync_commit_to_send_seconds_bucket{le=\"+Inf\"} 6\n"), std::string::npos);
  EXPECT_NE(text.find("shapesync_auth_failures_total{reason=\"expired \\\"token\\\"\\n\"} 1\n"), std::string::npos);
}

// The Prometheus project's own Python parser (Debian: python3-prometheus-client)
// reads the exposition back: same families, types, samples and values.
TEST(Metrics, PrometheusClientParserReadsTheExposition) {
  const char* python = "/usr/bin/python3";
  if (access(python, X_OK) != 0 ||
      std::system("/usr/bin/python3 -c 'import prometheus_client.parser' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3-prometheus-client is not installed (scripts/install-deps.sh installs it)";
  char dir[] = "/tmp/metrics-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string in = std::string(dir) + "/metrics.txt", out = std::string(dir) + "/parsed.txt";
  std::ofstream(in) << busy_sidecar_metrics().registry.render();
  std::string script =
      "import sys\n"
      "from prometheus_client.parser import text_string_to_metric_families\n"
      "for f in text_string_to_metric_families(open(sys.argv[1]).read()):\n"
      "    for s in f.samples:\n"
      "        labels = ','.join('%s=%s' % (k, v) for k, v in sorted(s.labels.items()))\n"
      "        print(f.type, f.name, s.name, labels, repr(float(s.value)))\n";
  std::string py = std::string(dir) + "/parse.py";
  std::ofstream(py) << script;
  std::string cmd = std::string(python) + " " + py + " " + in + " > " + out + " 2>&1";
  int rc = std::system(cmd.c_str());
  std::ifstream parsed(out);
  std::stringstream got;
  got << parsed.rdbuf();
  ASSERT_EQ(rc, 0) << got.str();
  std::string g = got.str();
  // the parser strips _total from counter family names; samples keep it
  EXPECT_NE(g.find("counter shapesync_http_requests shapesync_http_requests_total mode=live,route=/v1/shape,status=200 5.0\n"),
            std::string::npos) << g;
  EXPECT_NE(g.find("gauge shapesync_live_connections shapesync_live_connections kind=sse 1.0\n"), std::string::npos) << g;
  EXPECT_NE(g.find("histogram shapesync_commit_to_send_seconds shapesync_commit_to_send_seconds_bucket le=0.005 3.0\n"),
            std::string::npos) << g;
  EXPECT_NE(g.find("histogram shapesync_commit_to_send_seconds shapesync_commit_to_send_seconds_bucket le=+Inf 6.0\n"),
            std::string::npos) << g;
  EXPECT_NE(g.find("histogram shapesync_commit_to_send_seconds shapesync_commit_to_send_seconds_count  6.0\n"),
            std::string::npos) << g;
  EXPECT_NE(g.find("counter shapesync_auth_failures shapesync_auth_failures_total reason=expired \"token\"\n 1.0\n"),
            std::string::npos) << g;
  EXPECT_NE(g.find("gauge shapesync_lag_seconds shapesync_lag_seconds  0.25\n"), std::string::npos) << g;
  std::remove(in.c_str());
  std::remove(out.c_str());
  std::remove(py.c_str());
  rmdir(dir);
}
