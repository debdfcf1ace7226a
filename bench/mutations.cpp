// What a write through POST /v1/mutations costs (docs/mutations.md, issue 12).
//
//   mutations --database-url URL --http HOST:PORT --secret SECRET --sidecar-pid PID --postmaster-pid PID
//             [--table bench_mut] [--rows 10000] [--seconds 3] [--rounds 3] [--batch 100] [--echo 300]
//             [--echo-gap-ms 5]
//             [--clients 1,2]
//
// URL is the sidecar's own login role (a member of `authenticated`); every
// libpq case acts as `authenticated` too (SET ROLE), as the sidecar does.
//
// 1. Own echo (first, while the shape's log is short): a live long-poll on the
//    table's shape is held open by a thread; one write at a time, alternating
//    a single-mutation POST /v1/mutations and, as the baseline, a libpq
//    UPDATE (one autocommit statement that also returns its txid); time from
//    sending the write to the first stream message whose headers.txids holds
//    the write's txid, and the round trip of the write alone. Writes are
//    --echo-gap-ms apart (more than the ticker's minimum interval).
// 2. Throughput: updates of random rows (`n` set to a random value), no base
//    version unless the case says so, for a fixed time per run; every case
//    with 1 and with 2 clients (threads, one connection each), all cases in
//    every round, their order reversed every other round. Client k of c
//    writes only rows with id % c == k, so clients never wait on each other's
//    row locks and base versions stay theirs. CPU of the sidecar process, of
//    all the cluster's processes (postmaster and its children) and of this
//    program from /proc over each run; the machine's other load is what
//    /proc/stat counts busy beyond those three.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <dirent.h>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "auth/jwt.hpp"
#include "common.hpp"

namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using namespace bench;
using nlohmann::json;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::cerr << "mutations bench: " << what << "\n";
  std::exit(1);
}

// ---------------------------------------------------------------- CPU samples

// utime + stime of the postmaster and its children (backends, ticker, WAL writer, ...).
long long cluster_ticks(int postmaster) {
  long long sum = proc_sample(postmaster).ticks;
  DIR* d = opendir("/proc");
  if (!d) return sum;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream st(std::string("/proc/") + e->d_name + "/stat");
    std::string all((std::istreambuf_iterator<char>(st)), std::istreambuf_iterator<char>());
    auto rp = all.rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream in(all.substr(rp + 2));
    std::string f;
    std::vector<std::string> fs;
    while (in >> f) fs.push_back(f);
    // after ")": state, ppid, ...; utime and stime are fields 14 and 15 of the line
    if (fs.size() > 12 && std::stoi(fs[1]) == postmaster) sum += std::stoll(fs[11]) + std::stoll(fs[12]);
  }
  closedir(d);
  return sum;
}

struct CpuMark {
  long long sidecar = 0, cluster = 0, self = 0, busy = 0, total = 0;
};

CpuMark mark(int sidecar_pid, int postmaster_pid) {
  CpuMark m;
  m.sidecar = proc_sample(sidecar_pid).ticks;
  m.cluster = cluster_ticks(postmaster_pid);
  m.self = proc_sample(static_cast<int>(getpid())).ticks;
  auto [busy, total] = machine_jiffies();
  m.busy = busy;
  m.total = total;
  return m;
}

// ---------------------------------------------------------------- HTTP

struct HttpConn {
  boost::asio::io_context io;
  std::string host, port;
  std::unique_ptr<boost::beast::tcp_stream> s;
  boost::beast::flat_buffer buf;
  explicit HttpConn(const std::string& hp) {
    auto c = hp.rfind(':');
    host = hp.substr(0, c);
    port = hp.substr(c + 1);
  }
  http::response<http::string_body> send(http::verb verb, const std::string& target, const std::string& bearer,
                                         std::string body = {}) {
    if (!s) {
      s = std::make_unique<boost::beast::tcp_stream>(io);
      tcp::resolver r(io);
      s->connect(r.resolve(host, port));
      s->socket().set_option(tcp::no_delay(true));
    }
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, host);
    req.set(http::field::authorization, "Bearer " + bearer);
    if (verb == http::verb::post) {
      req.set(http::field::content_type, "application/json");
      req.body() = std::move(body);
      req.prepare_payload();
    }
    http::write(*s, req);
    http::response_parser<http::string_body> parser;
    parser.body_limit(1ull << 30);
    http::read(*s, buf, parser);
    auto res = parser.release();
    if (!res.keep_alive()) s.reset();
    return res;
  }
  // Makes a read blocked in another thread return (an error).
  void shutdown() {
    if (s) ::shutdown(s->socket().native_handle(), SHUT_RDWR);
  }
};

