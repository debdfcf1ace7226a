// What following the change log asks of the database.
#include "db/follow.hpp"

#include "db/text_array.hpp"

namespace shapesync {

namespace {
// Advisory lock (class, key) that one self-ticking sidecar holds; 21320 is the build locks' class (db/snapshots.cpp).
constexpr const char* kTickerLock = "21321, 0";
}  // namespace

asio::awaitable<std::string> start_following(PgConn& c) {
  co_await c.exec("SET synchronous_commit = on");
  PgResult ver = co_await c.exec("SELECT extversion FROM pg_extension WHERE extname = 'shapesync'");
  if (ver.rows() == 0)
    throw PgError("extension shapesync is not installed in this database (CREATE EXTENSION shapesync)", "", false);
  std::string have(ver.get(0, 0));
  co_await c.exec("LISTEN shapesync");
  co_return have;
}

asio::awaitable<uint64_t> newest_tick(PgConn& c) {
  PgResult r = co_await c.exec("SELECT coalesce(max(tick_id), 0) FROM shapesync.ticks");
  co_return std::stoull(std::string(r.get(0, 0)));
}

asio::awaitable<uint64_t> log_horizon(PgConn& c) {
  PgResult h = co_await c.exec("SELECT horizon_tick FROM shapesync.log_state");
  co_return std::stoull(std::string(h.get(0, 0)));
}

asio::awaitable<bool> worker_running(PgConn& c) {
  PgResult w = co_await c.exec("SELECT shapesync.worker_pid()");
  co_return !w.is_null(0, 0);
}

asio::awaitable<bool> try_ticker_lock(PgConn& c) {
  PgResult got = co_await c.exec(std::string("SELECT pg_try_advisory_lock(") + kTickerLock + ")");
  co_return got.get(0, 0) == "t";
}

asio::awaitable<void> ticker_unlock(PgConn& c) {
  co_await c.exec(std::string("SELECT pg_advisory_unlock(") + kTickerLock + ")");
}

asio::awaitable<std::optional<uint64_t>> tick_and_notify(PgConn& c) {
  PgResult t =
      co_await c.exec("SELECT t, pg_notify('shapesync', t::text) FROM shapesync.tick() t WHERE t IS NOT NULL");
  if (t.rows() == 0) co_return std::nullopt;
  co_return std::stoull(std::string(t.get(0, 0)));
}

asio::awaitable<void> maintain(PgConn& c) { co_await c.exec("SELECT * FROM shapesync.maintain()"); }

asio::awaitable<uint64_t> consumer_report(PgConn& c, const std::string& consumer, uint64_t last_tick) {
  PgParams args{consumer, std::to_string(last_tick)};
  PgResult r = co_await c.exec("SELECT shapesync.consumer_report($1, $2::bigint)", args);
  co_return std::stoull(std::string(r.get(0, 0)));
}

asio::awaitable<void> report_shapes(PgConn& c, const std::vector<std::string>& handles,
                                    const std::vector<std::string>& offsets) {
  PgParams args{text_array_literal(handles), text_array_literal(offsets)};
  co_await c.exec("SELECT shapesync.report_shapes($1::text[], $2::text[])", args);
}

asio::awaitable<std::string> database_now(PgConn& c) {
  PgResult r = co_await c.exec("SELECT now()::text");
  co_return std::string(r.get(0, 0));
}

asio::awaitable<std::vector<Invalidation>> invalidations_since(PgConn& c, const std::string& cursor) {
  PgParams args{cursor};
  PgResult r = co_await c.exec(
      "SELECT handle, coalesce(reason, ''), invalidated_at::text FROM shapesync.shapes "
      "WHERE state <> 'active' AND invalidated_at > $1::timestamptz ORDER BY invalidated_at",
      args);
  std::vector<Invalidation> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({std::string(r.get(i, 0)), std::string(r.get(i, 1)), std::string(r.get(i, 2))});
  co_return out;
}

}  // namespace shapesync
