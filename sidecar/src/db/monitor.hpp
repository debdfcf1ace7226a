// What monitoring asks of the database (docs/monitoring.md): the sidecar's
// live report, how far behind the ticks it is, and the dashboard's data.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "db/pg.hpp"

namespace shapesync {

// shapesync.consumer_report_stats(consumer, report): `report` is the JSON
// object docs/monitoring.md describes.
asio::awaitable<void> consumer_report_stats(PgConn& c, const std::string& consumer, const std::string& report);

// The newest tick, and the age in seconds of the first tick after
// `last_read` (0 when there is none): ticks behind and lag.
struct FollowPosition {
  uint64_t newest_tick = 0;
  double lag_seconds = 0;
};
asio::awaitable<FollowPosition> follow_position(PgConn& c, uint64_t last_read);

// shapesync.dashboard_data(): the JSON text GET /dashboard/data answers.
asio::awaitable<std::string> dashboard_data(PgConn& c);

}  // namespace shapesync
