// Metrics of shapesyncd: counters, gauges and histograms rendered in the
// Prometheus text exposition format 0.0.4 (docs/monitoring.md, "Metrics").
//
// Pure: no socket, no database, no global. A Registry owns its metrics;
// whoever serves GET /metrics calls render(). Conventions (checked when a
// metric is registered, std::invalid_argument otherwise): names match
// [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* and not
// "__"-prefixed, counters end in "_total", "le" is reserved for
// histograms, a name is registered once.
//
// Thread safety: updating a metric (inc, set, add, observe) is a few
// relaxed atomic operations, no lock, from any thread. Looking up a
// labelled child (Family::labels) takes the family's mutex: do it once and
// keep the reference (children live as long as the registry). Registering
// and render() take the registry's mutex; callback gauges run inside
// render(), on the caller's thread, so they must be cheap and must not
// call back into the registry.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shapesync::metrics {

// Content-Type of render()'s output.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Label values, in the order of the family's label names.
using LabelValues = std::vector<std::string>;

// A value that only goes up (or is reset by a restart).
class Counter {
 public:
  void inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void set(double v) { v_.store(v, std::memory_order_relaxed); }
  void add(double d) { v_.fetch_add(d, std::memory_order_relaxed); }
  void sub(double d) { v_.fetch_sub(d, std::memory_order_relaxed); }
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

// Per-second bucket counts of the last minute, for quantile estimates
// (the p50/p99 a sidecar reports to shapesync.consumer_report_stats()).
// One slot per second in a ring of 60; a slot is cleared when a new second
// first lands in it (under a mutex, once per second), otherwise observing
// is one relaxed fetch_add.
class RecentWindow {
 public:
  static constexpr int kSeconds = 60;

  explicit RecentWindow(size_t buckets);
  void observe(size_t bucket, int64_t second);
  // Bucket counts (not cumulative) of the seconds in (now - 60, now].
  std::vector<uint64_t> counts(int64_t now) const;

 private:
  struct Slot {
    std::atomic<int64_t> second{-1};
    std::unique_ptr<std::atomic<uint64_t>[]> counts;
  };
  size_t buckets_;
  std::array<Slot, kSeconds> slots_;
  std::mutex roll_;
};

// Observations counted in fixed buckets (upper bounds, ascending; +Inf is
// implicit), with their sum and count. Optionally also keeps the last
// minute per second, for quantile_last_minute().
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds, bool keep_last_minute = false);

  void observe(double v);
  // Same, at a given second of a steady clock (tests, replay).
  void observe_at(double v, int64_t second);

  const std::vector<double>& bounds() const { return bounds_; }
  // Non-cumulative counts per bucket, the last one being +Inf.
  std::vector<uint64_t> bucket_counts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }
  uint64_t count() const;

  // Estimated q-quantile (0 < q < 1) of the observations of the last minute,
  // by linear interpolation inside the bucket that holds it (as Prometheus'
  // histogram_quantile); nullopt without observations or without
  // keep_last_minute. One in the +Inf bucket is reported as the largest bound.
  std::optional<double> quantile_last_minute(double q) const;
  std::optional<double> quantile_last_minute_at(double q, int64_t now) const;

  // The current second of the steady clock used by observe().
  static int64_t now_second();

 private:
  size_t bucket_of(double v) const;

  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
  std::unique_ptr<RecentWindow> window_;
};

// Bucket bounds, in seconds.
std::vector<double> latency_buckets();   // 0.5 ms .. 10 s: commit-to-send latency
std::vector<double> duration_buckets();  // 10 ms .. 10 min: snapshot durations

// The children of one labelled metric, by label values.
template <typename T>
class Family {
 public:
  // The child for these label values (as many as the family has label
  // names), created on first use. Keep the reference: it stays valid.
  T& labels(const LabelValues& values);

  // Children in label-value order, for rendering.
  std::vector<std::pair<LabelValues, const T*>> children() const;

