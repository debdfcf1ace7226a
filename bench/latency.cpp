// Commit-to-client latency of a live shape, next to the raw LISTEN/NOTIFY round
// trip measured by the same program in the same run.
//
//   latency --database-url URL --http 127.0.0.1:3000 [--count 1000] [--table bench_latency] [--gap-ms 0]
//
// 1. LISTEN/NOTIFY: one connection LISTENs, another sends NOTIFY in its own
//    transaction; time from sending to the listener receiving it.
// 2. shapesync: one live client long-polls GET /v1/shape on a tracked table;
//    another connection INSERTs one row per transaction; time from sending the
//    INSERT to the client receiving the row. Sequential: one row in flight.
//    The same run splits that time into stages: the writer's INSERT round
//    trip (commit acknowledged); a third connection that LISTENs on the
//    ticker's channel (shapesync) receiving the first tick notification after
//    the INSERT was sent; from there to the client receiving the row.
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <libpq-fe.h>
#include <nlohmann/json.hpp>

#include "common.hpp"

namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using namespace bench;

namespace {

std::vector<double> listen_notify(const std::string& url, int n, int gap_ms) {
  PGconn* l = connect_db(url);
  PGconn* s = connect_db(url);
  exec(l, "LISTEN bench_latency");
  std::vector<double> out;
  for (int i = 0; i < n; ++i) {
    if (gap_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
    auto t0 = Clock::now();
    exec(s, "NOTIFY bench_latency, '" + std::to_string(i) + "'");
    for (;;) {
      PQconsumeInput(l);
      PGnotify* note = PQnotifies(l);
      if (note) {
        PQfreemem(note);
        break;
      }
      pollfd p{PQsocket(l), POLLIN, 0};
      poll(&p, 1, 1000);
    }
    out.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  PQfinish(l);
  PQfinish(s);
  return out;
}

struct HttpTarget {
  std::string host, port;
};

http::response<http::string_body> get(tcp::socket& sock, const HttpTarget& h, const std::string& target) {
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, h.host);
  http::write(sock, req);
  boost::beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(sock, buf, res);
  return res;
}

struct Stages {
  std::vector<double> total, commit, tick, deliver;  // ms: sent->seen, sent->committed, sent->tick, tick->seen
};

Stages shape_latency(const std::string& url, const HttpTarget& h, const std::string& table, int n, int gap_ms) {
  PGconn* w = connect_db(url);
  exec(w, "DROP TABLE IF EXISTS " + table);
  exec(w, "CREATE TABLE " + table + " (id int PRIMARY KEY, payload text)");
  exec(w, "SELECT shapesync.track('" + table + "')");

  boost::asio::io_context io;
  tcp::resolver resolver(io);
  tcp::socket sock(io);
  boost::asio::connect(sock, resolver.resolve(h.host, h.port));
  sock.set_option(tcp::no_delay(true));
  std::string base = "/v1/shape?table=" + table;
  auto r = get(sock, h, base + "&offset=-1");
  std::string handle(r["electric-handle"]);
  std::string offset(r["electric-offset"]);
  for (;;) {  // catch up to up-to-date
    r = get(sock, h, base + "&handle=" + handle + "&offset=" + offset);
    offset = std::string(r["electric-offset"]);
    if (r.find("electric-up-to-date") != r.end()) break;
  }

  std::mutex mu;
  std::condition_variable cv;
  std::vector<Clock::time_point> sent(n), committed(n), seen(n);
  int seen_count = 0;
  bool failed = false;

  // the ticker's notifications, as a listener of its own sees them
  std::vector<Clock::time_point> notes;
  std::atomic<bool> stop_listener{false};
  PGconn* tl = connect_db(url);
  exec(tl, "LISTEN shapesync");
  std::thread listener([&] {
    while (!stop_listener) {
      pollfd p{PQsocket(tl), POLLIN, 0};
      poll(&p, 1, 50);
      PQconsumeInput(tl);
      while (PGnotify* note = PQnotifies(tl)) {
        auto now = Clock::now();
        PQfreemem(note);
        std::lock_guard lk(mu);
        notes.push_back(now);
      }
    }
  });
  std::thread client([&] {
    std::string cursor;
    try {
      while (true) {
        {
          std::lock_guard lk(mu);
          if (seen_count >= n) return;
        }
        auto res = get(sock, h, base + "&handle=" + handle + "&offset=" + offset + "&live=true&cursor=" + cursor);
        auto now = Clock::now();
        if (res.result() != http::status::ok) throw std::runtime_error("status " + std::to_string(res.result_int()));
        offset = std::string(res["electric-offset"]);
        cursor = std::string(res["electric-cursor"]);
        auto body = nlohmann::json::parse(res.body());
        std::lock_guard lk(mu);
        for (auto& m : body) {
          if (!m.contains("value") || m["headers"]["operation"] != "insert") continue;
          int id = std::stoi(m["value"]["id"].get<std::string>());
          if (id >= 0 && id < n) {
            seen[id] = now;
            ++seen_count;
          }
        }
        cv.notify_all();
      }
    } catch (const std::exception& e) {
      std::cerr << "client: " << e.what() << "\n";
      std::lock_guard lk(mu);
      failed = true;
      cv.notify_all();
    }
  });
  for (int i = 0; i < n; ++i) {
    if (gap_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
    sent[i] = Clock::now();
    exec(w, "INSERT INTO " + table + " VALUES (" + std::to_string(i) + ", 'x')");
    committed[i] = Clock::now();
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, std::chrono::seconds(30), [&] { return seen_count > i || failed; }) || failed) {
      std::cerr << "row " << i << " never arrived\n";
      std::exit(1);
    }
  }
  client.join();
  stop_listener = true;
  listener.join();
  PQfinish(tl);
  auto ms = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  Stages out;
  size_t k = 0;
  for (int i = 0; i < n; ++i) {
    out.total.push_back(ms(sent[i], seen[i]));
    out.commit.push_back(ms(sent[i], committed[i]));
    // the first notification after the INSERT was sent (the ticker may tick
    // before the writer reads its commit's acknowledgement); none when the
    // listener lost the race with the client (then the stage is skipped)
    while (k < notes.size() && notes[k] < sent[i]) ++k;
    if (k < notes.size() && notes[k] <= seen[i]) {
      out.tick.push_back(ms(sent[i], notes[k]));
      out.deliver.push_back(ms(notes[k], seen[i]));
    }
  }
  exec(w, "DROP TABLE " + table);
  PQfinish(w);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string url, table = "bench_latency";
  HttpTarget h{"127.0.0.1", "3000"};
  int n = 1000, gap_ms = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--database-url") url = v;
    else if (a == "--http") {
      h.host = v.substr(0, v.rfind(':'));
      h.port = v.substr(v.rfind(':') + 1);
    } else if (a == "--count") n = std::stoi(v);
    else if (a == "--table") table = v;
    else if (a == "--gap-ms") gap_ms = std::stoi(v);
  }
  if (url.empty()) {
    std::cerr << "usage: latency --database-url URL --http HOST:PORT [--count N] [--table NAME] [--gap-ms MS]\n";
    return 2;
  }
  auto ln = stats(listen_notify(url, n, gap_ms));
  Stages st = shape_latency(url, h, table, n, gap_ms);
  auto sh = stats(st.total);
  std::printf("| path | n | median ms | p99 ms | max ms | mean ms |\n|---|---|---|---|---|---|\n");
  std::printf("| raw LISTEN/NOTIFY round trip | %d | %.3f | %.3f | %.3f | %.3f |\n", n, ln.median, ln.p99, ln.max, ln.mean);
  std::printf("| shapesync commit-to-client (live long-poll) | %d | %.3f | %.3f | %.3f | %.3f |\n", n, sh.median, sh.p99,
              sh.max, sh.mean);
  std::printf("| ratio shapesync / LISTEN-NOTIFY | | %.2f | %.2f | | %.2f |\n", sh.median / ln.median, sh.p99 / ln.p99,
              sh.mean / ln.mean);
  // where the time goes (same run): each stage's own distribution, so the
  // medians need not add up exactly to the total's
  auto row = [](const char* what, const std::vector<double>& v) {
    if (v.empty()) return;
    auto s = stats(v);
    std::printf("| %s | %zu | %.3f | %.3f | %.3f | %.3f |\n", what, v.size(), s.median, s.p99, s.max, s.mean);
  };
  std::printf("\n| stage of the shapesync path (same run) | n | median ms | p99 ms | max ms | mean ms |\n|---|---|---|---|---|---|\n");
  row("writer: INSERT sent → commit acknowledged", st.commit);
  row("writer + ticker: INSERT sent → its tick's NOTIFY at a listener", st.tick);
  row("sidecar: tick NOTIFY at a listener → row at the client", st.deliver);
  return 0;
}