// ---------------------------------------------------------------- mutations

std::string uuid4(std::mt19937_64& rng) {
  static const char* hex = "0123456789abcdef";
  uint64_t a = rng(), b = rng();
  a = (a & ~0xF000ull) | 0x4000ull;                      // version 4
  b = (b & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull;  // variant 10
  std::string o;
  o.reserve(36);
  for (int i = 0; i < 16; ++i) {
    uint64_t w = i < 8 ? a : b;
    int sh = (7 - (i % 8)) * 8;
    unsigned byte = static_cast<unsigned>((w >> sh) & 0xFF);
    if (i == 4 || i == 6 || i == 8 || i == 10) o += '-';
    o += hex[byte >> 4];
    o += hex[byte & 15];
  }
  return o;
}

// One update mutation; `version` empty: no base (applies unconditionally).
void append_mutation(std::string& o, const std::string& table, const std::string& id, int key, int n,
                     const std::string& version) {
  o += R"({"id":")" + id + R"(","table":")" + table + R"(","op":"update","key":{"id":)" + std::to_string(key) +
       R"(},"values":{"n":)" + std::to_string(n) + "}";
  if (!version.empty()) o += R"(,"base":{"version":")" + version + "\"}";
  o += '}';
}

// `"committed": true` in apply_mutations' answer (jsonb text or compact JSON):
// all or none, so every mutation applied.
bool committed(const std::string& body) {
  auto p = body.find("\"committed\"");
  if (p == std::string::npos) return false;
  p += 11;
  while (p < body.size() && (body[p] == ' ' || body[p] == ':')) ++p;
  return body.compare(p, 4, "true") == 0;
}

enum class Kind { kHttp, kHttpBase, kSqlUpdate, kSqlFunction, kSqlSidecarSequence };

struct Case {
  std::string name;
  Kind kind;
  int batch;
};

struct Shared {
  std::string table, token, claims;
  std::string http_hp, url;
  int rows = 0;
  std::vector<std::string> versions;  // by id: the row's version, for base.version cases (client k owns id % c == k)
};

// The statements the sidecar runs around apply_mutations (sidecar/src/db/mutations.cpp, act_as.cpp).
const char* kActAs =
    "SELECT set_config('request.jwt.claims', $1, true), "
    "(SELECT count(set_config('request.jwt.claim.' || e.k, "
    "CASE jsonb_typeof(e.v) WHEN 'string' THEN e.v #>> '{}' ELSE e.v::text END, true)) "
    "FROM jsonb_each($1::jsonb) AS e(k, v) WHERE e.k ~ '^[A-Za-z_][A-Za-z0-9_]*$')";

PGresult* exec_params(PGconn* c, const char* sql, std::vector<const char*> vals, ExecStatusType want) {
  PGresult* r = PQexecParams(c, sql, static_cast<int>(vals.size()), nullptr, vals.data(), nullptr, nullptr, 0);
  if (PQresultStatus(r) != want) die(std::string(sql).substr(0, 80) + ": " + PQerrorMessage(c));
  return r;
}

