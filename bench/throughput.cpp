// Sustained change throughput routed through shapesyncd: how many row changes
// per second the writers commit into a tracked table with many equality shapes,
// and how many the sidecar turns into shape-log entries, next to the same
// writers on an untracked copy of the table (the baseline, same run).
//
//   throughput --database-url URL --http HOST:PORT --sidecar-pid PID
//              --pgbench PATH --pg-host H --pg-port P --pg-db DB --work DIR
//              [--shapes N] [--held H] [--duration S] [--clients C] [--rows-per-tx 100]
//              [--register-threads 64] [--probe-ms 1000] [--perf-out FILE] [--perf-what sidecar|backends]
//              [--owner-index 0|1]
//
// Steps (one run, one cluster, one sidecar):
//   1. tp (tracked) and tp_base (untracked): id bigint primary key, owner_id int,
//      v text, n int; 2·N rows each, row id i owned by (i − 1) % N + 1. With
//      --owner-index 1 both also get an index on owner_id (holding 100 000 shapes
//      then takes about a minute instead of a sequential scan per snapshot).
//   2. Baseline: pgbench on tp_base for S s (C clients, -M prepared): 100-row
//      INSERT ... SELECT transactions (owners spread) and 100-row UPDATEs
//      (n = n + 1 on 100 consecutive ids = 100 different owners), half each.
//   3. N shapes `owner_id = k` registered in the extension (one SQL statement of
//      shapesync.get_or_create_shape); the sidecar is made to hold the first H of
//      them: GET /v1/shape?where=owner_id = k from offset=-1 to up-to-date, over
//      --register-threads connections. Plus the probe shape `owner_id = 0`.
//   4. The same pgbench workload on tp for S s. Meanwhile, every --probe-ms, a
//      probe row (owner 0, id −k−1) is inserted in its own transaction; a long-poll
//      client of the probe shape records when each arrives (commit → arrival =
//      the sidecar's lag at that moment). When pgbench has exited, one last
//      probe, the sentinel: once it arrives, the sidecar has applied every
//      earlier change (ticks are applied in order).
//      With --catch-up 1 the sidecar is stopped (SIGSTOP) for the writes and
//      resumed (SIGCONT) when pgbench has exited: the changes then wait in the
//      change log, and sentinel arrival − resumption is how fast the sidecar
//      catches up alone on the machine (its ceiling, not shared with writers).
//   5. Counts from the table itself (inserted rows, sum(n) = updates), split by
//      held / not held owners; then every held shape is read from the offset it
//      had before the writes to up-to-date and its entries counted (deliveries
//      into shape logs, checked against the table).
//
// Output: `KV name value` lines on stdout for scripts/bench-throughput.sh;
// progress on stderr.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <libpq-fe.h>

#include "common.hpp"

extern char** environ;

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace bench;

