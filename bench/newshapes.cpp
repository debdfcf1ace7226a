// bench/newshapes — new shapes per second over HTTP, and the reconnect storm
// (issue 15). An asynchronous load client (one thread, Boost.Beast):
//
//   newshapes --http HOST:PORT --table T --first K --count N --conns C
//             --mode create [--state FILE] [--sidecar-pid P] [--postmaster P]
//       N shapes `owner_id = k` (k = K..K+N-1), each requested from offset=-1
//       and followed to up-to-date, C at a time; writes each shape's handle and
//       offset to FILE (one "k handle offset" line each).
//   newshapes ... --mode resume --state FILE
//       the reconnect storm: every shape in FILE comes back with its handle and
//       offset at once (C connections at a time; a 409 starts that shape over
//       from offset=-1, counted) and is followed to up-to-date.
//   newshapes --serve-trivial PORT
//       a trivial HTTP server answering every GET with a fixed up-to-date body:
//       the load client's own ceiling, measured against it in the same run.
//
// Prints KV lines (KV key value) for the script: wall seconds, shapes/s,
// per-shape latency percentiles, CPU seconds of the load client itself, of the
// sidecar (--sidecar-pid) and of PostgreSQL (every child of --postmaster) over the run.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <unistd.h>

#include "common.hpp"

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using namespace bench;

namespace {

struct Options {
  std::string host = "127.0.0.1", port, table = "tp", mode = "create", state;
  int first = 1, count = 1000, conns = 64, sidecar_pid = 0, trivial_port = 0;
  int postmaster = 0;
  std::string column = "owner_id";
} O;

template <class T>
void kv(const std::string& k, const T& v) {
  std::cout << "KV " << k << " " << v << "\n";
  std::cout.flush();
}

struct ShapeState {
  int k = 0;
  std::string handle, offset;
  double latency_ms = 0;
  long long entries = 0;
  int refetches = 0;
  bool done = false;
};

long long count_entries(const std::string& body) {
  long long n = 0;
  for (size_t p = 0; (p = body.find("{\"key\":", p)) != std::string::npos; p += 7) ++n;
  return n;
}

struct Counters {
  std::atomic<long long> requests{0}, retries{0}, failures{0}, refetches{0};
  std::string last_error;
} C;

// One shape from its offset (or -1) to up-to-date over a connection of its own.
awaitable<void> follow_one(ShapeState& s, tcp::endpoint ep, int slot) {
  auto ex = co_await asio::this_coro::executor;
  std::string where = url_encode(O.column + " = " + std::to_string(s.k));
  auto t0 = Clock::now();
  std::optional<tcp::socket> sock;
  boost::beast::flat_buffer buf;
  for (int tries = 0; tries < 400;) {
    if (!sock) {
      sock.emplace(ex);
      boost::system::error_code ec;
      sock->open(tcp::v4(), ec);
      // spread the source addresses so that 20 000 connections fit the ephemeral ports
      if (!ec) sock->bind(tcp::endpoint(asio::ip::make_address_v4(0x7f000001u + static_cast<unsigned>(slot % 8)), 0), ec);
      if (!ec) co_await sock->async_connect(ep, asio::redirect_error(use_awaitable, ec));
      if (ec) {
        sock.reset();
        ++tries;
        ++C.retries;
        asio::steady_timer t(ex, std::chrono::milliseconds(50 + 20 * tries));
        co_await t.async_wait(use_awaitable);
        continue;
      }
      sock->set_option(tcp::no_delay(true));
      buf.clear();
    }
    std::string target = "/v1/shape?table=" + O.table + "&where=" + where + "&offset=" +
                         (s.offset.empty() ? std::string("-1") : s.offset) +
                         (s.handle.empty() ? std::string() : "&handle=" + s.handle);
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, O.host);
    http::response_parser<http::string_body> p;
    p.body_limit(std::numeric_limits<std::uint64_t>::max());
    boost::system::error_code ec;
    co_await http::async_write(*sock, req, asio::redirect_error(use_awaitable, ec));
    if (!ec) co_await http::async_read(*sock, buf, p, asio::redirect_error(use_awaitable, ec));
    ++C.requests;
    if (ec) {
      sock.reset();
      ++tries;
      ++C.retries;
      asio::steady_timer t(ex, std::chrono::milliseconds(100));
      co_await t.async_wait(use_awaitable);
      continue;
    }
    auto res = p.release();
    if (!res.keep_alive()) sock.reset();
    int st = res.result_int();
    if (st == 503 || st == 429) {
      ++tries;
      ++C.retries;
      asio::steady_timer t(ex, std::chrono::milliseconds(100));
      co_await t.async_wait(use_awaitable);
      continue;
    }
    if (st == 409) {  // rotated: start over from the new handle
      ++s.refetches;
      ++C.refetches;
      s.handle = std::string(res["electric-handle"]);
      s.offset.clear();
      continue;
    }
    if (st != 200) {
      ++C.failures;
      C.last_error = std::to_string(st) + " " + res.body().substr(0, 200);
      co_return;
    }
    s.entries += count_entries(res.body());
    s.handle = std::string(res["electric-handle"]);
    s.offset = std::string(res["electric-offset"]);
    if (res.find("electric-up-to-date") != res.end()) {
      s.done = true;
      break;
    }
  }
  s.latency_ms = secs_since(t0) * 1000;
  if (sock) {
    boost::system::error_code ec;
    sock->shutdown(tcp::socket::shutdown_both, ec);
  }
}