// One client: its HTTP connection and two database connections (`as_writer`:
// SET ROLE and the claims for the whole session; `plain`: the sidecar's login
// role, for the sidecar's statement sequence).
struct Client {
  Shared& sh;
  HttpConn http;
  PGconn* as_writer;
  PGconn* plain;
  std::mt19937_64 rng;
  Client(Shared& s, int seed) : sh(s), http(s.http_hp), rng(static_cast<uint64_t>(seed) * 7919 + 17) {
    as_writer = connect_db(sh.url);
    plain = connect_db(sh.url);
    exec(as_writer, "SET ROLE authenticated");
    PQclear(exec_params(as_writer, "SELECT set_config('request.jwt.claims', $1, false)", {sh.claims.c_str()},
                        PGRES_TUPLES_OK));
    PGresult* r = PQprepare(as_writer, "upd", ("UPDATE " + sh.table + " SET n = $2 WHERE id = $1").c_str(), 2, nullptr);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) die(std::string("prepare: ") + PQerrorMessage(as_writer));
    PQclear(r);
  }
  ~Client() {
    PQfinish(as_writer);
    PQfinish(plain);
  }

  // `batch` distinct random ids of this client's part of the table.
  std::vector<int> pick(int batch, int part, int parts) {
    std::vector<int> ids;
    int per = sh.rows / parts;
    std::uniform_int_distribution<int> d(0, per - 1);
    while (static_cast<int>(ids.size()) < batch) {
      int id = d(rng) * parts + part + 1;  // ids 1..rows; id % parts == (part + 1) % parts: a fixed class per client
      if (id > sh.rows || std::find(ids.begin(), ids.end(), id) != ids.end()) continue;
      ids.push_back(id);
    }
    return ids;
  }

  std::string body(const std::vector<int>& ids, bool with_base, std::string* array_only) {
    std::string arr = "[";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) arr += ',';
      append_mutation(arr, sh.table, uuid4(rng), ids[i], static_cast<int>(rng() % 1000000),
                      with_base ? sh.versions[static_cast<size_t>(ids[i])] : std::string());
    }
    arr += ']';
    if (array_only) *array_only = arr;
    return "{\"mutations\":" + arr + "}";
  }

  // One request / transaction of `k.batch` mutations.
  void unit(const Case& k, int part, int parts) {
    auto ids = pick(k.batch, part, parts);
    switch (k.kind) {
      case Kind::kHttp:
      case Kind::kHttpBase: {
        bool base = k.kind == Kind::kHttpBase;
        auto res = http.send(http::verb::post, "/v1/mutations", sh.token, body(ids, base, nullptr));
        if (res.result_int() != 200 || !committed(res.body()))
          die("POST /v1/mutations: " + std::to_string(res.result_int()) + " " + res.body().substr(0, 400));
        if (base) {  // the rows' new versions, for the next base
          auto j = json::parse(res.body());
          auto& rs = j.at("results");
          for (size_t i = 0; i < ids.size(); ++i)
            sh.versions[static_cast<size_t>(ids[i])] = rs.at(i).at("version").get<std::string>();
        }
        break;
      }
      case Kind::kSqlUpdate: {
        if (k.batch > 1) exec(as_writer, "BEGIN");
        for (int id : ids) {
          std::string a = std::to_string(id), b = std::to_string(rng() % 1000000);
          const char* v[2] = {a.c_str(), b.c_str()};
          PGresult* r = PQexecPrepared(as_writer, "upd", 2, v, nullptr, nullptr, 0);
          if (PQresultStatus(r) != PGRES_COMMAND_OK || std::string(PQcmdTuples(r)) != "1")
            die(std::string("UPDATE: ") + PQerrorMessage(as_writer));
          PQclear(r);
        }
        if (k.batch > 1) exec(as_writer, "COMMIT");
        break;
      }
      case Kind::kSqlFunction: {
        std::string arr;
        body(ids, false, &arr);
        PGresult* r = exec_params(as_writer, "SELECT shapesync.apply_mutations($1::jsonb)::text", {arr.c_str()},
                                  PGRES_TUPLES_OK);
        if (!committed(PQgetvalue(r, 0, 0))) die(std::string("apply_mutations: ") + PQgetvalue(r, 0, 0));
        PQclear(r);
        break;
      }
      case Kind::kSqlSidecarSequence: {
        std::string arr;
        body(ids, false, &arr);
        exec(plain, "BEGIN ISOLATION LEVEL READ COMMITTED");
        exec(plain, "SET LOCAL statement_timeout = 10000");
        PQclear(exec_params(plain, kActAs, {sh.claims.c_str()}, PGRES_TUPLES_OK));
        exec(plain, "SET LOCAL ROLE \"authenticated\"");
        PGresult* r = exec_params(plain, "SELECT shapesync.apply_mutations($1::jsonb, $2::text, $3::boolean)::text",
                                  {arr.c_str(), nullptr, "false"}, PGRES_TUPLES_OK);
        if (!committed(PQgetvalue(r, 0, 0))) die(std::string("apply_mutations: ") + PQgetvalue(r, 0, 0));
        PQclear(r);
        exec(plain, "COMMIT");
        break;
      }
    }
  }
};

