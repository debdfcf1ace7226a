// Live fan-out load client: many concurrent HTTP/1.1 live clients of one
// shapesyncd on loopback, delivery latency from commit to every client, and
// the initial-sync throughput of a large shape next to COPY.
//
//   fanout --database-url URL --http HOST:PORT --scenario longpoll|sse|where|baseline|sync
//          [--clients N] [--writes W] [--interval-ms 1000] [--sidecar-pid PID]
//          [--threads T] [--connect-batch 500] [--burst-deliveries D] [--burst-seconds S]
//          [--rows R] [--perf-out FILE]
//
// Scenarios (one per run; scripts/bench-fanout.sh restarts the sidecar between runs):
//   longpoll  N clients long-poll the same whole-table shape; one single-row INSERT
//             transaction per interval; each client re-issues its live request at
//             once with the returned offset and cursor.
//   sse       the same over SSE (live=true&live_sse=true, one open stream per client);
//             then a burst of many rows per second (D deliveries in all, over S s) for
//             the largest deliveries/s.
//   where     N clients, each on its own shape `where=owner_id = i` (created first by a
//             pool of 100 connections); every interval one transaction inserts one row
//             for every owner (N rows), so every client gets one message per write.
//   baseline  the load client's own ceiling: the longpoll scenario's clients against a
//             trivial long-poll server in a child process (one thread, no database): it
//             parks every request and, at each write, sends one canned response of the
//             same size and headers as shapesyncd's to all of them (one send each).
//             The writer's "write" is a message to that server. Same N, same report.
//   sync      a R-row table: COPY (SELECT cols) TO STDOUT through libpq, then the shape
//             from offset=-1 through every chunk to up-to-date (cold: creates the shape;
//             warm: a second client of the existing shape).
//
// Latency of a delivered message = time the client read it − time the writer sent
// the INSERT (steady clock, one process). Every write carries its sequence number
// in column `seq`; clients find `"seq":"<n>"` in the bytes they receive (no full
// JSON parse; messages are in log order, so a repeat is counted as a duplicate).
//
// Output: lines `ROW <table> | ... |` (Markdown cells) on stdout for the script;
// progress on stderr.
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <libpq-fe.h>

#include "common.hpp"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using namespace bench;

namespace {


// ---------------------------------------------------------------- options

struct Options {
  std::string url, host = "127.0.0.1", port = "3000", scenario = "longpoll", perf_out;
  int clients = 1000, writes = 10, interval_ms = 1000, threads = 1, connect_batch = 500;
  int sidecar_pid = 0;
  long long burst_deliveries = 0;
  int burst_seconds = 5;
  long long rows = 1000000;
};

// ---------------------------------------------------------------- /proc

// Time the process's threads spent runnable but waiting for a CPU (ns, summed over threads).
long long runq_wait_ns(int pid) {
  long long sum = 0;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& e : std::filesystem::directory_iterator(dir, std::filesystem::directory_options::skip_permission_denied)) {
    std::ifstream f(e.path() / "schedstat");
    long long run = 0, wait = 0;
    if (f >> run >> wait) sum += wait;
  }
  return sum;
}

double self_cpu_s() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Everything the report needs about a measurement window.
struct Window {
  Clock::time_point t0;
  ProcSample p0;
  double self0 = 0;
  std::pair<long long, long long> m0;
  long long wait0 = 0;
  int pid = 0;
  void start(int p) {
    pid = p;
    t0 = Clock::now();
    wait0 = pid > 0 ? runq_wait_ns(pid) : 0;
    p0 = proc_sample(pid);
    self0 = self_cpu_s();
    m0 = machine_jiffies();
  }
  struct Result {
    double wall_s, sidecar_pct, client_pct, machine_pct, sidecar_wait_pct;
  };
  Result stop() const {
    Result r;
    r.wall_s = secs_since(t0);
    auto p1 = proc_sample(pid);
    r.sidecar_pct = 100.0 * (p1.ticks - p0.ticks) / sysconf(_SC_CLK_TCK) / r.wall_s;
    r.client_pct = 100.0 * (self_cpu_s() - self0) / r.wall_s;
    auto m1 = machine_jiffies();
    r.sidecar_wait_pct = pid > 0 ? 100.0 * (runq_wait_ns(pid) - wait0) / 1e9 / r.wall_s : 0;
    r.machine_pct = m1.second > m0.second ? 100.0 * (m1.first - m0.first) / (m1.second - m0.second) : 0;
    return r;
  }
};

// Waits until the sidecar uses ≤ 2 % of a core over 0.5 s (its queued work is done).
void settle(int pid, int max_s = 20) {
  if (pid <= 0) {
    sleep_ms(1000);
    return;
  }
  auto deadline = Clock::now() + std::chrono::seconds(max_s);
  long long hz = sysconf(_SC_CLK_TCK);
  auto prev = proc_sample(pid).ticks;
  while (Clock::now() < deadline) {
    sleep_ms(500);
    auto cur = proc_sample(pid).ticks;
    if ((cur - prev) * 100 <= 2 * hz / 2) return;
    prev = cur;
  }
  std::cerr << "warning: sidecar still busy after " << max_s << " s of settling\n";
}

