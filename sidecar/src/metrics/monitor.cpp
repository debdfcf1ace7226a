// The sidecar's live reports and the dashboard's data (see monitor.hpp).
#include "metrics/monitor.hpp"

#include <ctime>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "db/errors.hpp"
#include "db/monitor.hpp"
#include "util/log.hpp"

namespace shapesync::metrics {

namespace {

// "2026-12-06T17:40:12.123456Z"
std::string iso8601_us(int64_t us) {
  std::time_t secs = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(us % 1000000));
  return buf;
}

}  // namespace

Monitor::Monitor(asio::io_context& io, ShapeSource& shapes)
    : shapes_(shapes),
      cfg_(shapes.config()),
      m_(process_metrics()),
      pool_(io.get_executor(), cfg_.database_url, 1, "SET statement_timeout = 10000") {}

std::string Monitor::build_report() {
  auto now = Clock::now();
  double interval = prev_at_ == Clock::time_point{} ? 0 : std::chrono::duration<double>(now - prev_at_).count();
  prev_at_ = now;

  nlohmann::json j;
  j["address"] = cfg_.listen_host + ":" + std::to_string(cfg_.listen_port);
  j["version"] = SHAPESYNC_VERSION;
  j["live_clients"] = {{"long_poll", static_cast<int64_t>(m_.long_poll.value())},
                       {"sse", static_cast<int64_t>(m_.sse.value())}};
  // requests per second over the last minute (or since the first sample)
  uint64_t total = m_.requests_total();
  samples_.emplace_back(now, total);
  while (samples_.size() > 1 && now - samples_.front().first > std::chrono::seconds(60)) samples_.pop_front();
  double span = std::chrono::duration<double>(now - samples_.front().first).count();
  j["requests_per_second"] = span > 0 ? static_cast<double>(total - samples_.front().second) / span : 0.0;
  auto p50 = m_.commit_to_send.quantile_last_minute(0.5), p99 = m_.commit_to_send.quantile_last_minute(0.99);
  j["latency_seconds"] = {{"p50", p50 ? nlohmann::json(*p50) : nlohmann::json(nullptr)},
                          {"p99", p99 ? nlohmann::json(*p99) : nlohmann::json(nullptr)}};

  nlohmann::json shapes = nlohmann::json::array();
  std::unordered_map<std::string, uint64_t> seen;
  for (auto& u : shapes_.store().usage()) {
    const Shape& s = *u.shape;
    uint64_t req = s.requests.load(std::memory_order_relaxed);
    auto prev = prev_requests_.find(s.handle);
    uint64_t before = prev == prev_requests_.end() ? 0 : prev->second;
    nlohmann::json e = {{"handle", s.handle},
                        {"live_clients", std::max(0, s.live_clients.load(std::memory_order_relaxed))},
                        {"requests_per_second", interval > 0 && req >= before ? (req - before) / interval : 0.0},
                        {"log_bytes", u.log_bytes}};
    if (int64_t used = s.last_used_us.load(std::memory_order_relaxed)) e["last_used"] = iso8601_us(used);
    shapes.push_back(std::move(e));
    seen.emplace(s.handle, req);
  }
  prev_requests_ = std::move(seen);
  j["shapes"] = std::move(shapes);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

asio::awaitable<void> Monitor::run_reporter() {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer pause(ex);
  bool failing = false;
  for (;;) {
    pause.expires_after(std::chrono::milliseconds(cfg_.report_interval_ms));
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    if (shapes_.stopping()) co_return;
    std::optional<PgError> failed;
    try {
      auto lease = co_await pool_.acquire();
      std::string report = build_report();
      co_await consumer_report_stats(*lease, cfg_.consumer_name, report);
      uint64_t read = shapes_.store().last_tick();
      FollowPosition fp = co_await follow_position(*lease, read);
      m_.ticks_behind.set(fp.newest_tick > read ? static_cast<double>(fp.newest_tick - read) : 0.0);
      m_.lag_seconds.set(fp.lag_seconds);
    } catch (const PgError& e) {
      failed = e;
    } catch (const std::exception& e) {
      failed = PgError(e.what(), "", false);
    }
    if (failed && !failing && shapes_.db_ready()) log_warn("live report (consumer_report_stats): ", pg_why(*failed));
    if (!failed && failing) log_info("live reports to the database resumed");
    failing = failed.has_value();
  }
}

asio::awaitable<std::string> Monitor::dashboard_data() {
  auto lease = co_await pool_.acquire();
  co_return co_await shapesync::dashboard_data(*lease);
}

}  // namespace shapesync::metrics
