// The sidecar's monitoring that needs the database (docs/monitoring.md): its
// live report to shapesync.consumer_report_stats() every --report-interval,
// off the tick path on a connection of its own, and the data of GET
// /dashboard/data. Above shapes/ (it reads the store and the process metrics),
// below http/ (which serves what it builds).
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "db/pool.hpp"
#include "metrics/sidecar.hpp"
#include "shapes/service.hpp"

namespace shapesync::metrics {

class Monitor {
 public:
  Monitor(asio::io_context& io, ShapeSource& shapes);

  // Reports every --report-interval until shutdown; never throws.
  asio::awaitable<void> run_reporter();
  // shapesync.dashboard_data() as JSON text. Throws PgError.
  asio::awaitable<std::string> dashboard_data();

  // The report (docs/monitoring.md, "What the sidecar reports"), with rates
  // over the time since the previous call. Called by run_reporter (one
  // coroutine); public for tests.
  std::string build_report();

 private:
  ShapeSource& shapes_;
  const Config& cfg_;
  ProcessMetrics& m_;
  PgPool pool_;
  using Clock = std::chrono::steady_clock;
  // requests per shape at the previous report, by handle
  std::unordered_map<std::string, uint64_t> prev_requests_;
  Clock::time_point prev_at_{};
  // (time, process requests total) over the last minute, for requests_per_second
  std::deque<std::pair<Clock::time_point, uint64_t>> samples_;
};

}  // namespace shapesync::metrics
