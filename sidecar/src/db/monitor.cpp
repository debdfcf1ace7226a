// What monitoring asks of the database.
#include "db/monitor.hpp"

namespace shapesync {

asio::awaitable<void> consumer_report_stats(PgConn& c, const std::string& consumer, const std::string& report) {
  PgParams args{consumer, report};
  co_await c.exec("SELECT shapesync.consumer_report_stats($1, $2::jsonb)", args);
}

asio::awaitable<FollowPosition> follow_position(PgConn& c, uint64_t last_read) {
  PgParams args{std::to_string(last_read)};
  PgResult r = co_await c.exec(
      "SELECT coalesce((SELECT max(tick_id) FROM shapesync.ticks), 0), "
      "coalesce((SELECT extract(epoch FROM clock_timestamp() - tick_time) FROM shapesync.ticks "
      "          WHERE tick_id > $1::bigint ORDER BY tick_id LIMIT 1), 0)",
      args);
  FollowPosition p;
  p.newest_tick = std::stoull(std::string(r.get(0, 0)));
  p.lag_seconds = std::max(0.0, std::stod(std::string(r.get(0, 1))));
  co_return p;
}

asio::awaitable<std::string> dashboard_data(PgConn& c) {
  PgResult r = co_await c.exec("SELECT shapesync.dashboard_data()");
  co_return std::string(r.get(0, 0));
}

}  // namespace shapesync