struct Run {
  long long mutations = 0;
  double secs = 0;
  CpuMark a, b;
};

// ---------------------------------------------------------------- own echo

struct EchoResult {
  std::vector<double> post_rtt, post_echo, sql_rtt, sql_echo;
  CpuMark a, b;
};

EchoResult own_echo(Shared& sh, int count, int gap_ms, int sidecar_pid, int postmaster_pid) {
  EchoResult out;
  HttpConn stream(sh.http_hp), poster(sh.http_hp);
  std::string base = "/v1/shape?table=" + url_encode(sh.table);
  auto r = stream.send(http::verb::get, base + "&offset=-1", sh.token);
  if (r.result_int() != 200) die("GET shape: " + std::to_string(r.result_int()) + " " + r.body().substr(0, 300));
  std::string handle(r["electric-handle"]), offset(r["electric-offset"]);
  for (;;) {  // to up-to-date
    r = stream.send(http::verb::get, base + "&handle=" + handle + "&offset=" + offset, sh.token);
    if (r.result_int() != 200) die("GET shape (catch-up): " + std::to_string(r.result_int()));
    offset = std::string(r["electric-offset"]);
    if (r.find("electric-up-to-date") != r.end()) break;
  }

  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<uint64_t, Clock::time_point> arrived;  // txid → first stream message carrying it
  std::atomic<bool> stop{false};
  std::string failure;
  std::thread reader([&] {
    std::string cursor;
    try {
      while (!stop) {
        auto res = stream.send(http::verb::get,
                               base + "&handle=" + handle + "&offset=" + offset + "&live=true&cursor=" + cursor,
                               sh.token);
        auto now = Clock::now();
        if (res.result_int() != 200) throw std::runtime_error("live GET: status " + std::to_string(res.result_int()));
        offset = std::string(res["electric-offset"]);
        cursor = std::string(res["electric-cursor"]);
        auto body = json::parse(res.body());
        std::lock_guard lk(mu);
        for (auto& m : body) {
          auto h = m.find("headers");
          if (h == m.end() || !h->contains("txids")) continue;
          for (auto& t : (*h)["txids"]) arrived.emplace(t.get<uint64_t>(), now);
        }
        cv.notify_all();
      }
    } catch (const std::exception& e) {
      std::lock_guard lk(mu);
      if (!stop) failure = e.what();
      cv.notify_all();
    }
  });
  auto wait_for = [&](uint64_t txid) {
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, std::chrono::seconds(30), [&] { return arrived.count(txid) || !failure.empty(); }) ||
        !failure.empty())
      die("txid " + std::to_string(txid) + " never arrived on the stream " + failure);
    return arrived[txid];
  };
  auto ms = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); };

  Client c(sh, 999);
  PGresult* p = PQprepare(c.as_writer, "upd_txid",
                          ("WITH u AS (UPDATE " + sh.table +
                           " SET n = $2 WHERE id = $1 RETURNING 1) "
                           "SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text FROM u")
                              .c_str(),
                          2, nullptr);
  if (PQresultStatus(p) != PGRES_COMMAND_OK) die(std::string("prepare: ") + PQerrorMessage(c.as_writer));
  PQclear(p);
  out.a = mark(sidecar_pid, postmaster_pid);
  for (int i = 0; i < 2 * count; ++i) {
    // a pause longer than the ticker's minimum interval (shapesync.tick_min_interval_ms, 2 ms): each write
    // finds the ticker idle, as a lone write does, instead of waiting out the interval after the last echo
    sleep_ms(gap_ms);
    bool post = (i % 2 == 0) == ((i / 2) % 2 == 0);  // P S S P P S ...: neither always goes first
    int id = static_cast<int>(c.rng() % static_cast<uint64_t>(sh.rows)) + 1;
    if (post) {
      std::string b = c.body({id}, false, nullptr);
      auto t0 = Clock::now();
      auto res = poster.send(http::verb::post, "/v1/mutations", sh.token, b);
      auto t1 = Clock::now();
      if (res.result_int() != 200 || !committed(res.body())) die("POST: " + res.body().substr(0, 300));
      uint64_t txid = json::parse(res.body()).at("txid").get<uint64_t>();
      auto t2 = wait_for(txid);
      out.post_rtt.push_back(ms(t0, t1));
      out.post_echo.push_back(ms(t0, t2));
    } else {
      std::string a = std::to_string(id), v = std::to_string(c.rng() % 1000000);
      const char* vals[2] = {a.c_str(), v.c_str()};
      auto t0 = Clock::now();
      PGresult* q = PQexecPrepared(c.as_writer, "upd_txid", 2, vals, nullptr, nullptr, 0);
      auto t1 = Clock::now();
      if (PQresultStatus(q) != PGRES_TUPLES_OK || PQntuples(q) != 1) die(std::string("UPDATE: ") + PQerrorMessage(c.as_writer));
      uint64_t txid = std::stoull(PQgetvalue(q, 0, 0));
      PQclear(q);
      auto t2 = wait_for(txid);
      out.sql_rtt.push_back(ms(t0, t1));
      out.sql_echo.push_back(ms(t0, t2));
    }
  }
  out.b = mark(sidecar_pid, postmaster_pid);
  stop = true;
  stream.shutdown();
  reader.join();
  return out;
}