namespace {

struct Options {
  std::string url, host = "127.0.0.1", port = "3000", pgbench = "pgbench", pg_host, pg_port, pg_db, work, perf_out;
  int sidecar_pid = 0, shapes = 100000, held = 100000, duration = 20, clients = 2, rows_per_tx = 100;
  int register_threads = 64, probe_ms = 1000;
  bool perf_backends = false;  // perf the sidecar's PostgreSQL sessions instead of the sidecar
  bool catch_up = false;       // the sidecar stopped during the writes, resumed after (step 4)
  bool owner_index = false;    // an index on owner_id (both tables): snapshots of held shapes use it
};
Options O;


template <class T>
void kv(const std::string& k, const T& v) {
  std::cout << "KV " << k << " " << v << "\n";
  std::cout.flush();
}

// ---------------------------------------------------------------- /proc

// CPU of a process (and of the machine) over a window.
struct Window {
  Clock::time_point t0;
  ProcSample p0, w0;
  std::pair<long long, long long> m0;
  int pid = 0, wpid = 0;
  void start(int p, int worker) {
    pid = p;
    wpid = worker;
    t0 = Clock::now();
    p0 = proc_sample(pid);
    w0 = proc_sample(wpid);
    m0 = machine_jiffies();
  }
  struct Result {
    double wall_s, sidecar_pct, worker_pct, machine_pct;
  };
  Result stop() const {
    Result r;
    r.wall_s = secs_since(t0);
    double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
    r.sidecar_pct = 100.0 * (proc_sample(pid).ticks - p0.ticks) / hz / r.wall_s;
    r.worker_pct = wpid > 0 ? 100.0 * (proc_sample(wpid).ticks - w0.ticks) / hz / r.wall_s : 0;
    auto m1 = machine_jiffies();
    r.machine_pct = m1.second > m0.second ? 100.0 * (m1.first - m0.first) / (m1.second - m0.second) : 0;
    return r;
  }
};

// ---------------------------------------------------------------- libpq

PGconn* connect_db() { return bench::connect_db(O.url); }

// ---------------------------------------------------------------- HTTP (blocking, one connection per thread)

struct Http {
  asio::io_context io;
  std::optional<tcp::socket> sock;
  boost::beast::flat_buffer buf;
  void open() {
    sock.emplace(io);
    tcp::resolver r(io);
    asio::connect(*sock, r.resolve(O.host, O.port));
    sock->set_option(tcp::no_delay(true));
    buf.clear();
  }
  // GET with one reconnect on a broken keep-alive connection.
  http::response<http::string_body> get(const std::string& target) {
    for (int attempt = 0;; ++attempt) {
      try {
        if (!sock) open();
        http::request<http::empty_body> req{http::verb::get, target, 11};
        req.set(http::field::host, O.host);
        http::write(*sock, req);
        http::response_parser<http::string_body> p;
        p.body_limit(std::numeric_limits<std::uint64_t>::max());
        http::read(*sock, buf, p);
        auto res = p.release();
        if (!res.keep_alive()) sock.reset();
        return res;
      } catch (const std::exception& e) {
        sock.reset();
        if (attempt >= 5) throw;
        sleep_ms(100 << attempt);
      }
    }
  }
};

struct Held {
  std::string handle, offset;
  long long snapshot_rows = 0;
};

long long count_entries(const std::string& body) {
  long long n = 0;
  for (size_t p = 0; (p = body.find("{\"key\":", p)) != std::string::npos; p += 7) ++n;
  return n;
}

// Follows a shape from offset=-1 (or from h.offset) to up-to-date; counts the row entries.
// Returns false on a 4xx other than a retried 409.
bool follow(Http& c, const std::string& where_enc, Held& h, long long& entries, long long& requests,
            std::string& err) {
  std::string offset = h.offset.empty() ? "-1" : h.offset;
  for (int tries = 0; tries < 200;) {
    std::string target = "/v1/shape?table=tp&where=" + where_enc + "&offset=" + offset +
                         (h.handle.empty() ? "" : "&handle=" + h.handle);
    auto r = c.get(target);
    ++requests;
    if (r.result_int() == 503 || r.result_int() == 429) {
      ++tries;
      sleep_ms(100);
      continue;
    }
    if (r.result_int() == 409) {  // rotated: start over (counted as an error by the caller)
      err = "409 " + r.body().substr(0, 200);
      return false;
    }
    if (r.result_int() != 200) {
      err = std::to_string(r.result_int()) + " " + r.body().substr(0, 200);
      return false;
    }
    entries += count_entries(r.body());
    h.handle = std::string(r["electric-handle"]);
    offset = std::string(r["electric-offset"]);
    if (r.find("electric-up-to-date") != r.end()) break;
  }
  h.offset = offset;
  return true;
}

// Runs f(k) for k in [0, n) over `threads` threads, each with its own HTTP connection.
template <class F>
void parallel(int n, int threads, const char* what, F f) {
  std::atomic<int> next{0}, done{0};
  std::vector<std::thread> ts;
  auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      Http c;
      for (int k; (k = next.fetch_add(1)) < n;) {
        f(c, k);
        done.fetch_add(1);
      }
    });
  double last = 0;
  while (done.load() < n) {
    sleep_ms(100);
    if (secs_since(t0) - last >= 10) {
      last = secs_since(t0);
      std::cerr << "  " << what << ": " << done.load() << "/" << n << " after " << fmt("%.0f", last) << " s\n";
    }
  }
  for (auto& t : ts) t.join();
}

// ---------------------------------------------------------------- pgbench

struct Bench {
  pid_t pid = 0;
  std::string out;
};

// GET /metrics as text ("" when it fails).
std::string metrics_text() {
  try {
    Http c;
    auto res = c.get("/metrics");
    return res.result_int() == 200 ? std::string(res.body()) : std::string();
  } catch (...) {
    return {};
  }
}

