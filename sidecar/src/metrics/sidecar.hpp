// shapesyncd's own metrics, one set per process (docs/monitoring.md,
// "Metrics"): SidecarMetrics plus the gauges /metrics had before the metrics
// library, and the cheap hooks the HTTP, network and auth code call.
//
// One set per process, like a Prometheus client library's default registry:
// the counters are process facts (bytes this process wrote), and the auth code
// can count a refusal with one call and no plumbing. Everything here is
// registered once, at first use; updating is relaxed atomics.
//
// Hot paths (a parked long-poll's answer, an SSE event) call delivered() and
// sent(): two or three relaxed fetch_adds and a clock read, no lock, no
// allocation. count_request() looks its counter up in a fixed table of
// atomic pointers (the family's mutex only the first time a combination is seen).
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>

#include "metrics/metrics.hpp"

namespace shapesync::metrics {

// Route label values of shapesync_http_requests_total.
enum class Route : uint8_t { kShape, kMutations, kHealth, kMetrics, kDashboard, kDashboardData, kOther, kCount };
// Mode label values: an initial sync (offset=-1), a catch-up read, a live
// request (live=true long-poll or SSE), or not a shape request.
enum class Mode : uint8_t { kInitial, kCatchup, kLive, kNone, kCount };
// Live connection kinds (shapesync_live_connections{kind}).
enum class LiveKind : uint8_t { kLongPoll, kSse };

struct ProcessMetrics : SidecarMetrics {
  ProcessMetrics();

  // The gauges and counters of the hand-written /metrics of 0.1.0, kept.
  Gauge& waiting_requests;
  Gauge& initial_requests;
  Gauge& existing_requests;
  Gauge& open_connections;
  Gauge& db_ready;
  Gauge& last_tick;
  Gauge& window_bytes;
  Gauge& window_batches;
  Counter& log_entries;
  Gauge& report_age_seconds;  // since the last successful consumer_report_stats()

  Gauge& long_poll;  // live_connections{kind="long_poll"}
  Gauge& sse;        // live_connections{kind="sse"}

  // One request answered.
  void count_request(Route r, unsigned status, Mode m);
  // A live delivery: `bytes` of changes written to a live client, whose
  // oldest change's tick was recorded at commit_us (µs since the Unix epoch;
  // 0: unknown, then the latency is observed as 0). Counts deliveries and
  // observes the commit-to-send latency, always together, so the
  // histogram's _count equals shapesync_deliveries_total.
  void delivered(int64_t commit_us);
  // Response body bytes written.
  void sent(uint64_t bytes) { sent_bytes.inc(bytes); }
  Gauge& live(LiveKind k) { return k == LiveKind::kSse ? sse : long_poll; }

  // A counter of the children of shapesync_http_requests_total summed (for
  // the reporter's requests per second).
  uint64_t requests_total() const { return requests_total_.load(std::memory_order_relaxed); }

 private:
  static constexpr unsigned kStatuses[] = {200, 202, 204, 304, 400, 401, 403, 404, 405, 409, 413, 415, 429, 500, 503};
  static constexpr size_t kStatusSlots = std::size(kStatuses);
  static constexpr size_t kSlots =
      static_cast<size_t>(Route::kCount) * static_cast<size_t>(Mode::kCount) * kStatusSlots;
  std::array<std::atomic<Counter*>, kSlots> request_slots_{};
  std::atomic<uint64_t> requests_total_{0};
};

// The process's metrics (created at first use).
ProcessMetrics& process_metrics();

// The auth code's hook: one request refused by authentication, by reason
// (a short fixed word: "missing_token", "bad_signature", "expired", ...; never
// text from the request). Takes the family's mutex: not for a hot path that
// refuses floods — keep a reference to auth_failures.labels({reason}) there.
void count_auth_failure(std::string_view reason);

// Microseconds since the Unix epoch, now.
int64_t unix_now_us();

}  // namespace shapesync::metrics
