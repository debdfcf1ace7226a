// shapesyncd: wiring only. See shapes/service.hpp, http/app.hpp and net/server.hpp.
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "config.hpp"
#include "http/app.hpp"
#include "metrics/monitor.hpp"
#include "metrics/sidecar.hpp"
#include "http/auth_gate.hpp"
#include "net/server.hpp"
#include "shapes/service.hpp"
#include "util/log.hpp"
#include "writes/service.hpp"

#ifdef SHAPESYNC_JEMALLOC
// jemalloc's settings when shapesyncd is linked with it (MALLOC_CONF in the
// environment still applies on top). Spilled and delivered log entries are
// freed in bursts; jemalloc keeps freed pages for dirty_decay_ms (10 s by
// default) and purges them only when the allocating threads come by. With a
// second of decay, purged by its own background thread, 100 000 held shapes
// under a sustained write load peaked at 1 070 MiB of RSS instead of 1 186 at
// the same throughput (bench/RESULTS.md, "Memory budget").
extern "C" {
extern const char* malloc_conf;
const char* malloc_conf = "background_thread:true,dirty_decay_ms:1000";
}
#endif

namespace {

// An io_context whose pending handlers can be destroyed before the objects
// they refer to. Suspended coroutines (sessions waiting for a request, the
// tick follower, parked writes) are handlers: destroying one runs the
// destructors of its locals, which release connections into the Server and
// waiters from the ShapeStore. io_context does this in its destructor, which
// runs last (it was made first, because everything else is built on it), so
// main calls it while Server, App and ShapeService are still alive.
class IoContext : public boost::asio::io_context {
 public:
  using boost::asio::io_context::io_context;
  // After run() has returned on every thread: destroys every pending handler.
  void destroy_pending_handlers() { shutdown(); }
};

}  // namespace