double cpu_s(int pid) { return pid > 0 ? proc_sample(pid).ticks / static_cast<double>(sysconf(_SC_CLK_TCK)) : 0; }
// CPU seconds of every child of the postmaster (backends, the ticker worker), by pid.
std::map<int, double> pg_children() {
  std::map<int, double> out;
  if (O.postmaster <= 0) return out;
  for (auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream st(e.path() / "stat");
    std::string all((std::istreambuf_iterator<char>(st)), std::istreambuf_iterator<char>());
    auto rp = all.rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream in(all.substr(rp + 2));
    std::string state;
    int ppid = 0;
    in >> state >> ppid;
    if (ppid == O.postmaster) out[std::stoi(name)] = cpu_s(std::stoi(name));
  }
  return out;
}
double pg_cpu_since(const std::map<int, double>& before) {
  double s = 0;
  for (auto& [pid, cpu] : pg_children()) {
    auto it = before.find(pid);
    s += cpu - (it == before.end() ? 0.0 : it->second);
  }
  return s;
}

int run_client() {
  std::vector<ShapeState> shapes;
  if (O.mode == "resume") {
    std::ifstream in(O.state);
    ShapeState s;
    while (in >> s.k >> s.handle >> s.offset) shapes.push_back(s);
    if (shapes.empty()) {
      std::cerr << "no shapes in " << O.state << "\n";
      return 2;
    }
  } else {
    for (int i = 0; i < O.count; ++i) shapes.push_back(ShapeState{O.first + i, "", "", 0, 0, 0, false});
  }
  asio::io_context io(1);
  tcp::endpoint ep(asio::ip::make_address(O.host), static_cast<unsigned short>(std::stoi(O.port)));
  std::atomic<size_t> next{0};
  double self0 = cpu_s(getpid()), side0 = cpu_s(O.sidecar_pid);
  auto pg0 = pg_children();
  auto m0 = machine_jiffies();
  auto t0 = Clock::now();
  int workers = std::min<int>(O.conns, static_cast<int>(shapes.size()));
  for (int w = 0; w < workers; ++w)
    asio::co_spawn(
        io,
        [&, w]() -> awaitable<void> {
          for (size_t i; (i = next.fetch_add(1)) < shapes.size();) co_await follow_one(shapes[i], ep, w);
        },
        asio::detached);
  io.run();
  double wall = secs_since(t0);
  auto m1 = machine_jiffies();
  std::vector<double> lat;
  long long done = 0, entries = 0;
  for (auto& s : shapes) {
    if (s.done) {
      ++done;
      lat.push_back(s.latency_ms);
    }
    entries += s.entries;
  }
  auto st = stats(lat);
  kv("mode", O.mode);
  kv("shapes", shapes.size());
  kv("up_to_date", done);
  kv("conns", workers);
  kv("wall_s", fmt("%.2f", wall));
  kv("shapes_per_s", fmt("%.0f", done / wall));
  kv("lat_ms_p50", fmt("%.1f", st.median));
  kv("lat_ms_p90", fmt("%.1f", st.p90));
  kv("lat_ms_p99", fmt("%.1f", st.p99));
  kv("lat_ms_max", fmt("%.1f", st.max));
  kv("entries", entries);
  kv("requests", C.requests.load());
  kv("retries", C.retries.load());
  kv("refetches", C.refetches.load());
  kv("failures", C.failures.load());
  kv("client_cpu_s", fmt("%.2f", cpu_s(getpid()) - self0));
  kv("sidecar_cpu_s", fmt("%.2f", cpu_s(O.sidecar_pid) - side0));
  kv("pg_cpu_s", fmt("%.2f", pg_cpu_since(pg0)));
  kv("machine_pct",
     fmt("%.0f", m1.second > m0.second ? 100.0 * (m1.first - m0.first) / (m1.second - m0.second) : 0));
  if (!C.last_error.empty()) std::cerr << "last error: " << C.last_error << "\n";
  if (!O.state.empty() && O.mode == "create") {
    std::ofstream out(O.state);
    for (auto& s : shapes)
      if (s.done) out << s.k << " " << s.handle << " " << s.offset << "\n";
  }
  return done == static_cast<long long>(shapes.size()) ? 0 : 1;
}