std::string pct_row(const std::string& what, const std::vector<double>& v) {
  auto s = stats(v);
  return "| " + what + " | " + std::to_string(s.n) + " | " + fmt("%.3f", s.median) + " | " + fmt("%.3f", s.p90) +
         " | " + fmt("%.3f", s.p99) + " | " + fmt("%.3f", s.max) + " | " + fmt("%.3f", s.mean) + " |";
}

std::string thousands(double v) {
  std::string s = fmt("%.0f", v), o;
  int n = 0;
  for (auto it = s.rbegin(); it != s.rend(); ++it) {
    if (n && n % 3 == 0 && *it != '-') o += ' ';
    o += *it;
    ++n;
  }
  return {o.rbegin(), o.rend()};
}

}  // namespace

int main(int argc, char** argv) {
  Shared sh;
  sh.table = "bench_mut";
  sh.rows = 10000;
  std::string secret;
  int sidecar_pid = 0, postmaster_pid = 0, rounds = 3, batch = 100, echo = 300, gap_ms = 5;
  double seconds = 3;
  std::vector<int> client_counts{1, 2};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--database-url") sh.url = v;
    else if (a == "--http") sh.http_hp = v;
    else if (a == "--secret") secret = v;
    else if (a == "--sidecar-pid") sidecar_pid = std::stoi(v);
    else if (a == "--postmaster-pid") postmaster_pid = std::stoi(v);
    else if (a == "--table") sh.table = v;
    else if (a == "--rows") sh.rows = std::stoi(v);
    else if (a == "--seconds") seconds = std::stod(v);
    else if (a == "--rounds") rounds = std::stoi(v);
    else if (a == "--batch") batch = std::stoi(v);
    else if (a == "--echo") echo = std::stoi(v);
    else if (a == "--echo-gap-ms") gap_ms = std::stoi(v);
    else if (a == "--clients") {
      client_counts.clear();
      std::stringstream ss(v);
      std::string x;
      while (std::getline(ss, x, ',')) client_counts.push_back(std::stoi(x));
    } else {
      die("unknown option " + a);
    }
  }
  if (sh.url.empty() || sh.http_hp.empty() || secret.empty() || sidecar_pid <= 0 || postmaster_pid <= 0)
    die("usage: mutations --database-url URL --http HOST:PORT --secret S --sidecar-pid P --postmaster-pid P "
        "[--table T] [--rows N] [--seconds S] [--rounds R] [--batch B] [--echo N] [--echo-gap-ms MS] [--clients 1,2]");
  long long exp = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                      .count() +
                  24 * 3600;
  json claims = {{"sub", "bench-writer"}, {"role", "authenticated"}, {"exp", exp}};
  sh.claims = claims.dump();
  sh.token = shapesync::auth::sign_hmac("HS256", claims, secret);
  sh.versions.assign(static_cast<size_t>(sh.rows) + 1, "");
  double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  auto other_pct = [&](const CpuMark& a, const CpuMark& b) {
    long long mine = (b.sidecar - a.sidecar) + (b.cluster - a.cluster) + (b.self - a.self);
    double tot = static_cast<double>(b.total - a.total);
    return tot > 0 ? std::max(0.0, 100.0 * static_cast<double>(b.busy - a.busy - mine) / tot) : 0.0;
  };

  // 1. own echo
  EchoResult e = own_echo(sh, echo, gap_ms, sidecar_pid, postmaster_pid);
  std::cout << "### Commit to own echo\n\n"
            << "One write at a time, " << echo << " of each kind, alternating, " << gap_ms
            << " ms apart; a live long-poll on the whole table's shape held open the whole time. Other load during this part: " << fmt("%.0f", other_pct(e.a, e.b))
            << "% of all CPUs.\n\n"
            << "| path | n | median ms | p90 ms | p99 ms | max ms | mean ms |\n|---|---:|---:|---:|---:|---:|---:|\n"
            << pct_row("POST /v1/mutations (1 update): round trip of the POST alone", e.post_rtt) << "\n"
            << pct_row("POST /v1/mutations (1 update): sent → its txid on the live stream", e.post_echo) << "\n"
            << pct_row("libpq UPDATE (one autocommit statement returning its txid): round trip", e.sql_rtt) << "\n"
            << pct_row("libpq UPDATE: sent → its txid on the live stream", e.sql_echo) << "\n";
  auto pe = stats(e.post_echo), se = stats(e.sql_echo), pr = stats(e.post_rtt), sr = stats(e.sql_rtt);
  std::cout << "| ratio POST / libpq, echo | | " << fmt("%.2f", pe.median / se.median) << " | " << fmt("%.2f", pe.p90 / se.p90)
            << " | " << fmt("%.2f", pe.p99 / se.p99) << " | | " << fmt("%.2f", pe.mean / se.mean) << " |\n"
            << "| ratio POST / libpq, round trip | | " << fmt("%.2f", pr.median / sr.median) << " | "
            << fmt("%.2f", pr.p90 / sr.p90) << " | " << fmt("%.2f", pr.p99 / sr.p99) << " | | "
            << fmt("%.2f", pr.mean / sr.mean) << " |\n\n";

  // 2. throughput
  std::vector<Case> cases = {
      {"POST /v1/mutations, 1 mutation per request", Kind::kHttp, 1},
      {"POST /v1/mutations, 1 mutation with base.version", Kind::kHttpBase, 1},
      {"libpq: the sidecar's 6 statements around apply_mutations, 1 mutation", Kind::kSqlSidecarSequence, 1},
      {"libpq: SELECT apply_mutations($1), 1 mutation (autocommit)", Kind::kSqlFunction, 1},
      {"libpq: UPDATE … WHERE id = $1, 1 per transaction (autocommit)", Kind::kSqlUpdate, 1},
      {"POST /v1/mutations, " + std::to_string(batch) + " mutations per request", Kind::kHttp, batch},
      {"POST /v1/mutations, " + std::to_string(batch) + " with base.version", Kind::kHttpBase, batch},
      {"libpq: SELECT apply_mutations($1), " + std::to_string(batch) + " mutations", Kind::kSqlFunction, batch},
      {"libpq: UPDATE … WHERE id = $1, " + std::to_string(batch) + " per transaction", Kind::kSqlUpdate, batch},
  };
  PGconn* ctl = connect_db(sh.url);
  exec(ctl, "SET ROLE authenticated");
  int max_clients = *std::max_element(client_counts.begin(), client_counts.end());
  std::vector<std::unique_ptr<Client>> clients;
  for (int k = 0; k < max_clients; ++k) clients.push_back(std::make_unique<Client>(sh, k));
  // warm-up: connections, plans, the sidecar's pool
  for (auto& c : cases) clients[0]->unit(c, 0, 1);
  std::map<std::pair<size_t, int>, std::vector<Run>> runs;  // (case, clients) → one per round
  for (int round = 0; round < rounds; ++round) {
    std::vector<size_t> order(cases.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (round % 2) std::reverse(order.begin(), order.end());
    for (int nc : client_counts) {
      for (size_t ci : order) {
        const Case& k = cases[ci];
        if (k.kind == Kind::kHttpBase) {
          for (auto& row : query(ctl, "SELECT id, shapesync.row_version(xmin)::text FROM " + sh.table))
            sh.versions[static_cast<size_t>(std::stoi(row[0]))] = row[1];
        }
        Run run;
        std::vector<long long> done(static_cast<size_t>(nc), 0);
        std::vector<std::thread> ts;
        run.a = mark(sidecar_pid, postmaster_pid);
        auto t0 = Clock::now();
        auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
        for (int k2 = 0; k2 < nc; ++k2)
          ts.emplace_back([&, k2] {
            while (Clock::now() < deadline) {
              clients[static_cast<size_t>(k2)]->unit(k, k2, nc);
              done[static_cast<size_t>(k2)] += k.batch;
            }
          });
        for (auto& t : ts) t.join();
        run.secs = secs_since(t0);
        run.b = mark(sidecar_pid, postmaster_pid);
        for (auto d : done) run.mutations += d;
        runs[{ci, nc}].push_back(run);
        std::cerr << "round " << round + 1 << ", " << nc << " client(s): " << k.name << ": "
                  << fmt("%.0f", static_cast<double>(run.mutations) / run.secs) << " mutations/s\n";
      }
    }
  }

  // median mutations/s over rounds, CPU over all rounds
  struct Agg {
    double rate = 0, lo = 0, hi = 0, sidecar_us = 0, cluster_us = 0, self_us = 0, other = 0, other_max = 0;
  };
  auto agg = [&](size_t ci, int nc) {
    Agg g;
    auto& rs = runs[{ci, nc}];
    std::vector<double> rates;
    long long muts = 0, sc = 0, cl = 0, se2 = 0;
    double other_sum = 0;
    for (auto& r : rs) {
      rates.push_back(static_cast<double>(r.mutations) / r.secs);
      muts += r.mutations;
      sc += r.b.sidecar - r.a.sidecar;
      cl += r.b.cluster - r.a.cluster;
      se2 += r.b.self - r.a.self;
      double o = other_pct(r.a, r.b);
      other_sum += o;
      g.other_max = std::max(g.other_max, o);
    }
    std::sort(rates.begin(), rates.end());
    g.rate = rates[rates.size() / 2];
    g.lo = rates.front();
    g.hi = rates.back();
    auto us = [&](long long t) { return static_cast<double>(t) / hz * 1e6 / static_cast<double>(muts); };
    g.sidecar_us = us(sc);
    g.cluster_us = us(cl);
    g.self_us = us(se2);
    g.other = other_sum / static_cast<double>(rs.size());
    return g;
  };
  std::cout << "### Throughput\n\n"
            << "Updates of random rows of a " << sh.rows << "-row table, " << fmt("%.0f", seconds) << " s per run, "
            << rounds << " rounds; mutations/s is the median over rounds (min–max in brackets). × UPDATE: this case's "
            << "mutations/s ÷ the plain UPDATE's with the same mutations per transaction and clients. CPU µs per "
            << "mutation over all rounds (" << fmt("%.0f", hz)
            << " Hz ticks): the sidecar process; the cluster (postmaster and all its children: backends, ticker, WAL "
               "writer, the sidecar's connections); this program (the clients). Other load: CPU busy on the machine "
               "beyond those three, % of all CPUs, mean (max) over the runs.\n\n";
  std::cout << "| case | clients | mutations/s | × UPDATE | sidecar µs/mut | PostgreSQL µs/mut | client µs/mut | other "
               "load % |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (int nc : client_counts) {
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      Agg g = agg(ci, nc);
      size_t ref = 0;
      for (size_t j = 0; j < cases.size(); ++j)
        if (cases[j].kind == Kind::kSqlUpdate && cases[j].batch == cases[ci].batch) ref = j;
      Agg r = agg(ref, nc);
      std::cout << "| " << cases[ci].name << " | " << nc << " | " << thousands(g.rate) << " (" << thousands(g.lo) << "–"
                << thousands(g.hi) << ") | " << fmt("%.2f", g.rate / r.rate) << " | " << fmt("%.1f", g.sidecar_us)
                << " | " << fmt("%.1f", g.cluster_us) << " | " << fmt("%.1f", g.self_us) << " | "
                << fmt("%.0f", g.other) << " (" << fmt("%.0f", g.other_max) << ") |\n";
    }
  }
  clients.clear();
  PQfinish(ctl);
  return 0;
}