// perf record on the sidecar during a window.
struct Perf {
  pid_t child = 0;
  void start(const std::string& out, int pid) {
    if (out.empty() || pid <= 0) return;
    std::string p = std::to_string(pid);
    child = fork();
    if (child == 0) {
      int fd = open("/dev/null", 1);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      // Do not hand the client's sockets to perf (it needs descriptors of its own).
      if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
        for (int i = 3; i < 65536; ++i) close(i);
      // FANOUT_PERF_ALL=1: every process on the machine (the database's backends and the load client
      // too), at a higher rate for short windows such as the initial sync's.
      if (const char* all = getenv("FANOUT_PERF_ALL"); all && *all == '1')
        execlp("perf", "perf", "record", "-F", "2999", "-g", "-a", "-o", out.c_str(), (char*)nullptr);
      else if (const char* dwarf = getenv("FANOUT_PERF_DWARF"); dwarf && *dwarf == '1')  // call chains without frame pointers
        execlp("perf", "perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-p", p.c_str(), "-o", out.c_str(),
               (char*)nullptr);
      else
        execlp("perf", "perf", "record", "-F", "499", "-g", "-p", p.c_str(), "-o", out.c_str(), (char*)nullptr);
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

// ---------------------------------------------------------------- libpq

// ---------------------------------------------------------------- statistics

// ---------------------------------------------------------------- shared state

// Send time of every write (by seq), filled by the writer before it sends.
struct Sent {
  std::unique_ptr<std::atomic<int64_t>[]> ns;
  size_t size = 0;
  int64_t burst_from = INT64_MAX;  // seqs ≥ this belong to the burst
  void init(size_t n) {
    ns.reset(new std::atomic<int64_t>[n]);
    size = n;
    for (size_t i = 0; i < n; ++i) ns[i].store(0);
  }
};

struct ThreadStats {
  std::vector<float> lat, burst_lat;
  std::vector<uint32_t> lat_seq;  // seq of each lat sample
  uint64_t dup = 0, bad_status = 0, reconnects = 0, empty = 0, conn_fail = 0;
  int64_t first_burst_recv = INT64_MAX, last_burst_recv = 0;
  std::string last_error;
};

struct Global {
  Options opt;
  Sent sent;
  std::atomic<uint64_t> delivered{0}, burst_delivered{0};
  std::atomic<int> parked{0}, failed{0}, created{0}, create_errors{0}, creators_done{0};
  std::atomic<bool> stop{false};
  std::string table;
  std::vector<ThreadStats> ts;
};

Global G;

// ---------------------------------------------------------------- HTTP client plumbing

struct Head {
  int status = 0;
  long long content_length = -1;
  bool chunked = false;
  std::string offset, cursor, handle;
  bool up_to_date = false;
};

// Incremental chunked transfer-coding decoder.
struct Dechunk {
  enum { kSize, kData, kCrlf, kTrailer, kDone } st = kSize;
  size_t left = 0;
  std::string line;
  // Consumes from [p, p+n); calls out(ptr, len) for payload; returns bytes consumed.
  template <class F>
  size_t feed(const char* p, size_t n, F&& out) {
    size_t i = 0;
    while (i < n && st != kDone) {
      if (st == kSize || st == kTrailer) {
        char c = p[i++];
        if (c != '\n') {
          line += c;
          continue;
        }
        if (st == kTrailer) {
          if (line.empty() || line == "\r") st = kDone;
          line.clear();
          continue;
        }
        left = std::strtoull(line.c_str(), nullptr, 16);
        line.clear();
        st = left == 0 ? kTrailer : kData;
      } else if (st == kData) {
        size_t k = std::min(left, n - i);
        out(p + i, k);
        i += k;
        left -= k;
        if (left == 0) st = kCrlf;
      } else if (st == kCrlf) {
        if (p[i++] == '\n') st = kSize;
      }
    }
    return i;
  }
};

struct Client {
  explicit Client(asio::io_context& io) : sock(io) {}
  int id = 0, tid = 0;
  tcp::socket sock;
  std::string handle, offset, cursor, where;  // where: already URL-encoded
  std::vector<char> buf = std::vector<char>(4096);
  size_t beg = 0, end = 0;
  int64_t max_seq = -1;
  bool counted_parked = false;
};

awaitable<bool> fill(Client& c) {
  if (c.beg > 0 && c.beg == c.end) c.beg = c.end = 0;
  if (c.end == c.buf.size()) {
    if (c.beg > 0) {
      std::memmove(c.buf.data(), c.buf.data() + c.beg, c.end - c.beg);
      c.end -= c.beg;
      c.beg = 0;
    } else {
      c.buf.resize(c.buf.size() * 2);
    }
  }
  auto [ec, n] = co_await c.sock.async_read_some(asio::buffer(c.buf.data() + c.end, c.buf.size() - c.end),
                                                 asio::as_tuple(asio::use_awaitable));
  if (ec) co_return false;
  c.end += n;
  co_return true;
}

bool ieq_prefix(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || line[name.size()] != ':') return false;
  return strncasecmp(line.data(), name.data(), name.size()) == 0;
}

std::string_view header_value(std::string_view line, size_t name_len) {
  auto v = line.substr(name_len + 1);
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.remove_suffix(1);
  return v;
}

// Reads a response head; leaves c.beg at the start of the body.
awaitable<std::optional<Head>> read_head(Client& c) {
  for (;;) {
    std::string_view have(c.buf.data() + c.beg, c.end - c.beg);
    auto e = have.find("\r\n\r\n");
    if (e != std::string_view::npos) {
      Head h;
      std::string_view block = have.substr(0, e + 2);
      size_t pos = 0;
      bool first = true;
      while (pos < block.size()) {
        auto nl = block.find("\r\n", pos);
        std::string_view line = block.substr(pos, nl - pos);
        pos = nl + 2;
        if (first) {
          first = false;
          if (line.size() >= 12) h.status = std::atoi(std::string(line.substr(9, 3)).c_str());
          continue;
        }
        if (ieq_prefix(line, "content-length")) h.content_length = std::atoll(std::string(header_value(line, 14)).c_str());
        else if (ieq_prefix(line, "transfer-encoding")) h.chunked = header_value(line, 17).find("chunked") != std::string_view::npos;
        else if (ieq_prefix(line, "electric-offset")) h.offset = header_value(line, 15);
        else if (ieq_prefix(line, "electric-cursor")) h.cursor = header_value(line, 15);
        else if (ieq_prefix(line, "electric-handle")) h.handle = header_value(line, 15);
        else if (ieq_prefix(line, "electric-up-to-date")) h.up_to_date = true;
      }
      c.beg += e + 4;
      co_return h;
    }
    if (!co_await fill(c)) co_return std::nullopt;
  }
}

// Reads a whole (non-streamed) body into out; false on connection loss.
awaitable<bool> read_body(Client& c, const Head& h, std::string& out) {
  out.clear();
  if (h.chunked) {
    Dechunk d;
    for (;;) {
      size_t used = d.feed(c.buf.data() + c.beg, c.end - c.beg, [&](const char* p, size_t n) { out.append(p, n); });
      c.beg += used;
      if (d.st == Dechunk::kDone) co_return true;
      if (!co_await fill(c)) co_return false;
    }
  }
  long long need = std::max(0LL, h.content_length);
  while (static_cast<long long>(c.end - c.beg) < need)
    if (!co_await fill(c)) co_return false;
  out.assign(c.buf.data() + c.beg, need);
  c.beg += need;
  co_return true;
}

// Records every `"seq":"<n>"` in [p, p+n).
void record(Client& c, std::string_view s, int64_t recv_ns) {
  ThreadStats& st = G.ts[c.tid];
  static constexpr std::string_view kSeq = "\"seq\":\"";
  size_t pos = 0;
  while ((pos = s.find(kSeq, pos)) != std::string_view::npos) {
    pos += kSeq.size();
    int64_t seq = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') seq = seq * 10 + (s[pos++] - '0');
    if (seq < 0 || static_cast<size_t>(seq) >= G.sent.size) continue;
    if (seq <= c.max_seq) {
      ++st.dup;
      continue;
    }
    c.max_seq = seq;
    int64_t sent = G.sent.ns[seq].load(std::memory_order_acquire);
    float ms = static_cast<float>((recv_ns - sent) / 1e6);
    if (seq >= G.sent.burst_from) {
      st.burst_lat.push_back(ms);
      st.first_burst_recv = std::min(st.first_burst_recv, recv_ns);
      st.last_burst_recv = std::max(st.last_burst_recv, recv_ns);
      G.burst_delivered.fetch_add(1, std::memory_order_relaxed);
    } else {
      st.lat.push_back(ms);
      st.lat_seq.push_back(static_cast<uint32_t>(seq));
    }
    G.delivered.fetch_add(1, std::memory_order_relaxed);
  }
}

asio::ip::address_v4 source_address(int i) {
  // Spread connections over 127.0.0.2.. (10 000 per address) so that ports never run out.
  return asio::ip::address_v4((127u << 24) | static_cast<unsigned>(2 + i / 10000));
}

awaitable<bool> connect(Client& c, const tcp::endpoint& ep) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    boost::system::error_code ec;
    if (c.sock.is_open()) c.sock.close(ec);
    c.sock.open(tcp::v4(), ec);
    if (ec) {
      G.ts[c.tid].last_error = "socket: " + ec.message();
      co_return false;
    }
    if (ep.address().is_loopback()) {
      int one = 1;
      setsockopt(c.sock.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      c.sock.bind(tcp::endpoint(source_address(c.id), 0), ec);
    }
    auto [cec] = co_await c.sock.async_connect(ep, asio::as_tuple(asio::use_awaitable));
    if (!cec) {
      c.sock.set_option(tcp::no_delay(true), ec);
      c.beg = c.end = 0;
      co_return true;
    }
    G.ts[c.tid].last_error = "connect: " + cec.message();
    asio::steady_timer t(c.sock.get_executor(), std::chrono::milliseconds(100 << std::min(attempt, 4)));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  ++G.ts[c.tid].conn_fail;
  co_return false;
}

std::string base_target(const Client& c) {
  std::string t = "/v1/shape?table=" + G.table;
  if (!c.where.empty()) t += "&where=" + c.where;
  return t;
}

awaitable<bool> send(Client& c, const std::string& target) {
  std::string req = "GET " + target + " HTTP/1.1\r\nHost: " + G.opt.host + "\r\n\r\n";
  auto [ec, n] = co_await asio::async_write(c.sock, asio::buffer(req), asio::as_tuple(asio::use_awaitable));
  co_return !ec;
}

void mark_parked(Client& c) {
  if (!c.counted_parked) {
    c.counted_parked = true;
    G.parked.fetch_add(1);
  }
}

void mark_failed(Client& c) {
  if (!c.counted_parked) {
    c.counted_parked = true;
    G.failed.fetch_add(1);
  }
}

awaitable<void> pause(Client& c, int ms) {
  asio::steady_timer t(c.sock.get_executor(), std::chrono::milliseconds(ms));
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

// A long-polling client: live request, response, at once the next one.
awaitable<void> longpoll_client(std::shared_ptr<Client> cp, tcp::endpoint ep) {
  Client& c = *cp;
  ThreadStats& st = G.ts[c.tid];
  std::string body;
  bool connected = false;
  while (!G.stop) {
    if (!connected) {
      if (!co_await connect(c, ep)) {
        mark_failed(c);
        co_return;
      }
      connected = true;
    }
    std::string target = base_target(c) + "&handle=" + c.handle + "&offset=" + c.offset + "&live=true&cursor=" + c.cursor;
    if (!co_await send(c, target)) {
      ++st.reconnects;
      connected = false;
      continue;
    }
    mark_parked(c);
    auto h = co_await read_head(c);
    if (!h) {
      if (G.stop) co_return;
      ++st.reconnects;
      connected = false;
      continue;
    }
    int64_t t_head = now_ns();
    if (!co_await read_body(c, *h, body)) {
      ++st.reconnects;
      connected = false;
      continue;
    }
    if (h->status != 200) {
      ++st.bad_status;
      st.last_error = "HTTP " + std::to_string(h->status) + ": " + body.substr(0, 200);
      if (h->status == 409) co_return;  // the shape rotated: would need a resync; not expected here
      co_await pause(c, 200);
      continue;
    }
    // One timestamp per response: the head and a small body arrive in one read.
    record(c, body, t_head);
    if (body.find("\"seq\"") == std::string::npos) ++st.empty;
    if (!h->offset.empty()) c.offset = h->offset;
    if (!h->cursor.empty()) c.cursor = h->cursor;
  }
}

// An SSE client: one stream; reconnects from <global_last_seen_lsn>_0 when it ends.
awaitable<void> sse_client(std::shared_ptr<Client> cp, tcp::endpoint ep) {
  Client& c = *cp;
  ThreadStats& st = G.ts[c.tid];
  std::string body, ev;
  while (!G.stop) {
    if (!co_await connect(c, ep)) {
      mark_failed(c);
      co_return;
    }
    std::string target = base_target(c) + "&handle=" + c.handle + "&offset=" + c.offset + "&live=true&live_sse=true&cursor=" + c.cursor;
    if (!co_await send(c, target)) {
      ++st.reconnects;
      continue;
    }
    mark_parked(c);
    auto h = co_await read_head(c);
    if (!h) {
      ++st.reconnects;
      continue;
    }
    if (h->status != 200) {
      co_await read_body(c, *h, body);
      ++st.bad_status;
      st.last_error = "HTTP " + std::to_string(h->status) + ": " + body.substr(0, 200);
      if (h->status == 409) co_return;
      co_await pause(c, 200);
      continue;
    }
    if (!h->cursor.empty()) c.cursor = h->cursor;
    Dechunk d;
    ev.clear();
    bool ok = true;
    for (;;) {
      int64_t t = now_ns();
      size_t used = d.feed(c.buf.data() + c.beg, c.end - c.beg, [&](const char* p, size_t n) { ev.append(p, n); });
      c.beg += used;
      // Complete events end with a blank line.
      size_t done = 0;
      for (;;) {
        size_t e = ev.find("\n\n", done);
        if (e == std::string::npos) break;
        std::string_view event(ev.data() + done, e - done);
        done = e + 2;
        if (event.rfind("data: ", 0) != 0) continue;  // keep-alive comment
        std::string_view data = event.substr(6);
        if (data.find("\"up-to-date\"") != std::string_view::npos) {
          static constexpr std::string_view kLsn = "\"global_last_seen_lsn\":\"";
          auto p = data.find(kLsn);
          if (p != std::string_view::npos) {
            p += kLsn.size();
            c.offset = std::string(data.substr(p, data.find('"', p) - p)) + "_0";
          }
        } else {
          record(c, data, t);
        }
      }
      ev.erase(0, done);
      if (d.st == Dechunk::kDone) break;  // the stream ended (sse timeout)
      if (!co_await fill(c)) {
        ok = false;
        break;
      }
    }
    if (G.stop) co_return;
    ++st.reconnects;
    (void)ok;
  }
}

// Creates client i's own shape (where=owner_id = i+1) on a pooled connection.
awaitable<void> creator(int first, int step, int count, std::vector<std::shared_ptr<Client>>& clients,
                        asio::io_context& io, tcp::endpoint ep, int tid) {
  Client conn(io);
  conn.id = first;
  conn.tid = tid;
  std::string body;
  bool connected = false;
  for (int i = first; i < count; i += step) {
    Client& c = *clients[i];
    std::string offset = "-1", handle;
    for (int tries = 0; tries < 100;) {
      if (!connected) {
        if (!co_await connect(conn, ep)) {
          G.create_errors.fetch_add(1);
          G.creators_done.fetch_add(1);
          co_return;
        }
        connected = true;
      }
      std::string target = base_target(c) + "&offset=" + offset + (handle.empty() ? "" : "&handle=" + handle);
      std::optional<Head> h;
      if (co_await send(conn, target)) h = co_await read_head(conn);
      if (!h || !co_await read_body(conn, *h, body)) {
        connected = false;
        ++tries;
        continue;
      }
      if (h->status != 200) {
        ++tries;
        G.create_errors.fetch_add(1);
        if (h->status == 409) {  // restart from scratch
          offset = "-1";
          handle.clear();
        }
        G.ts[tid].last_error = "create HTTP " + std::to_string(h->status) + ": " + body.substr(0, 200);
        asio::steady_timer t(io, std::chrono::milliseconds(200));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      handle = h->handle;
      offset = h->offset;
      if (h->up_to_date) break;
    }
    c.handle = handle;
    c.offset = offset;
    G.created.fetch_add(1);
  }
  boost::system::error_code ec;
  conn.sock.close(ec);
  G.creators_done.fetch_add(1);
}

// ---------------------------------------------------------------- blocking helpers (setup, sync)

struct Blocking {
  asio::io_context io;
  tcp::socket sock{io};
  boost::beast::flat_buffer buf;
  Blocking() {
    tcp::resolver r(io);
    asio::connect(sock, r.resolve(G.opt.host, G.opt.port));
    sock.set_option(tcp::no_delay(true));
  }
  http::response<http::string_body> get(const std::string& target) {
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, G.opt.host);
    http::write(sock, req);
    http::response_parser<http::string_body> p;
    p.body_limit(std::numeric_limits<std::uint64_t>::max());
    http::read(sock, buf, p);
    return p.release();
  }
};

// Follows a shape from offset=-1 to up-to-date; returns (handle, offset, rows, bytes).
struct SyncResult {
  std::string handle, offset;
  long long rows = 0, bytes = 0, requests = 0;
};

long long count_rows(const std::string& body) {
  long long n = 0;
  size_t p = 0;
  while ((p = body.find("{\"key\":", p)) != std::string::npos) {
    ++n;
    p += 7;
  }
  return n;
}

SyncResult sync_shape(const std::string& base) {
  Blocking b;
  SyncResult s;
  std::string offset = "-1";
  for (;;) {
    std::string target = base + "&offset=" + offset + (s.handle.empty() ? "" : "&handle=" + s.handle);
    auto t_req = Clock::now();
    auto r = b.get(target);
    ++s.requests;
    if (std::getenv("FANOUT_TRACE"))
      std::cerr << "    GET offset=" << offset << " -> " << r.result_int() << " " << r.body().size() << " B in "
                << fmt("%.1f", secs_since(t_req) * 1000) << " ms\n";
    if (r.result_int() == 503) {
      sleep_ms(200);
      continue;
    }
    if (r.result_int() != 200) {
      std::cerr << "GET " << target << ": " << r.result_int() << " " << r.body().substr(0, 300) << "\n";
      std::exit(1);
    }
    s.rows += count_rows(r.body());
    s.bytes += static_cast<long long>(r.body().size());
    s.handle = std::string(r["electric-handle"]);
    offset = std::string(r["electric-offset"]);
    if (r.find("electric-up-to-date") != r.end()) break;
  }
  s.offset = offset;
  return s;
}

// ---------------------------------------------------------------- the baseline server

// A long-poll answer like shapesyncd's for one single-row insert (same headers,
// same body size), for the trivial server.
std::string canned_answer(int64_t seq) {
  std::string body = "[{\"key\":\"\\\"public\\\".\\\"fanout_lp\\\"/\\\"" + std::to_string(seq + 1) +
                     "\\\"\",\"value\":{\"id\":\"" + std::to_string(seq + 1) + "\",\"owner_id\":\"0\",\"seq\":\"" +
                     std::to_string(seq) + "\",\"payload\":\"" + std::string(40, 'x') +
                     "\",\"created_at\":\"2026-12-07 10:00:00.000000+00\"},\"headers\":{\"operation\":\"insert\","
                     "\"relation\":[\"public\",\"fanout_lp\"],\"txids\":[\"1000\"],\"lsn\":\"0\",\"op_position\":0}},"
                     "{\"headers\":{\"control\":\"up-to-date\",\"global_last_seen_lsn\":\"0\"}}]";
  std::string offset = std::to_string(seq + 2) + "_0";
  return "HTTP/1.1 200 OK\r\nServer: trivial\r\nelectric-server: trivial\r\nx-request-id: 0123456789abcdef0123456789abcdef\r\n"
         "Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: electric-cursor,electric-handle,"
         "electric-offset,electric-schema,electric-up-to-date,electric-has-data,etag,retry-after\r\n"
         "Access-Control-Allow-Methods: GET, POST, HEAD, DELETE, OPTIONS\r\n"
         "Content-Type: application/json; charset=utf-8\r\nelectric-handle: baseline-1\r\nelectric-offset: " +
         offset + "\r\nelectric-up-to-date: \r\nelectric-cursor: 1000\r\nelectric-has-data: true\r\nETag: \"baseline-1:" +
         offset + "\"\r\nCache-Control: public, max-age=5, stale-while-revalidate=5\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

struct Trivial {
  std::vector<int> parked;  // sockets whose request waits for the next write
};

awaitable<void> trivial_conn(Trivial& t, tcp::socket s) {
  std::string buf;
  for (;;) {
    auto [ec, n] = co_await asio::async_read_until(s, asio::dynamic_buffer(buf), "\r\n\r\n",
                                                   asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    buf.erase(0, n);
    t.parked.push_back(s.native_handle());
  }
}

awaitable<void> trivial_accept(Trivial& t, tcp::acceptor& acc) {
  for (;;) {
    auto [ec, sock] = co_await acc.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) continue;
    sock.set_option(tcp::no_delay(true), ec);
    asio::co_spawn(acc.get_executor(), trivial_conn(t, std::move(sock)), asio::detached);
  }
}

awaitable<void> trivial_writes(Trivial& t, asio::posix::stream_descriptor& ctrl) {
  for (;;) {
    int64_t seq;
    auto [ec, n] = co_await asio::async_read(ctrl, asio::buffer(&seq, sizeof seq), asio::as_tuple(asio::use_awaitable));
    if (ec) std::_Exit(0);  // the load client is gone
    std::string a = canned_answer(seq);
    for (int fd : t.parked) (void)!::send(fd, a.data(), a.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    t.parked.clear();
  }
}

// The child: serves on a free loopback port (written to port_out) until ctrl_in closes.
[[noreturn]] void trivial_server(int port_out, int ctrl_in) {
  asio::io_context io(1);
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  acc.listen(asio::socket_base::max_listen_connections);
  unsigned short port = acc.local_endpoint().port();
  (void)!::write(port_out, &port, sizeof port);
  ::close(port_out);
  Trivial t;
  asio::posix::stream_descriptor ctrl(io, ctrl_in);
  asio::co_spawn(io, trivial_accept(t, acc), asio::detached);
  asio::co_spawn(io, trivial_writes(t, ctrl), asio::detached);
  io.run();
  std::_Exit(0);
}

// Starts the trivial server; its pid, port and the descriptor that sends it writes.
struct TrivialChild {
  int pid = 0, ctrl = -1;
  unsigned short port = 0;
};

TrivialChild start_trivial_server() {
  int pp[2], cp[2];
  if (pipe(pp) != 0 || pipe(cp) != 0) {
    std::perror("pipe");
    std::exit(1);
  }
  TrivialChild c;
  c.pid = fork();
  if (c.pid == 0) {
    ::close(pp[0]);
    ::close(cp[1]);
    trivial_server(pp[1], cp[0]);
  }
  ::close(pp[1]);
  ::close(cp[0]);
  if (::read(pp[0], &c.port, sizeof c.port) != sizeof c.port) {
    std::cerr << "the baseline server did not start\n";
    std::exit(1);
  }
  ::close(pp[0]);
  c.ctrl = cp[1];
  return c;
}

// ---------------------------------------------------------------- scenarios

void raise_nofile(long long want) {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  if (static_cast<long long>(rl.rlim_cur) < want) {
    std::cerr << "RLIMIT_NOFILE is " << rl.rlim_cur << ", need about " << want
              << " (raise the hard limit: ulimit -Hn as root)\n";
    std::exit(1);
  }
}

struct IoThreads {
  std::vector<std::unique_ptr<asio::io_context>> ios;
  std::vector<std::thread> threads;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  explicit IoThreads(int n) {
    for (int i = 0; i < n; ++i) {
      ios.push_back(std::make_unique<asio::io_context>(1));
      guards.push_back(asio::make_work_guard(*ios.back()));
    }
    for (int i = 0; i < n; ++i) threads.emplace_back([this, i] { ios[i]->run(); });
  }
  void stop() {
    for (auto& io : ios) io->stop();
    for (auto& t : threads) t.join();
  }
};

template <class Pred>
bool wait_until(Pred p, double max_s) {
  auto deadline = Clock::now() + std::chrono::duration<double>(max_s);
  while (!p()) {
    if (Clock::now() > deadline) return false;
    sleep_ms(5);
  }
  return true;
}

std::string mib(long long kb) { return fmt("%.1f", kb / 1024.0); }

void scenario_live() {
  Options& o = G.opt;
  const bool sse = o.scenario == "sse", where = o.scenario == "where", baseline = o.scenario == "baseline";
  const int n = o.clients;
  raise_nofile(n + 30);
  G.table = sse ? "fanout_sse" : where ? "fanout_where" : "fanout_lp";
  TrivialChild trivial;
  PGconn* w = nullptr;
  if (baseline) {
    // Before any thread: the child is a plain fork. Its CPU and memory are reported as the sidecar's.
    trivial = start_trivial_server();
    o.sidecar_pid = trivial.pid;
    o.port = std::to_string(trivial.port);
  } else {
    w = connect_db(o.url);
    exec(w, "SET client_min_messages = warning");
    exec(w, "DROP TABLE IF EXISTS " + G.table);
    exec(w, "CREATE TABLE " + G.table +
                " (id bigserial PRIMARY KEY, owner_id int NOT NULL DEFAULT 0, seq bigint NOT NULL, "
                "payload text NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp())");
    exec(w, "SELECT shapesync.track('" + G.table + "')");
  }

  // Burst: deliveries spread over burst_seconds; rows = deliveries / clients.
  long long burst_rows = sse && o.burst_deliveries > 0 ? std::max<long long>(1, o.burst_deliveries / n) : 0;
  G.sent.init(static_cast<size_t>(o.writes + burst_rows + 16));
  G.sent.burst_from = o.writes;
  G.ts.resize(o.threads);

  tcp::endpoint ep(asio::ip::make_address(o.host), static_cast<unsigned short>(std::stoi(o.port)));
  IoThreads io(o.threads);
  std::vector<std::shared_ptr<Client>> clients;
  for (int i = 0; i < n; ++i) {
    auto c = std::make_shared<Client>(*io.ios[i % o.threads]);
    c->id = i;
    c->tid = i % o.threads;
    if (where) c->where = url_encode("owner_id = " + std::to_string(i + 1));
    clients.push_back(c);
  }

  auto p_start = proc_sample(o.sidecar_pid);
  std::string shapes_row;
  if (baseline) {
    for (auto& c : clients) {
      c->handle = "baseline-1";
      c->offset = "1_0";
    }
  } else if (!where) {
    // One shape for everyone: take it to up-to-date once; every client starts live from there.
    auto s = sync_shape("/v1/shape?table=" + G.table);
    for (auto& c : clients) {
      c->handle = s.handle;
      c->offset = s.offset;
    }
  } else {
    // Every client's own shape, created through a pool of connections.
    int pool = std::min(n, 100);
    auto t0 = Clock::now();
    for (int k = 0; k < pool; ++k)
      asio::co_spawn(*io.ios[k % o.threads], creator(k, pool, n, clients, *io.ios[k % o.threads], ep, k % o.threads),
                     asio::detached);
    double last_report = 0;
    while (G.created.load() < n && G.creators_done.load() < pool) {
      sleep_ms(50);
      double el = secs_since(t0);
      if (el - last_report > 10) {
        last_report = el;
        std::cerr << "  shapes created: " << G.created.load() << "/" << n << " after " << fmt("%.0f", el) << " s\n";
      }
      if (el > 600) {
        std::cerr << "shape creation did not finish\n";
        std::exit(1);
      }
    }
    double el = secs_since(t0);
    if (G.created.load() < n) {
      std::cerr << "only " << G.created.load() << " of " << n << " shapes created\n";
      std::exit(1);
    }
    settle(o.sidecar_pid);
    auto p = proc_sample(o.sidecar_pid);
    shapes_row = "ROW shapes | " + std::to_string(n) + " | " + fmt("%.1f", el) + " | " + fmt("%.0f", n / el) + " | " +
                 fmt("%.2f", (p.rss_kb - p_start.rss_kb) / static_cast<double>(n)) + " | " +
                 std::to_string(G.create_errors.load()) + " |";
    std::cerr << "  " << n << " shapes created in " << fmt("%.1f", el) << " s\n";
  }
  settle(o.sidecar_pid);
  auto p_before = proc_sample(o.sidecar_pid);

  // Connect in batches: the next batch starts when the previous one has sent its live requests.
  auto t_connect = Clock::now();
  for (int b = 0; b < n; b += o.connect_batch) {
    int e = std::min(n, b + o.connect_batch);
    for (int i = b; i < e; ++i) {
      auto& c = clients[i];
      if (sse) asio::co_spawn(*io.ios[c->tid], sse_client(c, ep), asio::detached);
      else asio::co_spawn(*io.ios[c->tid], longpoll_client(c, ep), asio::detached);
    }
    if (!wait_until([&] { return G.parked.load() + G.failed.load() >= e; }, 60)) {
      std::cerr << "batch " << b << ": only " << G.parked.load() << " clients connected\n";
      break;
    }
  }
  double connect_s = secs_since(t_connect);
  settle(o.sidecar_pid);
  auto p_idle = proc_sample(o.sidecar_pid);
  int live = G.parked.load();
  std::cerr << "  " << live << " clients live (" << G.failed.load() << " failed) after " << fmt("%.1f", connect_s)
            << " s; sidecar RSS " << mib(p_idle.rss_kb) << " MiB\n";
  if (G.failed.load() > 0) {
    for (auto& t : G.ts)
      if (!t.last_error.empty()) std::cerr << "  last error: " << t.last_error << "\n";
  }

  // Writes: one transaction per interval.
  Window win;
  Perf perf;
  perf.start(o.perf_out, o.sidecar_pid);
  win.start(o.sidecar_pid);
  std::vector<double> tx_ms;
  auto t0 = Clock::now();
  std::string payload(40, 'x');
  for (int k = 0; k < o.writes; ++k) {
    std::this_thread::sleep_until(t0 + std::chrono::milliseconds(static_cast<long long>(k) * o.interval_ms));
    std::string sql = where ? "INSERT INTO " + G.table + " (owner_id, seq, payload) SELECT g, " + std::to_string(k) +
                                  ", '" + payload + "' FROM generate_series(1, " + std::to_string(n) + ") g"
                            : "INSERT INTO " + G.table + " (seq, payload) VALUES (" + std::to_string(k) + ", '" +
                                  payload + "')";
    int64_t s = now_ns();
    G.sent.ns[k].store(s, std::memory_order_release);
    if (baseline) {
      int64_t seq = k;
      if (::write(trivial.ctrl, &seq, sizeof seq) != sizeof seq) std::cerr << "the baseline server is gone\n";
    } else {
      exec(w, sql);
    }
    tx_ms.push_back((now_ns() - s) / 1e6);
  }
  uint64_t expected = static_cast<uint64_t>(live) * o.writes;
  bool drained = wait_until([&] { return G.delivered.load() >= expected; }, 15);
  auto res = win.stop();
  perf.stop();
  auto p_after = proc_sample(o.sidecar_pid);
  settle(o.sidecar_pid, 5);
  auto p_settled = proc_sample(o.sidecar_pid);

  // Burst (SSE): many rows per second.
  long long ntx = 0;
  double write_s = 0;
  int64_t first_send = 0;
  uint64_t bexp = 0;
  bool bdrained = true;
  Window::Result br{};
  if (burst_rows > 0) {
    settle(o.sidecar_pid, 10);
    long long rate = std::max<long long>(1, burst_rows / o.burst_seconds);  // rows/s
    long long per_tx = std::max<long long>(1, (rate + 199) / 200);           // ≤ 200 transactions/s
    ntx = (burst_rows + per_tx - 1) / per_tx;
    double tx_gap_ms = 1000.0 * o.burst_seconds / ntx;
    Window bw;
    bw.start(o.sidecar_pid);
    first_send = now_ns();
    auto b0 = Clock::now();
    long long seq = o.writes;
    for (long long t = 0; t < ntx; ++t) {
      std::this_thread::sleep_until(b0 + std::chrono::microseconds(static_cast<long long>(t * tx_gap_ms * 1000)));
      long long rows = std::min(per_tx, o.writes + burst_rows - seq);
      std::string sql = "INSERT INTO " + G.table + " (seq, payload) SELECT g, '" + payload + "' FROM generate_series(" +
                        std::to_string(seq) + ", " + std::to_string(seq + rows - 1) + ") g";
      int64_t s = now_ns();
      for (long long q = seq; q < seq + rows; ++q) G.sent.ns[q].store(s, std::memory_order_release);
      exec(w, sql);
      seq += rows;
    }
    write_s = secs_since(b0);
    bexp = static_cast<uint64_t>(live) * burst_rows;
    bdrained = wait_until([&] { return G.burst_delivered.load() >= bexp; }, 60);
    br = bw.stop();
  }

  G.stop = true;
  io.stop();  // the client threads end here; their statistics are read below
  std::string burst_row;
  if (burst_rows > 0) {
    std::vector<float> bl;
    int64_t last = 0;
    for (auto& t : G.ts) {
      bl.insert(bl.end(), t.burst_lat.begin(), t.burst_lat.end());
      last = std::max(last, t.last_burst_recv);
    }
    auto bs = stats(bl);
    double span = last > first_send ? (last - first_send) / 1e9 : 0;
    burst_row = "ROW burst | " + std::to_string(live) + " | " + std::to_string(burst_rows) + " rows in " +
                std::to_string(ntx) + " tx over " + fmt("%.1f", write_s) + " s | " + std::to_string(bs.n) + "/" +
                std::to_string(bexp) + (bdrained ? "" : " (not drained in 60 s)") + " | " + fmt("%.2f", span) +
                " | **" + fmt("%.0f", span > 0 ? bs.n / span : 0) + "** | " + fmt("%.1f", bs.median) + " | " +
                fmt("%.1f", bs.p99) + " | " + fmt("%.1f", bs.max) + " | " + fmt("%.0f", br.sidecar_pct) + " | " +
                fmt("%.0f", br.client_pct) + " | " + fmt("%.0f", br.sidecar_wait_pct) + " |";
  }
  std::vector<float> all;
  uint64_t dup = 0, bad = 0, rec = 0, empty = 0;
  for (auto& t : G.ts) {
    all.insert(all.end(), t.lat.begin(), t.lat.end());
    dup += t.dup;
    bad += t.bad_status;
    rec += t.reconnects;
    empty += t.empty;
  }
  {
    // Per write (stderr): where in the run the latency comes from.
    std::vector<std::vector<float>> per(o.writes);
    for (auto& t : G.ts)
      for (size_t i = 0; i < t.lat.size(); ++i)
        if (t.lat_seq[i] < per.size()) per[t.lat_seq[i]].push_back(t.lat[i]);
    std::cerr << "  per write (tx ms / delivered / min / median / p99 / max ms):";
    for (int k = 0; k < o.writes; ++k) {
      auto ps = stats(per[k]);
      std::cerr << " [" << k << ": " << fmt("%.0f", k < static_cast<int>(tx_ms.size()) ? tx_ms[k] : 0) << " / " << ps.n
                << " / " << fmt("%.2f", ps.min) << " / " << fmt("%.2f", ps.median) << " / " << fmt("%.2f", ps.p99)
                << " / " << fmt("%.2f", ps.max) << "]";
    }
    std::cerr << "\n";
  }
  auto s = stats(all);
  double tx_mean = 0;
  for (double x : tx_ms) tx_mean += x / tx_ms.size();
  double per_conn = live > 0 ? (p_idle.rss_kb - p_before.rss_kb) * 1024.0 / live : 0;
  std::string notes;
  if (!drained) notes += "not all delivered within 15 s after the last write; ";
  if (dup) notes += std::to_string(dup) + " duplicates; ";
  if (bad) notes += std::to_string(bad) + " non-200; ";
  if (rec) notes += std::to_string(rec) + " reconnects; ";
  if (G.failed.load()) notes += std::to_string(G.failed.load()) + " clients failed to connect; ";
  if (where) notes += "write tx (N rows) " + fmt("%.0f", tx_mean) + " ms; ";
  notes += "RSS after the writes " + mib(p_settled.rss_kb) + " MiB; ";
  notes += "connect " + fmt("%.1f", connect_s) + " s; machine " + fmt("%.0f", res.machine_pct) +
           "% busy; sidecar threads waited for a CPU " + fmt("%.0f", res.sidecar_wait_pct) + "% of the window";
  std::string label = sse         ? "C: SSE, one shape"
                      : where     ? "B: long-poll, own shape each"
                      : baseline  ? "L: long-poll, trivial server (the load client's ceiling)"
                                  : "A: long-poll, one shape";
  std::cout << "ROW live | " << label << " | " << live << " | " << s.n << "/" << expected << " | "
            << fmt("%.2f", s.median) << " | " << fmt("%.1f", s.p99) << " | " << fmt("%.1f", s.max) << " | "
            << fmt("%.0f", res.sidecar_pct) << " | " << fmt("%.0f", res.client_pct) << " | " << mib(p_before.rss_kb)
            << " | " << mib(p_idle.rss_kb) << " | " << fmt("%.0f", per_conn) << " | "
            << mib(std::max(p_after.hwm_kb, p_after.rss_kb)) << " | " << notes << " |\n";
  if (!shapes_row.empty()) std::cout << shapes_row << "\n";
  if (!burst_row.empty()) std::cout << burst_row << "\n";
  std::cout.flush();
  for (auto& t : G.ts)
    if (!t.last_error.empty()) std::cerr << "  last error: " << t.last_error << "\n";
  std::fflush(stdout);
  std::fflush(stderr);
  // Hundreds of thousands of suspended coroutines and sockets: let the kernel clean up.
  std::_Exit(0);
}

void scenario_sync() {
  const Options& o = G.opt;
  G.table = "fanout_sync";
  PGconn* w = connect_db(o.url);
  exec(w, "SET client_min_messages = warning");
  exec(w, "DROP TABLE IF EXISTS " + G.table);
  std::cerr << "  loading " << o.rows << " rows\n";
  exec(w, "CREATE TABLE " + G.table +
              " (id bigint PRIMARY KEY, owner_id int NOT NULL, title text NOT NULL, amount numeric(12,2), "
              "created_at timestamptz NOT NULL, done boolean NOT NULL)");
  exec(w, "INSERT INTO " + G.table + " SELECT g, g % 1000, 'item number ' || g, (g % 100000) / 100.0, "
          "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', g % 3 = 0 FROM generate_series(1, " +
              std::to_string(o.rows) + ") g");
  exec(w, "VACUUM ANALYZE " + G.table);
  exec(w, "SELECT shapesync.track('" + G.table + "')");
  std::string cols = "id, owner_id, title, amount, created_at, done";

  // COPY of the same rows and columns.
  auto copy_once = [&] {
    auto t0 = Clock::now();
    PGresult* r = PQexec(w, ("COPY (SELECT " + cols + " FROM " + G.table + ") TO STDOUT").c_str());
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
      std::cerr << "COPY: " << PQerrorMessage(w);
      std::exit(1);
    }
    PQclear(r);
    long long bytes = 0, rows = 0;
    char* buf;
    int len;
    while ((len = PQgetCopyData(w, &buf, 0)) > 0) {
      bytes += len;
      ++rows;
      PQfreemem(buf);
    }
    while ((r = PQgetResult(w))) PQclear(r);
    return std::tuple<double, long long, long long>(secs_since(t0), rows, bytes);
  };
  copy_once();  // warm the buffer cache for both
  auto [copy_s, copy_rows, copy_bytes] = copy_once();

  Window cw;
  Perf perf;
  perf.start(o.perf_out, o.sidecar_pid);
  cw.start(o.sidecar_pid);
  auto t0 = Clock::now();
  auto cold = sync_shape("/v1/shape?table=" + G.table);
  double cold_s = secs_since(t0);
  auto cr = cw.stop();
  perf.stop();
  auto p_cold = proc_sample(o.sidecar_pid);
  Window ww;
  ww.start(o.sidecar_pid);
  t0 = Clock::now();
  auto warm = sync_shape("/v1/shape?table=" + G.table);
  double warm_s = secs_since(t0);
  auto wr = ww.stop();
  auto p_warm = proc_sample(o.sidecar_pid);
  if (cold.rows != o.rows || warm.rows != o.rows)
    std::cerr << "warning: shape delivered " << cold.rows << " / " << warm.rows << " rows, table has " << o.rows << "\n";
  double copy_rate = copy_rows / copy_s;
  auto row = [&](const std::string& what, double s, long long rows, long long bytes, long long reqs, double cpu,
                 double ratio_base, long long rss_kb, const Window::Result* w) {
    std::cout << "ROW sync | " << what << " | " << rows << " | " << reqs << " | " << fmt("%.2f", s) << " | "
              << fmt("%.0f", rows / s) << " | " << fmt("%.1f", bytes / s / 1048576.0) << " | "
              << fmt("%.1f", bytes / 1048576.0) << " | " << fmt("%.2f", (rows / s) / ratio_base) << " | "
              << (cpu < 0 ? std::string("–") : fmt("%.0f", cpu)) << " | "
              << (rss_kb < 0 ? std::string("–") : mib(rss_kb)) << " | "
              << (w ? fmt("%.0f", w->client_pct) : std::string("–")) << " | "
              << (w ? fmt("%.0f", w->machine_pct) : std::string("–")) << " |\n";
  };
  row("`COPY (SELECT ...) TO STDOUT` (libpq)", copy_s, copy_rows, copy_bytes, 1, -1, copy_rate, -1, nullptr);
  row("shapesync, cold (creates the shape: snapshot query, JSON, stores it in PostgreSQL)", cold_s, cold.rows,
      cold.bytes, cold.requests, cr.sidecar_pct, copy_rate, std::max(p_cold.hwm_kb, p_cold.rss_kb), &cr);
  row("shapesync, warm (second client, chunks served from memory)", warm_s, warm.rows, warm.bytes, warm.requests,
      wr.sidecar_pct, copy_rate, p_warm.rss_kb, &wr);
  std::cout.flush();
  exec(w, "DROP TABLE " + G.table);
  PQfinish(w);
}

}  // namespace

int main(int argc, char** argv) {
  Options& o = G.opt;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--database-url") o.url = v;
    else if (a == "--http") {
      o.host = v.substr(0, v.rfind(':'));
      o.port = v.substr(v.rfind(':') + 1);
    } else if (a == "--scenario") o.scenario = v;
    else if (a == "--clients") o.clients = std::stoi(v);
    else if (a == "--writes") o.writes = std::stoi(v);
    else if (a == "--interval-ms") o.interval_ms = std::stoi(v);
    else if (a == "--sidecar-pid") o.sidecar_pid = std::stoi(v);
    else if (a == "--threads") o.threads = std::max(1, std::stoi(v));
    else if (a == "--connect-batch") o.connect_batch = std::max(1, std::stoi(v));
    else if (a == "--burst-deliveries") o.burst_deliveries = std::stoll(v);
    else if (a == "--burst-seconds") o.burst_seconds = std::max(1, std::stoi(v));
    else if (a == "--rows") o.rows = std::stoll(v);
    else if (a == "--perf-out") o.perf_out = v;
    else {
      std::cerr << "unknown option " << a << "\n";
      return 2;
    }
  }
  if (o.url.empty()) {
    std::cerr << "usage: fanout --database-url URL --http HOST:PORT --scenario longpoll|sse|where|baseline|sync [--clients N] "
                 "[--writes W] [--interval-ms MS] [--sidecar-pid PID] [--threads T] [--connect-batch B] "
                 "[--burst-deliveries D] [--burst-seconds S] [--rows R] [--perf-out FILE]\n";
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (o.scenario == "sync") scenario_sync();
  else if (o.scenario == "longpoll" || o.scenario == "sse" || o.scenario == "where" || o.scenario == "baseline")
    scenario_live();
  else {
    std::cerr << "unknown scenario " << o.scenario << "\n";
    return 2;
  }
  return 0;
}