// One unlabelled gauge of a /metrics text (-1 when absent).
double metric_value(const std::string& text, const std::string& name) {
  std::string key = "\n" + name + " ";
  auto at = text.find(key);
  if (at == std::string::npos) return -1;
  return std::atof(text.c_str() + at + key.size());
}

// The largest memory figures of /metrics sampled every 500 ms while it runs
// (the writes and the catch-up until the sentinel): the store's count, the
// allocator's and the RSS, at their worst.
struct MemoryPeaks {
  static constexpr const char* kNames[] = {"shapesync_memory_held_bytes", "shapesync_allocator_allocated_bytes",
                                           "shapesync_allocator_resident_bytes", "shapesync_resident_bytes"};
  double peak[4] = {-1, -1, -1, -1};
  std::atomic<bool> stop{false};
  std::thread t;
  void start() {
    t = std::thread([this] {
      while (!stop.load()) {
        std::string text = metrics_text();
        for (int i = 0; i < 4; ++i) peak[i] = std::max(peak[i], metric_value(text, kNames[i]));
        for (int i = 0; i < 10 && !stop.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
  ~MemoryPeaks() {
    stop.store(true);
    if (t.joinable()) t.join();
  }
  void finish() {
    stop.store(true);
    if (t.joinable()) t.join();
    for (int i = 0; i < 4; ++i)
      if (peak[i] >= 0) kv(std::string(kNames[i] + 10) + "_peak", fmt("%.0f", peak[i]));
  }
};

// The shape store's memory figures from GET /metrics, as KV "<name>_<when>"
// (absent when this sidecar has no memory budget metrics).
void store_metrics(const std::string& when) {
  std::string text = metrics_text();
  if (text.empty()) return;
  for (const char* name : {"shapesync_memory_held_bytes", "shapesync_memory_budget_bytes", "shapesync_shapes",
                           "shapesync_evicted_shapes", "shapesync_shape_evictions_total", "shapesync_shape_reloads_total",
                           "shapesync_memory_spills_total", "shapesync_log_memory_bytes", "shapesync_window_bytes",
                           "shapesync_allocator_allocated_bytes", "shapesync_allocator_resident_bytes",
                           "shapesync_resident_bytes", "shapesync_memory_inflight_peak_bytes"}) {
    std::string key = std::string("\n") + name + " ";
    auto at = text.find(key);
    if (at == std::string::npos) continue;
    auto end = text.find('\n', at + key.size());
    kv(std::string(name + 10) + "_" + when, text.substr(at + key.size(), end - at - key.size()));
  }
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

Bench start_pgbench(const std::string& table) {
  std::string ins = O.work + "/" + table + "_insert.sql", upd = O.work + "/" + table + "_update.sql";
  std::string rpt = std::to_string(O.rows_per_tx);
  write_file(ins,
             "-- " + rpt + "-row INSERT, owners spread over 1..:owners\n"
             "\\set o random(1, :owners)\n"
             "INSERT INTO " + table + " (id, owner_id, v, n)\n"
             "SELECT nextval('" + table + "_ids'), (:o + g * 7919) % :owners + 1, 'inserted row ' || g, 0\n"
             "  FROM generate_series(1, " + rpt + ") g;\n");
  write_file(upd,
             "-- " + rpt + "-row UPDATE of consecutive ids (as many owners)\n"
             "\\set lo random(1, :nrows - " + std::to_string(O.rows_per_tx - 1) + ")\n"
             "UPDATE " + table + " SET n = n + 1 WHERE id BETWEEN :lo AND :lo + " + std::to_string(O.rows_per_tx - 1) +
             ";\n");
  Bench b;
  b.out = O.work + "/pgbench." + table + ".out";
  std::vector<std::string> args = {O.pgbench, "-n", "-M", "prepared", "-c", std::to_string(O.clients), "-j", "1",
                                   "-T", std::to_string(O.duration), "-D", "owners=" + std::to_string(O.shapes),
                                   "-D", "nrows=" + std::to_string(2LL * O.shapes), "-f", ins + "@1", "-f", upd + "@1",
                                   "-h", O.pg_host, "-p", O.pg_port, "-U", "postgres", O.pg_db};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, b.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  if (posix_spawn(&b.pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) {
    std::cerr << "cannot start " << O.pgbench << "\n";
    std::exit(1);
  }
  posix_spawn_file_actions_destroy(&fa);
  return b;
}

// Waits for pgbench; returns its "tps = ... (without initial connection time)" and transaction count.
std::pair<double, long long> finish_pgbench(const Bench& b) {
  int st = 0;
  waitpid(b.pid, &st, 0);
  std::ifstream f(b.out);
  std::string line, all;
  double tps = 0;
  long long n = 0;
  while (std::getline(f, line)) {
    all += line + "\n";
    if (line.rfind("tps = ", 0) == 0) tps = std::stod(line.substr(6));
    if (line.rfind("number of transactions actually processed: ", 0) == 0) n = std::stoll(line.substr(line.find(": ") + 2));
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || n == 0) {
    std::cerr << "pgbench failed:\n" << all;
    std::exit(1);
  }
  return {tps, n};
}

// ---------------------------------------------------------------- perf

struct Perf {
  pid_t child = 0;
  // pids: one pid or a comma-separated list
  void start(const std::string& p) {
    if (O.perf_out.empty() || p.empty()) return;
    child = fork();
    if (child == 0) {
      int fd = open("/dev/null", O_WRONLY);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      execlp("perf", "perf", "record", "-F", "499", "-g", "-p", p.c_str(), "-o", O.perf_out.c_str(), (char*)nullptr);
      _exit(127);
    }
  }
  void stop() {
    if (child <= 0) return;
    kill(child, SIGINT);
    int st;
    waitpid(child, &st, 0);
    child = 0;
  }
};

// ---------------------------------------------------------------- probes

// Arrival time of probe k (owner 0, id −k−1), by a long-poll client of `owner_id = 0`.
struct Probes {
  std::vector<std::atomic<int64_t>> sent, arrived;
  std::atomic<int> last_wanted{-1};
  std::atomic<bool> stop{false};
  Held h;
  std::string error;
  explicit Probes(size_t n) : sent(n), arrived(n) {
    for (size_t i = 0; i < n; ++i) sent[i] = arrived[i] = 0;
  }
  void run() {
    Http c;
    std::string where = url_encode("owner_id = 0"), cursor;
    static constexpr std::string_view kId = "\"id\":\"-";
    while (!stop.load()) {
      std::string target = "/v1/shape?table=tp&where=" + where + "&handle=" + h.handle + "&offset=" + h.offset +
                           "&live=true" + (cursor.empty() ? "" : "&cursor=" + cursor);
      http::response<http::string_body> r;
      try {
        r = c.get(target);
      } catch (const std::exception& e) {
        error = e.what();
        return;
      }
      int64_t t = now_ns();
      if (r.result_int() != 200) {
        error = "probe shape: HTTP " + std::to_string(r.result_int()) + " " + r.body().substr(0, 200);
        if (r.result_int() == 409) return;
        sleep_ms(100);
        continue;
      }
      const std::string& body = r.body();
      for (size_t p = 0; (p = body.find(kId, p)) != std::string::npos;) {
        p += kId.size();
        long long k = 0;
        while (p < body.size() && body[p] >= '0' && body[p] <= '9') k = k * 10 + (body[p++] - '0');
        --k;  // probe k has id −(k + 1)
        if (k >= 0 && static_cast<size_t>(k) < arrived.size() && arrived[k].load() == 0) arrived[k].store(t);
      }
      h.offset = std::string(r["electric-offset"]);
      if (auto cu = r.find("electric-cursor"); cu != r.end()) cursor = std::string(cu->value());
      int lw = last_wanted.load();
      if (lw >= 0 && arrived[lw].load() != 0) return;
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--database-url") O.url = v;
    else if (a == "--http") {
      O.host = v.substr(0, v.rfind(':'));
      O.port = v.substr(v.rfind(':') + 1);
    } else if (a == "--sidecar-pid") O.sidecar_pid = std::stoi(v);
    else if (a == "--pgbench") O.pgbench = v;
    else if (a == "--pg-host") O.pg_host = v;
    else if (a == "--pg-port") O.pg_port = v;
    else if (a == "--pg-db") O.pg_db = v;
    else if (a == "--work") O.work = v;
    else if (a == "--shapes") O.shapes = std::stoi(v);
    else if (a == "--held") O.held = std::stoi(v);
    else if (a == "--duration") O.duration = std::stoi(v);
    else if (a == "--clients") O.clients = std::stoi(v);
    else if (a == "--rows-per-tx") O.rows_per_tx = std::stoi(v);
    else if (a == "--register-threads") O.register_threads = std::stoi(v);
    else if (a == "--probe-ms") O.probe_ms = std::stoi(v);
    else if (a == "--perf-out") O.perf_out = v;
    else if (a == "--perf-what") O.perf_backends = v == "backends";
    else if (a == "--owner-index") O.owner_index = v == "1" || v == "yes";
    else if (a == "--catch-up") O.catch_up = v == "1" || v == "yes";
    else {
      std::cerr << "unknown option " << a << "\n";
      return 2;
    }
  }
  if (O.url.empty() || O.work.empty() || O.pg_host.empty() || O.pg_port.empty() || O.pg_db.empty()) {
    std::cerr << "usage: throughput --database-url URL --http HOST:PORT --sidecar-pid PID --pgbench PATH "
                 "--pg-host H --pg-port P --pg-db DB --work DIR [--shapes N] [--held H] [--duration S] "
                 "[--clients C] [--rows-per-tx R] [--register-threads T] [--probe-ms MS] [--perf-out FILE] [--owner-index 0|1]\n";
    return 2;
  }
  O.held = std::min(O.held, O.shapes);
  signal(SIGPIPE, SIG_IGN);
  const long long nrows = 2LL * O.shapes;
  PGconn* db = connect_db();
  exec(db, "SET client_min_messages = warning");
  int worker_pid = 0;
  if (auto w = scalar(db, "SELECT shapesync.worker_pid()"); !w.empty()) worker_pid = std::stoi(w);

  // 1. Tables.
  std::cerr << "  loading " << nrows << " rows into tp and tp_base\n";
  for (std::string t : {"tp", "tp_base"}) {
    exec(db, "DROP TABLE IF EXISTS " + t + "; DROP SEQUENCE IF EXISTS " + t + "_ids");
    exec(db, "CREATE TABLE " + t + " (id bigint PRIMARY KEY, owner_id int NOT NULL, v text, n int)");
    exec(db, "INSERT INTO " + t + " SELECT g, (g - 1) % " + std::to_string(O.shapes) +
                 " + 1, 'row ' || g, 0 FROM generate_series(1, " + std::to_string(nrows) + ") g");
    exec(db, "CREATE SEQUENCE " + t + "_ids START " + std::to_string(nrows + 1));
    if (O.owner_index) exec(db, "CREATE INDEX ON " + t + " (owner_id)");
    exec(db, "VACUUM ANALYZE " + t);
  }
  exec(db, "SELECT shapesync.track('tp')");
  kv("rows", nrows);
  kv("owner_index", O.owner_index ? 1 : 0);

  // 2. Baseline on the untracked copy.
  exec(db, "CHECKPOINT");
  std::cerr << "  baseline: pgbench on tp_base for " << O.duration << " s\n";
  Window bw;
  bw.start(O.sidecar_pid, worker_pid);
  auto base_t0 = Clock::now();
  auto [base_tps, base_tx] = finish_pgbench(start_pgbench("tp_base"));
  double base_wall = secs_since(base_t0);
  auto bwr = bw.stop();
  kv("base_tps", fmt("%.1f", base_tps));
  kv("base_tx", base_tx);
  kv("base_rows_per_s", fmt("%.0f", base_tps * O.rows_per_tx));
  kv("base_wall_s", fmt("%.2f", base_wall));
  kv("base_machine_pct", fmt("%.0f", bwr.machine_pct));
  std::cerr << "  baseline: " << fmt("%.0f", base_tps * O.rows_per_tx) << " rows/s\n";

  // 3. Shapes: all N in the extension, the first H held by the sidecar.
  auto t_reg = Clock::now();
  // in statements of 10 000 (each its own transaction), timed one by one
  std::string reg_batches;
  for (int lo = 1; lo <= O.shapes; lo += 10000) {
    int hi = std::min(O.shapes, lo + 9999);
    auto tb = Clock::now();
    exec(db, "SELECT count(*) FROM generate_series(" + std::to_string(lo) + ", " + std::to_string(hi) +
                 ") k, LATERAL shapesync.get_or_create_shape('tp', 'owner_id = ' || k, NULL) s");
    reg_batches += (reg_batches.empty() ? "" : " ") + fmt("%.1f", secs_since(tb));
    std::cerr << "  shapes " << lo << ".." << hi << " registered in the extension in " << fmt("%.1f", secs_since(tb))
              << " s\n";
  }
  double reg_sql_s = secs_since(t_reg);
  kv("reg_sql_s", fmt("%.1f", reg_sql_s));
  kv("reg_sql_batches", reg_batches);
  std::cerr << "  " << O.shapes << " shapes registered in the extension in " << fmt("%.1f", reg_sql_s) << " s\n";
  auto p_idle = proc_sample(O.sidecar_pid);
  std::vector<Held> held(O.held);
  std::atomic<long long> snap_rows{0}, reg_requests{0}, reg_errors{0};
  std::mutex err_mu;
  std::string reg_err;
  auto t_hold = Clock::now();
  parallel(O.held, O.register_threads, "shapes held by the sidecar", [&](Http& c, int k) {
    std::string where = url_encode("owner_id = " + std::to_string(k + 1)), err;
    for (int attempt = 0; attempt < 5; ++attempt) {
      Held h;
      long long entries = 0, reqs = 0;
      bool ok = false;
      try {
        ok = follow(c, where, h, entries, reqs, err);
      } catch (const std::exception& e) {
        err = e.what();
      }
      reg_requests += reqs;
      if (ok) {
        held[k] = h;
        snap_rows += entries;
        return;
      }
      ++reg_errors;
      sleep_ms(200);
    }
    std::lock_guard lk(err_mu);
    reg_err = "owner_id = " + std::to_string(k + 1) + ": " + err;
  });
  double hold_s = secs_since(t_hold);
  long long missing = 0;
  for (auto& h : held) missing += h.handle.empty();
  if (missing) {
    std::cerr << missing << " shapes could not be held: " << reg_err << "\n";
    return 1;
  }
  Probes probes(static_cast<size_t>(O.duration * 1000 / std::max(1, O.probe_ms) + 64));
  {
    Http c;
    long long e = 0, r = 0;
    std::string err;
    if (!follow(c, url_encode("owner_id = 0"), probes.h, e, r, err)) {
      std::cerr << "probe shape: " << err << "\n";
      return 1;
    }
  }
  auto p_held = proc_sample(O.sidecar_pid);
  kv("hold_s", fmt("%.1f", hold_s));
  kv("hold_per_s", fmt("%.0f", O.held / hold_s));
  kv("hold_snapshot_rows", snap_rows.load());
  kv("hold_requests", reg_requests.load());
  kv("hold_errors", reg_errors.load());
  kv("rss_idle_mib", fmt("%.1f", p_idle.rss_kb / 1024.0));
  kv("rss_held_mib", fmt("%.1f", p_held.rss_kb / 1024.0));
  std::cerr << "  " << O.held << " shapes held by the sidecar in " << fmt("%.1f", hold_s) << " s ("
            << reg_errors.load() << " retried); sidecar RSS " << fmt("%.1f", p_held.rss_kb / 1024.0) << " MiB\n";
  {  // /metrics: does this sidecar have one?
    Http c;
    int st = 0;
    try {
      st = c.get("/metrics").result_int();
    } catch (...) {
    }
    kv("metrics_status", st);
  }
  store_metrics("held");

  // 4. The tracked run with probes, then the sentinel.
  exec(db, "CHECKPOINT");
  // The sidecar's own database sessions (ticker: reads the batches; pool): every client
  // backend but this one, before pgbench connects.
  std::vector<int> sidecar_backends;
  for (auto& r : query(db, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
                           "AND pid <> pg_backend_pid()"))
    sidecar_backends.push_back(std::stoi(r[0]));
  auto backends_ticks = [&] {
    long long t = 0;
    for (int pid : sidecar_backends) t += proc_sample(pid).ticks;
    return t;
  };
  long long bt0 = backends_ticks();
  std::thread prober([&] { probes.run(); });
  std::cerr << "  tracked: pgbench on tp for " << O.duration << " s\n";
  Perf perf;
  {
    std::string pids = std::to_string(O.sidecar_pid);
    if (O.perf_backends) {
      pids.clear();
      for (int pid : sidecar_backends) pids += (pids.empty() ? "" : ",") + std::to_string(pid);
    }
    perf.start(pids);
  }
  MemoryPeaks peaks;
  peaks.start();
  Window w;
  w.start(O.sidecar_pid, worker_pid);
  if (O.catch_up) kill(O.sidecar_pid, SIGSTOP);
  auto t0 = Clock::now();
  Bench b = start_pgbench("tp");
  int k = 0;
  for (bool running = true; running;) {
    auto next = t0 + std::chrono::milliseconds(static_cast<long long>(k + 1) * O.probe_ms);
    while (running && Clock::now() < next) {
      int st;
      if (waitpid(b.pid, &st, WNOHANG) == b.pid) running = false;
      else sleep_ms(5);
    }
    if (!running) break;
    if (static_cast<size_t>(k + 2) >= probes.sent.size()) {  // no room for more probes: just wait
      int st;
      waitpid(b.pid, &st, 0);
      break;
    }
    probes.sent[k].store(now_ns());
    exec(db, "INSERT INTO tp VALUES (-" + std::to_string(k + 1) + ", 0, 'probe', " + std::to_string(k) + ")");
    ++k;
  }
  double write_s = secs_since(t0);
  int64_t resumed = now_ns();
  if (O.catch_up) kill(O.sidecar_pid, SIGCONT);
  auto w_writes = w.stop();
  store_metrics("writes");
  // pgbench's summary
  double tps = 0;
  long long ntx = 0;
  {
    std::ifstream f(b.out);
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("tps = ", 0) == 0) tps = std::stod(line.substr(6));
      if (line.rfind("number of transactions actually processed: ", 0) == 0)
        ntx = std::stoll(line.substr(line.find(": ") + 2));
    }
    if (ntx == 0) {
      std::cerr << "pgbench on tp failed; see " << b.out << "\n";
      return 1;
    }
  }
  // the sentinel: the last probe
  int sentinel = k;
  probes.last_wanted.store(sentinel);
  probes.sent[sentinel].store(now_ns());
  exec(db, "INSERT INTO tp VALUES (-" + std::to_string(sentinel + 1) + ", 0, 'sentinel', " + std::to_string(sentinel) + ")");
  int64_t sentinel_commit = now_ns();
  auto deadline = Clock::now() + std::chrono::seconds(900);
  double last_report = 0;
  while (probes.arrived[sentinel].load() == 0 && Clock::now() < deadline && probes.error.empty()) {
    sleep_ms(2);
    if (secs_since(t0) - last_report > 10) {
      last_report = secs_since(t0);
      std::cerr << "  waiting for the sentinel, " << fmt("%.0f", last_report) << " s since the writes started\n";
    }
  }
  int64_t arrived = probes.arrived[sentinel].load();
  auto w_all = w.stop();
  peaks.finish();
  long long bt1 = backends_ticks();
  perf.stop();
  auto p_end = proc_sample(O.sidecar_pid);
  if (arrived == 0) {
    std::cerr << "the sentinel did not arrive" << (probes.error.empty() ? " within 900 s" : ": " + probes.error) << "\n";
    kv("sentinel", "lost");
    std::_Exit(1);
  }
  prober.join();
  double applied_s = (arrived - std::chrono::duration_cast<std::chrono::nanoseconds>(t0.time_since_epoch()).count()) / 1e9;
  double lag_end_s = (arrived - sentinel_commit) / 1e9;
  std::vector<double> lags;
  for (int i = 0; i < sentinel; ++i)
    if (probes.arrived[i].load() > 0) lags.push_back((probes.arrived[i].load() - probes.sent[i].load()) / 1e9);
  auto ls = stats(lags);
  std::string lag_series;
  for (int i = 0; i < sentinel; ++i)
    lag_series += (i ? " " : "") + (probes.arrived[i].load() > 0
                                        ? fmt("%.2f", (probes.arrived[i].load() - probes.sent[i].load()) / 1e9)
                                        : std::string("?"));

  // 5. Counts from the table (probes and sentinel are owner 0, not counted).
  std::string h = std::to_string(O.held);
  auto cnt = query(db, "SELECT count(*) FILTER (WHERE id > " + std::to_string(nrows) + " AND owner_id > 0), "
                       "coalesce(sum(n) FILTER (WHERE owner_id > 0), 0), "
                       "count(*) FILTER (WHERE id > " + std::to_string(nrows) + " AND owner_id BETWEEN 1 AND " + h + "), "
                       "coalesce(sum(n) FILTER (WHERE owner_id BETWEEN 1 AND " + h + "), 0) FROM tp")[0];
  long long inserted = std::stoll(cnt[0]), updated = std::stoll(cnt[1]);
  long long changes = inserted + updated, changes_held = std::stoll(cnt[2]) + std::stoll(cnt[3]);
  kv("tracked_tps", fmt("%.1f", tps));
  kv("tracked_tx", ntx);
  kv("tracked_rows_per_s", fmt("%.0f", tps * O.rows_per_tx));
  kv("tracked_write_s", fmt("%.2f", write_s));
  kv("changes", changes);
  kv("changes_inserted", inserted);
  kv("changes_updated", updated);
  kv("changes_held", changes_held);
  kv("changes_expected_tx", ntx * O.rows_per_tx);
  kv("applied_s", fmt("%.2f", applied_s));
  kv("applied_rows_per_s", fmt("%.0f", changes / applied_s));
  kv("lag_end_s", fmt("%.3f", lag_end_s));
  if (O.catch_up) {
    kv("catch_up_s", fmt("%.3f", (arrived - resumed) / 1e9));
    kv("catch_up_rows_per_s", fmt("%.0f", changes / ((arrived - resumed) / 1e9)));
  }
  kv("probe_lag_n", ls.n);
  kv("probe_lag_median_s", fmt("%.3f", ls.median));
  kv("probe_lag_p90_s", fmt("%.3f", ls.p90));
  kv("probe_lag_max_s", fmt("%.3f", ls.max));
  kv("probe_lag_series", lag_series);
  kv("sidecar_cpu_writes_pct", fmt("%.0f", w_writes.sidecar_pct));
  kv("sidecar_cpu_all_pct", fmt("%.0f", w_all.sidecar_pct));
  kv("backends_n", sidecar_backends.size());
  kv("backends_cpu_all_pct", fmt("%.0f", 100.0 * (bt1 - bt0) / sysconf(_SC_CLK_TCK) / w_all.wall_s));
  kv("worker_cpu_all_pct", fmt("%.0f", w_all.worker_pct));
  kv("machine_writes_pct", fmt("%.0f", w_writes.machine_pct));
  kv("machine_all_pct", fmt("%.0f", w_all.machine_pct));
  kv("rss_end_mib", fmt("%.1f", p_end.rss_kb / 1024.0));
  kv("rss_peak_mib", fmt("%.1f", std::max(p_end.hwm_kb, p_end.rss_kb) / 1024.0));
  std::cerr << "  writers " << fmt("%.0f", tps * O.rows_per_tx) << " rows/s; sentinel after "
            << fmt("%.1f", applied_s) << " s (lag at end " << fmt("%.2f", lag_end_s) << " s): "
            << fmt("%.0f", changes / applied_s) << " changes/s applied\n";

  // Deliveries: every held shape read from where it was before the writes.
  std::atomic<long long> delivered{0}, vreq{0}, verr{0};
  auto t_v = Clock::now();
  parallel(O.held, O.register_threads, "held shapes read back", [&](Http& c, int i) {
    Held hh = held[i];
    long long e = 0, r = 0;
    std::string err;
    bool ok = false;
    try {
      ok = follow(c, url_encode("owner_id = " + std::to_string(i + 1)), hh, e, r, err);
    } catch (const std::exception& ex) {
      err = ex.what();
    }
    vreq += r;
    if (!ok) {
      ++verr;
      std::lock_guard lk(err_mu);
      reg_err = err;
      return;
    }
    delivered += e;
  });
  kv("delivered", delivered.load());
  kv("readback_s", fmt("%.1f", secs_since(t_v)));
  kv("readback_requests", vreq.load());
  kv("readback_errors", verr.load());
  if (verr.load()) std::cerr << "  read-back errors: " << verr.load() << ", last: " << reg_err << "\n";
  kv("deliveries_per_s", fmt("%.0f", delivered.load() / applied_s));
  std::cerr << "  " << delivered.load() << " entries in the held shapes' logs (table says " << changes_held << ")\n";
  store_metrics("end");
  {
    auto p_last = proc_sample(O.sidecar_pid);
    kv("rss_last_mib", fmt("%.1f", p_last.rss_kb / 1024.0));
    kv("rss_peak_last_mib", fmt("%.1f", std::max(p_last.hwm_kb, p_last.rss_kb) / 1024.0));
  }
  PQfinish(db);
  return 0;
}
