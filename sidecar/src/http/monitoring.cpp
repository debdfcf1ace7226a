// GET /metrics, GET /dashboard, GET /dashboard/data, and the live-client
// bookkeeping behind shapesync_live_connections (docs/monitoring.md). All
// three routes are protected like /metrics (App::metrics_authorized).
#include <mutex>

#include "db/errors.hpp"
#include "http/app.hpp"
#include "metrics/dashboard.hpp"
#include "metrics/monitor.hpp"
#include "util/allocator.hpp"
#include "util/log.hpp"

namespace shapesync {

namespace {

// Raises a counter to `total` (a count kept elsewhere, read at scrape time).
void catch_up(metrics::Counter& c, uint64_t total) {
  uint64_t have = c.value();
  if (total > have) c.inc(total - have);
}

}  // namespace

void App::live_begin(Shape& s, metrics::LiveKind k) {
  s.live_clients.fetch_add(1, std::memory_order_relaxed);
  pm_.live(k).add(1);
}

void App::live_end(Shape& s, metrics::LiveKind k) {
  s.live_clients.fetch_sub(1, std::memory_order_relaxed);
  pm_.live(k).sub(1);
}

Response App::metrics(const Request& req) {
  // The figures the store keeps under its lock, read once per scrape.
  StoreStats st = store_.stats();
  {
    static std::mutex scrape;  // two scrapes at once must not both catch a counter up
    std::lock_guard lk(scrape);
    catch_up(pm_.changes, st.applied_changes);
    catch_up(pm_.log_entries, st.appended_entries);
    catch_up(pm_.memory_spills, st.pressure_spills);
    catch_up(pm_.memory_spilled_bytes, st.pressure_spilled_bytes);
    catch_up(pm_.shape_evictions, st.evictions);
    catch_up(pm_.shape_reloads, st.reloads);
    catch_up(pm_.fetch_shrinks, st.fetch_shrinks);
  }
  pm_.memory_held_bytes.set(static_cast<double>(st.held_bytes));
  pm_.memory_budget_bytes.set(st.max_memory == SIZE_MAX ? 0.0 : static_cast<double>(st.max_memory));
  pm_.evicted_shapes.set(static_cast<double>(st.evicted_shapes));
  pm_.shapes.set(static_cast<double>(st.shapes));
  pm_.log_memory_bytes.set(static_cast<double>(st.log_memory_bytes));
  pm_.log_disk_bytes.set(static_cast<double>(st.log_disk_bytes));
  pm_.waiting_requests.set(static_cast<double>(st.waiting));
  pm_.window_bytes.set(static_cast<double>(st.window_bytes));
  pm_.memory_inflight_bytes.set(static_cast<double>(st.inflight_bytes));
  pm_.memory_inflight_peak_bytes.set(static_cast<double>(st.inflight_peak_bytes));
  pm_.fetch_span_ticks.set(static_cast<double>(st.fetch_span));
  AllocatorStats as = allocator_stats();
  pm_.allocator_allocated_bytes.set(static_cast<double>(as.allocated));
  pm_.allocator_resident_bytes.set(static_cast<double>(as.resident));
  pm_.resident_bytes.set(static_cast<double>(as.process_rss));
  pm_.window_batches.set(static_cast<double>(st.window_batches));
  pm_.last_tick.set(static_cast<double>(st.last_tick));
  pm_.initial_requests.set(initial_requests_.load());
  pm_.existing_requests.set(existing_requests_.load());
  pm_.db_ready.set(shapes_.db_ready() ? 1 : 0);
  if (connections_) pm_.open_connections.set(static_cast<double>(connections_()));
  Response res{http::status::ok, req.version()};
  res.set(http::field::server, "shapesyncd/" SHAPESYNC_VERSION);
  res.set(http::field::content_type, metrics::kContentType);
  res.set(http::field::cache_control, "no-store");
  res.body() = pm_.registry.render();
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  return res;
}

Response App::dashboard(const Request& req) const {
  Response res{http::status::ok, req.version()};
  res.set(http::field::server, "shapesyncd/" SHAPESYNC_VERSION);
  res.set(http::field::content_type, "text/html; charset=utf-8");
  res.set(http::field::cache_control, "no-store");
  // the page loads nothing from elsewhere; keep it that way
  res.set("content-security-policy",
          "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
          "img-src 'self' data:");
  res.set("x-content-type-options", "nosniff");
  res.set("referrer-policy", "no-referrer");  // the URL may carry ?token=
  res.body() = std::string(metrics::dashboard_html());
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  return res;
}

asio::awaitable<Response> App::dashboard_data(const Request& req) {
  if (!monitor_)
    co_return error_503(req, R"({"message":"monitoring is not running in this process"})", 10);
  std::string body;
  std::optional<PgError> failed;
  try {
    body = co_await monitor_->dashboard_data();
  } catch (const PgError& e) {
    failed = e;
  }
  if (failed) co_return pg_failure_response(req, *failed, "reading the dashboard's data", "EXECUTE");
  Response res = json_response(req, http::status::ok, std::move(body));
  res.set(http::field::cache_control, "no-store");
  co_return res;
}

}  // namespace shapesync
