// shapesyncd's process metrics (see sidecar.hpp).
#include "metrics/sidecar.hpp"

#include <chrono>
#include <string>

namespace shapesync::metrics {

namespace {

const char* route_name(Route r) {
  switch (r) {
    case Route::kShape: return "/v1/shape";
    case Route::kMutations: return "/v1/mutations";
    case Route::kHealth: return "/v1/health";
    case Route::kMetrics: return "/metrics";
    case Route::kDashboard: return "/dashboard";
    case Route::kDashboardData: return "/dashboard/data";
    default: return "other";
  }
}

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kInitial: return "initial";
    case Mode::kCatchup: return "catchup";
    case Mode::kLive: return "live";
    default: return "none";
  }
}

}  // namespace

ProcessMetrics::ProcessMetrics()
    : waiting_requests(registry.gauge("shapesync_waiting_requests",
                                      "Requests waiting for a change of their shape (long-poll, SSE between events).")),
      initial_requests(registry.gauge("shapesync_initial_requests", "Initial-sync requests in progress (offset=-1).")),
      existing_requests(registry.gauge("shapesync_existing_requests",
                                       "Other shape requests in progress, parked long-polls and SSE streams included.")),
      open_connections(registry.gauge("shapesync_open_connections", "Open client connections.")),
      db_ready(registry.gauge("shapesync_db_ready", "1 when the sidecar follows the database.")),
      last_tick(registry.gauge("shapesync_last_tick", "The last tick applied to the shapes.")),
      window_bytes(registry.gauge("shapesync_window_bytes",
                                  "Recent decoded batches kept for new shapes to catch up from.")),
      window_batches(registry.gauge("shapesync_window_batches", "Batches in that window.")),
      log_entries(registry.counter("shapesync_log_entries_total",
                                   "Messages appended to shape logs (a change in k shapes counts k).")),
      report_age_seconds(registry.gauge("shapesync_report_age_seconds",
                                        "Seconds since this sidecar's last successful report to the database "
                                        "(shapesync.consumer_report_stats); -1 before the first.")),
      long_poll(live_connections.labels({"long_poll"})),
      sse(live_connections.labels({"sse"})) {
  report_age_seconds.set(-1);
}

void ProcessMetrics::count_request(Route r, unsigned status, Mode m) {
  requests_total_.fetch_add(1, std::memory_order_relaxed);
  size_t si = kStatusSlots;
  for (size_t i = 0; i < kStatusSlots; ++i)
    if (kStatuses[i] == status) si = i;
  if (si == kStatusSlots) {  // an unusual status: looked up under the family's mutex
    http_requests.labels({route_name(r), std::to_string(status), mode_name(m)}).inc();
    return;
  }
  size_t slot = (static_cast<size_t>(r) * static_cast<size_t>(Mode::kCount) + static_cast<size_t>(m)) * kStatusSlots + si;
  Counter* c = request_slots_[slot].load(std::memory_order_acquire);
  if (!c) {
    c = &http_requests.labels({route_name(r), std::to_string(status), mode_name(m)});
    request_slots_[slot].store(c, std::memory_order_release);  // the same pointer whoever wins
  }
  c->inc();
}

void ProcessMetrics::delivered(int64_t commit_us) {
  deliveries.inc();
  double s = 0;
  if (commit_us > 0) {
    int64_t d = unix_now_us() - commit_us;
    s = d > 0 ? static_cast<double>(d) / 1e6 : 0.0;
  }
  commit_to_send.observe(s);
}

ProcessMetrics& process_metrics() {
  static ProcessMetrics m;
  return m;
}

void count_auth_failure(std::string_view reason) {
  process_metrics().auth_failures.labels({std::string(reason)}).inc();
}

int64_t unix_now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace shapesync::metrics
