// What following the change log asks of the database: the session setup and
// checks of the follower's connection, the newest tick, ticking without the
// extension's worker (one sidecar at a time, under a session lock), retention
// (consumer reports, maintain()), shape progress reports, and invalidations
// recorded by others.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "db/pg.hpp"

namespace shapesync {

// The extension version this sidecar is built for. An older one (0.1.0)
// still works while it is upgraded in place (ALTER EXTENSION shapesync UPDATE,
// under live clients): shapes are then validated by get_or_create_shape()
// alone, and the sidecar says so in its log.
inline constexpr const char* kCurrentExtension = "0.2.0";

// Prepares the follower's connection: durable commits, LISTEN shapesync;
// returns the extension's version. Throws PgError when it is not installed.
asio::awaitable<std::string> start_following(PgConn& c);
// The newest tick id (0 when none).
asio::awaitable<uint64_t> newest_tick(PgConn& c);
// The change log's horizon: every tick at or below it may be gone.
asio::awaitable<uint64_t> log_horizon(PgConn& c);
// True when the extension's background worker is ticking.
asio::awaitable<bool> worker_running(PgConn& c);
// The session lock that lets one sidecar tick when there is no worker.
asio::awaitable<bool> try_ticker_lock(PgConn& c);
asio::awaitable<void> ticker_unlock(PgConn& c);
// Records a tick (when something may be new) and notifies; its id, or nullopt.
asio::awaitable<std::optional<uint64_t>> tick_and_notify(PgConn& c);
// shapesync.maintain(): rotates the change log when due.
asio::awaitable<void> maintain(PgConn& c);
// Tells the database how far `consumer` has read; returns the log's horizon.
asio::awaitable<uint64_t> consumer_report(PgConn& c, const std::string& consumer, uint64_t last_tick);
// Records the latest offsets of shapes (one statement).
asio::awaitable<void> report_shapes(PgConn& c, const std::vector<std::string>& handles,
                                    const std::vector<std::string>& offsets);
// The database's clock, as text (the cursor of invalidations_since).
asio::awaitable<std::string> database_now(PgConn& c);
struct Invalidation {
  std::string handle, reason, at;
};
// Shapes invalidated after `cursor` (a timestamptz's text), oldest first.
asio::awaitable<std::vector<Invalidation>> invalidations_since(PgConn& c, const std::string& cursor);

}  // namespace shapesync