 private:
  friend class Registry;
  Family(std::vector<std::string> label_names, std::function<std::unique_ptr<T>()> make)
      : label_names_(std::move(label_names)), make_(std::move(make)) {}

  std::vector<std::string> label_names_;
  std::function<std::unique_ptr<T>()> make_;
  mutable std::mutex mu_;
  std::map<LabelValues, std::unique_ptr<T>> children_;
};

// All metrics of a process, rendered in registration order.
class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  Counter& counter(const std::string& name, const std::string& help);
  Gauge& gauge(const std::string& name, const std::string& help);
  // A gauge whose value is read when rendering.
  void callback_gauge(const std::string& name, const std::string& help, std::function<double()> read);
  Histogram& histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                       bool keep_last_minute = false);

  Family<Counter>& counter_family(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names);
  Family<Gauge>& gauge_family(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names);
  Family<Histogram>& histogram_family(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names, std::vector<double> bounds);

  // Every metric in the text exposition format 0.0.4, HELP and TYPE first.
  std::string render() const;

 private:
  struct Entry;
  Entry& add(const std::string& name, const std::string& help, const char* type,
             const std::vector<std::string>& label_names);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_;
};

// Text format helpers (exposed for tests).
std::string escape_label_value(std::string_view v);  // \ " and newline
std::string escape_help(std::string_view v);         // \ and newline
std::string format_value(double v);                 // shortest round-trip, +Inf, -Inf, NaN
bool valid_metric_name(std::string_view name);
bool valid_label_name(std::string_view name);

// The metrics shapesyncd exposes (docs/monitoring.md lists them), registered
// with their conventional names; the HTTP, shape and database layers update
// them, GET /metrics renders `registry`.
struct SidecarMetrics {
  SidecarMetrics();

  Registry registry;
  Family<Counter>& http_requests;        // {route, status, mode}: mode initial|catchup|live
  Family<Gauge>& live_connections;       // {kind}: long_poll|sse
  Counter& deliveries;                   // changes written to live clients
  Counter& sent_bytes;                   // response body bytes
  Counter& changes;                      // changes read from the change log
  Histogram& commit_to_send;             // seconds, last minute kept for p50/p99
  Gauge& shapes;                         // shapes held
  Gauge& log_memory_bytes;
  Gauge& log_disk_bytes;
  // Memory budget (--max-memory; docs/sidecar.md "Memory budget").
  Gauge& memory_held_bytes;              // what the shape store charges itself for
  Gauge& memory_budget_bytes;            // --max-memory (0: none)
  Gauge& evicted_shapes;                 // evicted shapes remembered for a cheap reload
  Counter& memory_spills;                // logs spilled because of the budget (a record each, in pack files)
  Counter& memory_spilled_bytes;         // memory they freed
  Counter& shape_evictions;              // shapes evicted from memory
  Counter& shape_reloads;                // evicted shapes reloaded from their segment files
  Gauge& memory_inflight_bytes;          // decoded batches read and not yet applied (counted in held)
  Gauge& memory_inflight_peak_bytes;     // the most ever in flight
  Gauge& allocator_allocated_bytes;      // malloc'd and not freed (util/allocator.hpp)
  Gauge& allocator_resident_bytes;       // the allocator's pages in RAM (jemalloc only)
  Gauge& resident_bytes;                 // the process's RSS
  Counter& fetch_shrinks;                // follower reads over their cap: the span of ticks shrank
  Gauge& fetch_span_ticks;               // ticks the follower's next read may span
  Histogram& snapshot_duration;          // seconds
  Family<Counter>& auth_failures;        // {reason}
  Family<Counter>& mutations;            // {status}: applied, conflict, rejected, aborted
  Histogram& write_duration;             // seconds, one POST /v1/mutations in the database
  Counter& db_reconnects;
  Gauge& ticks_behind;                   // last tick - last tick read
  Gauge& lag_seconds;                    // age of the oldest ticked change not yet read
};

}  // namespace shapesync::metrics