int main(int argc, char** argv) {
  using namespace shapesync;
  auto parsed = parse_config(argc, argv);
  if (auto* ex = std::get_if<ConfigExit>(&parsed)) {
    (ex->code == 0 ? std::cout : std::cerr) << ex->message;
    return ex->code;
  }
  Config cfg = std::get<Config>(parsed);
  // Many live clients need many descriptors: raise the soft limit to the hard one.
  size_t descriptors = raise_descriptor_limit();
  int threads = cfg.threads > 0 ? cfg.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  std::string segment_dir, segment_error;
  if (!prepare_segment_dir(cfg.data_dir, segment_dir, segment_error)) {
    log_error("--data-dir: ", segment_error);
    return 2;
  }

  // Authorization (docs/auth.md): the JWT keys, or --insecure.
  std::string auth_error, auth_warning;
  std::shared_ptr<AuthGate> gate = AuthGate::create(cfg, &auth_error, &auth_warning);
  if (!gate) {
    log_error(auth_error);
    return 2;
  }
  if (!auth_warning.empty()) log_warn(auth_warning);
  if (!gate->enabled())
    log_warn("*** INSECURE: no JWT key (--insecure): every caller reads whatever the sidecar's database role may "
             "read, with no authorization. Set --jwt-secret, --jwt-public-key or --jwks-file in production. ***");
  else
    log_info("authorization: bearer JWTs required on /v1/shape; role claim \"", cfg.jwt_role_claim, "\"",
             cfg.anonymous_role.empty() ? std::string(", no anonymous role")
                                        : ", anonymous role \"" + cfg.anonymous_role + "\"");

  IoContext io(threads);
  ShapeService shapes(io, cfg);
  shapes.store().set_spill(segment_dir, static_cast<size_t>(cfg.memory_chunks));
  {
    MemoryBudget budget;
    if (cfg.max_memory) budget.max_bytes = cfg.max_memory;
    if (cfg.max_shapes) budget.max_shapes = cfg.max_shapes;
    budget.idle_us = static_cast<int64_t>(cfg.evict_idle_ms) * 1000;
    shapes.store().set_budget(budget);
    log_info("memory budget of the shape store: ",
             cfg.max_memory ? std::to_string(cfg.max_memory) + " bytes" : std::string("none"),
             cfg.max_shapes ? ", at most " + std::to_string(cfg.max_shapes) + " shapes" : std::string(),
             "; idle shapes may be evicted after ", cfg.evict_idle_ms, " ms");
  }
  App app(shapes, gate);
  WriteService writes(io, cfg);  // POST /v1/mutations (docs/mutations.md)
  app.set_writer(&writes);
  // Connections run on io_contexts of their own, one thread each (no strand:
  // asio's strands cost a fifth of the sidecar's CPU in a 20 000-client
  // fan-out, bench/RESULTS.md "Live fan-out"); the database, the ticker and
  // the shape store's work stay on `io`.
  std::vector<std::unique_ptr<IoContext>> conn_io;
  std::vector<asio::io_context*> conn_ptrs;
  for (int i = 0; i < threads; ++i) {
    conn_io.push_back(std::make_unique<IoContext>(1));
    conn_ptrs.push_back(conn_io.back().get());
  }
  Server server(io, app, descriptors, conn_ptrs);
  app.set_connection_gauge([&server] { return server.open_sessions(); });
  // Monitoring (docs/monitoring.md): the shapes layer's events into the
  // process metrics, live reports to the database, the dashboard's data.
  metrics::ProcessMetrics& pm = metrics::process_metrics();
  shapes.set_events({[&pm](double s) { pm.snapshot_duration.observe(s); }, [&pm] { pm.db_reconnects.inc(); }});
  metrics::Monitor monitor(io, shapes);
  app.set_monitor(&monitor);
  try {
    server.listen(cfg.listen_host, cfg.listen_port);
  } catch (const std::exception& e) {
    log_error("cannot listen on ", cfg.listen_host, ":", cfg.listen_port, ": ", e.what());
    return 1;
  }
  log_info("shapesyncd ", SHAPESYNC_VERSION, " listening on http://", cfg.listen_host, ":", cfg.listen_port,
           " with ", threads, " connection thread(s) and ", threads,
           " for the shapes and the database; descriptor limit ", descriptors, ", at most ",
           server.limits().max_total(), " connection(s), ",
           server.limits().max_per_address() ? std::to_string(server.limits().max_per_address()) : std::string("any number"),
           " per client address");
  asio::co_spawn(asio::make_strand(io), shapes.run_ticker(), asio::detached);
  asio::co_spawn(asio::make_strand(io), shapes.run_reporter(), asio::detached);
  asio::co_spawn(asio::make_strand(io), monitor.run_reporter(), asio::detached);
  asio::co_spawn(asio::make_strand(io), server.accept_loop(), asio::detached);

  // Graceful shutdown: stop accepting, let open requests finish (deadline), exit;
  // a second signal exits at once.
  asio::signal_set signals(io, SIGINT, SIGTERM);
  int signals_seen = 0;
  asio::steady_timer drain(io);
  std::chrono::steady_clock::time_point drain_deadline;
  std::function<void()> check_drained = [&] {
    if (server.requests_in_flight() == 0 || std::chrono::steady_clock::now() >= drain_deadline) {
      log_info("stopped");
      io.stop();
      return;
    }
    drain.expires_after(std::chrono::milliseconds(50));
    drain.async_wait([&](auto) { check_drained(); });
  };
  std::function<void(const boost::system::error_code&, int)> on_signal = [&](auto ec, int sig) {
    if (ec) return;
    if (++signals_seen > 1) {
      log_info("second signal: exiting now");
      io.stop();
      return;
    }
    log_info("signal ", sig, ": draining (", server.requests_in_flight(), " request(s) in flight)");
    server.stop_accepting();
    app.stop();
    drain_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    check_drained();
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);

  // SIGHUP: read the JWT keys again (a rotated JWKS file); on failure the old ones stay.
  asio::signal_set hup(io, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_hup = [&](auto ec, int) {
    if (ec) return;
    std::string err, warn;
    if (gate->reload(&err, &warn)) log_info("SIGHUP: JWT keys reloaded", warn.empty() ? "" : "; " + warn);
    else log_error("SIGHUP: JWT keys not reloaded (the old ones stay): ", err);
    hup.async_wait(on_hup);
  };
  hup.async_wait(on_hup);

  std::vector<std::thread> pool;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> conn_work;
  for (auto& c : conn_io) {
    conn_work.push_back(asio::make_work_guard(*c));
    pool.emplace_back([&c] { c->run(); });
  }
  for (int i = 1; i < threads; ++i) pool.emplace_back([&] { io.run(); });
  io.run();
  for (auto& c : conn_io) c->stop();
  for (auto& t : pool) t.join();
  // Coroutines still suspended (sessions, the tick follower, the reporter)
  // refer to Server, App and ShapeService: destroy them first (the
  // connections' before the database's, which they may wait on), then
  // everything else in reverse order of construction.
  for (auto& c : conn_io) c->destroy_pending_handlers();
  io.destroy_pending_handlers();
  return 0;
}