// A trivial server: every GET gets the same small up-to-date answer.
awaitable<void> trivial_session(tcp::socket sock) {
  static const std::string body =
      R"([{"headers":{"control":"up-to-date","global_last_seen_lsn":"1"}}])";
  boost::beast::flat_buffer buf;
  for (;;) {
    http::request<http::empty_body> req;
    boost::system::error_code ec;
    co_await http::async_read(sock, buf, req, asio::redirect_error(use_awaitable, ec));
    if (ec) co_return;
    http::response<http::string_body> res{http::status::ok, 11};
    res.set("electric-handle", "1-1");
    res.set("electric-offset", "0_0");
    res.set("electric-up-to-date", "");
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    res.body() = body;
    res.prepare_payload();
    co_await http::async_write(sock, res, asio::redirect_error(use_awaitable, ec));
    if (ec || !req.keep_alive()) co_return;
  }
}

int run_trivial() {
  asio::io_context io(1);
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(O.trivial_port)));
  acc.listen(4096);
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        for (;;) {
          boost::system::error_code ec;
          tcp::socket s = co_await acc.async_accept(asio::redirect_error(use_awaitable, ec));
          if (ec) {
            asio::steady_timer t(io, std::chrono::milliseconds(10));
            co_await t.async_wait(use_awaitable);
            continue;
          }
          asio::co_spawn(io, trivial_session(std::move(s)), asio::detached);
        }
      },
      asio::detached);
  io.run();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--http") {
      std::string v = val();
      auto c = v.rfind(':');
      O.host = v.substr(0, c);
      O.port = v.substr(c + 1);
    } else if (a == "--table") O.table = val();
    else if (a == "--column") O.column = val();
    else if (a == "--mode") O.mode = val();
    else if (a == "--state") O.state = val();
    else if (a == "--first") O.first = std::stoi(val());
    else if (a == "--count") O.count = std::stoi(val());
    else if (a == "--conns") O.conns = std::stoi(val());
    else if (a == "--sidecar-pid") O.sidecar_pid = std::stoi(val());
    else if (a == "--serve-trivial") O.trivial_port = std::stoi(val());
    else if (a == "--postmaster") O.postmaster = std::stoi(val());
    else {
      std::cerr << "usage: newshapes --http HOST:PORT [--table T] [--column C] --mode create|resume [--state FILE]\n"
                   "                 [--first K] [--count N] [--conns C] [--sidecar-pid P] [--postmaster P]\n"
                   "       newshapes --serve-trivial PORT\n";
      return 2;
    }
  }
  if (O.trivial_port) return run_trivial();
  if (O.port.empty() || (O.mode != "create" && O.mode != "resume") || (O.mode == "resume" && O.state.empty())) {
    std::cerr << "newshapes: --http and --mode create|resume (resume needs --state) are required\n";
    return 2;
  }
  return run_client();
}
