// What authorization costs (docs/auth.md, issue 11).
//
//   auth [--seconds S] [--cache-tokens N,N,...]
//        [--open HOST:PORT --open2 HOST:PORT --auth HOST:PORT [--auth-fresh HOST:PORT]
//         --secret SECRET --target PATH?QUERY --sub SUB --count N]
//
// 1. Verifications per second, in-process, one thread: HS256 and RS256
//    signature checks (JwtVerifier, every call verifies), a cached token
//    (JwtCache hit) and the whole gate on a request (AuthGate::decide).
// 2. How the gate's per-token memory behaves: N distinct valid tokens (N users,
//    each token used again and again, round robin) through AuthGate::decide;
//    requests per second and signature checks per request.
// 3. With --open/--open2/--auth: request latency of GET TARGET against sidecars
//    of one database in the same run, requests interleaved one by one in a
//    random order each round over keep-alive connections, and one request per
//    sidecar per round, so that no process is kept warmer than another:
//    --open (no key, --insecure) without a token; --open2 (another --insecure
//    process) with the token's header, which it ignores: open vs open2 is what
//    two processes and the header differ by (an A/A control); --auth
//    (--jwt-secret) with the same token every time (verified once); and
//    --auth-fresh (a second --jwt-secret process) with a new token each time
//    (new claims: one verification and one role-aware registration each).
//    --old-layout 1 (with --open and --open2, both without a key): the first
//    version's layout instead, two requests per round to one process and one
//    to the other, to show what that alone does to latency.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <array>
#include <iostream>
#include <random>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <sstream>

#include <time.h>

#include "auth/jwt.hpp"
#include "common.hpp"
#include "config.hpp"
#include "fake_shape_source.hpp"
#include "http/app.hpp"
#include "http/auth_gate.hpp"

namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using namespace bench;
using nlohmann::json;

namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};

std::string rs256_token(EVP_PKEY* key, const json& claims) {
  std::string input = shapesync::auth::base64url_encode(R"({"alg":"RS256","typ":"JWT"})") + "." +
                      shapesync::auth::base64url_encode(claims.dump());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  size_t len = 0;
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key);
  EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                 reinterpret_cast<const unsigned char*>(input.data()), input.size());
  EVP_MD_CTX_free(ctx);
  sig.resize(len);
  return input + "." + shapesync::auth::base64url_encode(sig);
}

std::string public_pem(EVP_PKEY* key) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(b, key);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(b);
  return pem;
}

// Calls f() repeatedly for about `seconds`; returns calls per second.
template <typename F>
double rate(double seconds, F&& f) {
  auto t0 = Clock::now();
  long long n = 0;
  while (secs_since(t0) < seconds) {
    for (int i = 0; i < 64; ++i) f();
    n += 64;
  }
  return static_cast<double>(n) / secs_since(t0);
}

long long unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// One keep-alive HTTP connection.
struct Conn {
  boost::asio::io_context& io;
  std::string host, port;
  std::unique_ptr<boost::beast::tcp_stream> s;
  boost::beast::flat_buffer buf;
  Conn(boost::asio::io_context& io, const std::string& hp) : io(io) {
    auto c = hp.rfind(':');
    host = hp.substr(0, c);
    port = hp.substr(c + 1);
  }
  // GET target; returns the status.
  int get(const std::string& target, const std::string& bearer) {
    if (!s) {
      s = std::make_unique<boost::beast::tcp_stream>(io);
      tcp::resolver r(io);
      s->connect(r.resolve(host, port));
    }
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, host);
    if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
    http::write(*s, req);
    http::response<http::string_body> res;
    http::read(*s, buf, res);
    if (!res.keep_alive()) s.reset();
    return res.result_int();
  }
};

std::string row(const std::string& what, std::vector<double> us) {
  std::sort(us.begin(), us.end());
  auto pct = [&](double p) { return us[std::min(us.size() - 1, static_cast<size_t>(p * us.size()))]; };
  double sum = 0;
  for (double v : us) sum += v;
  return "| " + what + " | " + fmt("%.0f", pct(0.5)) + " | " + fmt("%.0f", pct(0.9)) + " | " + fmt("%.0f", pct(0.99)) +
         " | " + fmt("%.0f", sum / us.size()) + " |";
}


// This thread's CPU time in seconds.
double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// A writer for App::handle that is never used (no SSE here).
struct NoWriter : shapesync::StreamWriter {
  boost::asio::awaitable<bool> write_head(shapesync::Response&) override { co_return false; }
  boost::asio::awaitable<bool> write_chunk(std::string) override { co_return false; }
};

// The request path in-process: App::handle (the gate, parameters, the shape
// lookup, the headers) and the response serialised as on the wire, for a
// shape of 100 rows held in memory (tests' FakeShapeSource, no database, no
// socket): `rounds` rounds alternating the two apps, `per_round` requests each;
// returns the median over rounds of CPU µs per request, for each app.
std::pair<double, double> request_path_us(const std::string& secret, const std::string& token, int rounds,
                                          int per_round) {
  using namespace shapesync;
  std::string chunk = "[";
  for (int i = 1; i <= 100; ++i)
    chunk += std::string(i > 1 ? "," : "") + R"({"key":"\"public\".\"items\"/\")" + std::to_string(i) +
             R"(\"","value":{"id":")" + std::to_string(i) + R"(","title":"row )" + std::to_string(i) +
             R"(","done":"f"},"headers":{"operation":"insert","relation":["public","items"]}})";
  chunk += "]";
  Config open_cfg;
  open_cfg.insecure = true;
  Config auth_cfg;
  auth_cfg.jwt_secret = secret;
  std::string err;
  auto open_gate = AuthGate::create(open_cfg, &err);
  auto auth_gate = AuthGate::create(auth_cfg, &err);
  testing::FakeShapeSource open_src(open_cfg), auth_src(auth_cfg);
  open_src.snapshot_chunks = {chunk, open_src.snapshot_chunks.back()};
  auth_src.snapshot_chunks = open_src.snapshot_chunks;
  App open_app(open_src, open_gate), auth_app(auth_src, auth_gate);
  boost::asio::io_context io;
  auto run = [&](App& app, int n) {
    size_t bytes = 0;
    boost::asio::co_spawn(
        io,
        [&]() -> boost::asio::awaitable<void> {
          for (int i = 0; i < n; ++i) {
            Request req{http::verb::get, "/v1/shape?table=items&offset=-1", 11};
            req.keep_alive(true);
            req.set(http::field::host, "127.0.0.1");
            req.set(http::field::authorization, "Bearer " + token);
            NoWriter out;
            Deferred later;
            auto res = co_await app.handle(std::move(req), out, later);
            std::ostringstream wire;  // the response as on the wire (Beast's serializer)
            wire << *res;
            bytes += wire.str().size();
          }
        },
        boost::asio::detached);
    io.run();
    io.restart();
    return bytes;
  };
  run(open_app, 200);  // the shapes exist, caches warm
  run(auth_app, 200);
  std::vector<double> o, a;
  for (int r = 0; r < rounds; ++r) {
    for (int k = 0; k < 2; ++k) {
      bool first_open = (r % 2 == 0) == (k == 0);
      double t0 = thread_cpu_s();  // CPU time: a round descheduled by other load does not count
      run(first_open ? open_app : auth_app, per_round);
      (first_open ? o : a).push_back((thread_cpu_s() - t0) * 1e6 / per_round);
    }
  }
  std::sort(o.begin(), o.end());
  std::sort(a.begin(), a.end());
  return {o[o.size() / 2], a[a.size() / 2]};
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 1.0;
  std::string open_hp, open2_hp, auth_hp, fresh_hp, secret = "bench-secret-bench-secret-bench-secret!!";
  std::string target = "/v1/shape?table=bench_auth&offset=-1", sub = "user-1";
  std::vector<int> cache_tokens = {1, 1000, 10000, 20000, 100000};
  int count = 2000;
  bool latency_only = false, old_layout = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--seconds") seconds = std::stod(v);
    else if (a == "--latency-only") latency_only = v != "0";
    else if (a == "--old-layout") old_layout = v != "0";
    else if (a == "--open") open_hp = v;
    else if (a == "--open2") open2_hp = v;
    else if (a == "--auth") auth_hp = v;
    else if (a == "--auth-fresh") fresh_hp = v;
    else if (a == "--secret") secret = v;
    else if (a == "--target") target = v;
    else if (a == "--sub") sub = v;
    else if (a == "--count") count = std::stoi(v);
    else if (a == "--cache-tokens") {
      cache_tokens.clear();
      for (size_t p = 0; p < v.size();) {
        size_t c = v.find(',', p);
        if (c == std::string::npos) c = v.size();
        if (c > p) cache_tokens.push_back(std::stoi(v.substr(p, c - p)));
        p = c + 1;
      }
    } else {
      std::cerr << "usage: auth [--seconds S] [--cache-tokens N,...] [--open HOST:PORT --open2 HOST:PORT --auth HOST:PORT"
                   " [--auth-fresh HOST:PORT] --secret S --target PATH?QUERY --sub SUB --count N]\n";
      return 2;
    }
  }

  using namespace shapesync::auth;
  shapesync::Config gate_cfg;
  gate_cfg.jwt_secret = secret;
  json claims = {{"sub", sub}, {"role", "authenticated"}, {"exp", unix_now() + 3600}};
  std::string hs = sign_hmac("HS256", claims, secret);
  if (!latency_only) {
  // 1. verifications per second
  std::unique_ptr<EVP_PKEY, PkeyFree> rsa(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048)));
  std::string rs = rs256_token(rsa.get(), claims);
  JwtOptions hs_opts;
  hs_opts.keys.push_back(*JwtKey::hmac(secret));
  JwtOptions rs_opts;
  rs_opts.keys.push_back(*JwtKey::from_pem(public_pem(rsa.get())));
  JwtVerifier hs_v(hs_opts), rs_v(rs_opts);
  JwtCache cache(hs_v);
  if (!hs_v.verify(hs).ok || !rs_v.verify(rs).ok || !cache.verify(hs).ok) {
    std::cerr << "auth bench: the tokens do not verify\n";
    return 1;
  }
  double hs_rate = rate(seconds, [&] { (void)hs_v.verify(hs); });
  double rs_rate = rate(seconds, [&] { (void)rs_v.verify(rs); });
  double hit_rate = rate(seconds, [&] { (void)cache.verify(hs); });
  // the whole gate on a request's headers: header, cached verification, role, claims text, caller key
  std::string gate_err;
  auto gate = shapesync::AuthGate::create(gate_cfg, &gate_err);
  if (!gate) {
    std::cerr << "auth bench: " << gate_err << "\n";
    return 1;
  }
  http::fields headers;
  headers.set(http::field::authorization, "Bearer " + hs);
  double gate_rate = rate(seconds, [&] { (void)gate->decide(headers); });
  std::cout << "| verification (one thread) | per second | µs each |\n|---|---:|---:|\n";
  std::cout << "| HS256 signature check (JwtVerifier) | " << fmt("%.0f", hs_rate) << " | " << fmt("%.2f", 1e6 / hs_rate)
            << " |\n";
  std::cout << "| RS256 (2048-bit) signature check | " << fmt("%.0f", rs_rate) << " | " << fmt("%.2f", 1e6 / rs_rate)
            << " |\n";
  std::cout << "| cached token (JwtCache hit) | " << fmt("%.0f", hit_rate) << " | " << fmt("%.2f", 1e6 / hit_rate)
            << " |\n";
  std::cout << "| the auth gate on a request with that token (AuthGate::decide) | " << fmt("%.0f", gate_rate)
            << " | " << fmt("%.2f", 1e6 / gate_rate) << " |\n";

  // 2. the gate's per-token memory: N users' tokens, round robin
  if (!cache_tokens.empty()) {
    std::cout << "\n| distinct valid tokens in use (round robin after a first pass that saw each) | gate requests per second |"
                 " signature checks per request | µs per request |\n"
                 "|---:|---:|---:|---:|\n";
    for (int n : cache_tokens) {
      auto g = shapesync::AuthGate::create(gate_cfg, &gate_err);
      std::vector<http::fields> hs_headers(static_cast<size_t>(n));
      for (int k = 0; k < n; ++k) {
        json c = claims;
        c["sub"] = "user-" + std::to_string(k);
        hs_headers[static_cast<size_t>(k)].set(http::field::authorization, "Bearer " + sign_hmac("HS256", c, secret));
      }
      for (auto& h : hs_headers) (void)g->decide(h);  // first pass: every token verified once
      std::uint64_t v0 = g->verifications();
      long long reqs = std::max<long long>(3LL * n, 30000);
      auto t0 = Clock::now();
      for (long long r = 0; r < reqs; ++r) {
        auto d = g->decide(hs_headers[static_cast<size_t>(r % n)]);
        if (d->refusal) {
          std::cerr << "auth bench: a cache-test token was refused\n";
          return 1;
        }
      }
      double secs = secs_since(t0);
      double checks = static_cast<double>(g->verifications() - v0) / static_cast<double>(reqs);
      std::cout << "| " << n << " | " << fmt("%.0f", reqs / secs) << " | " << fmt("%.3f", checks) << " | "
                << fmt("%.2f", secs * 1e6 / reqs) << " |\n";
    }
  }
  // 3. the request path in-process, with and without a key
  auto [path_open, path_auth] = request_path_us(secret, hs, 61, 5000);
  std::cout << "\n| the request path in-process (App::handle + serialising the response; a 100-row snapshot in memory;"
               " median of 61 rounds of 5000 requests, alternating; thread CPU time) | CPU µs per request |\n|---|---:|\n";
  std::cout << "| no key (--insecure), the token's header ignored | " << fmt("%.2f", path_open) << " |\n";
  std::cout << "| --jwt-secret, the same token | " << fmt("%.2f", path_auth) << " (" << fmt("%+.1f", 100 * (path_auth / path_open - 1))
            << "%) |\n";
  }  // !latency_only
  if (old_layout && !open_hp.empty() && !open2_hp.empty()) {
    // The layout of the first version of this benchmark, with no key anywhere:
    // process A gets two requests per round (no token; the token's header),
    // process B one. What B's extra latency is, nothing but being used less.
    auth_hp = open2_hp;
    open2_hp = open_hp;
  } else if (open_hp.empty() || open2_hp.empty() || auth_hp.empty()) {
    return 0;
  }

  // 4. request latency, interleaved, one request per sidecar per round
  boost::asio::io_context io;
  Conn open(io, open_hp), open2(io, open2_hp), authed(io, auth_hp), fresh_conn(io, fresh_hp.empty() ? auth_hp : fresh_hp);
  bool with_fresh = !fresh_hp.empty();
  // warm up: the shapes exist and are ready on every sidecar
  for (int i = 0; i < 50; ++i) {
    if (open.get(target, "") != 200 || open2.get(target, hs) != 200 || authed.get(target, hs) != 200 ||
        (with_fresh && fresh_conn.get(target, hs) != 200)) {
      std::cerr << "auth bench: warm-up request failed\n";
      return 1;
    }
  }
  std::vector<double> t_open, t_open2, t_same, t_fresh;
  std::mt19937 rng(42);
  for (int i = 0; i < count; ++i) {
    auto time = [&](Conn& c, const std::string& token, std::vector<double>& out) {
      auto t0 = Clock::now();
      int st = c.get(target, token);
      out.push_back(secs_since(t0) * 1e6);
      if (st != 200) {
        std::cerr << "auth bench: status " << st << "\n";
        std::exit(1);
      }
    };
    std::string fresh_token;
    if (with_fresh) {
      json fresh = claims;
      fresh["n"] = i;  // new claims, same user: new request key, one registration, the same shape
      fresh_token = sign_hmac("HS256", fresh, secret);
    }
    // the kinds in a random order each round, so none always follows another
    std::array<int, 4> order{0, 1, 2, 3};
    std::shuffle(order.begin(), order.end(), rng);
    for (int k : order) {
      if (k == 0) time(open, "", t_open);
      if (k == 1) time(open2, hs, t_open2);  // ignored by a sidecar without a key
      if (k == 2) time(authed, hs, t_same);
      if (k == 3 && with_fresh) time(fresh_conn, fresh_token, t_fresh);
    }
  }
  std::cout << "\n| GET " << target << " (" << count
            << " each, interleaved in random order, one per sidecar per round) | p50 µs | p90 µs | p99 µs | mean µs |\n"
               "|---|---:|---:|---:|---:|\n";
  if (old_layout) {
    std::cout << row("process A (no key): no token", t_open) << "\n";
    std::cout << row("process A (no key): the token's header (ignored)", t_open2) << "\n";
    std::cout << row("process B (no key): the token's header (ignored), one request per round where A gets two", t_same)
              << "\n";
  } else {
    std::cout << row("sidecar 1: no key (--insecure), no token", t_open) << "\n";
    std::cout << row("sidecar 2: no key (--insecure), the token's header (ignored) — A/A control", t_open2) << "\n";
    std::cout << row("sidecar 3: --jwt-secret, the same token (verified once)", t_same) << "\n";
  }
  if (with_fresh)
    std::cout << row("sidecar 4: --jwt-secret, a new token each time (verify + role-aware registration)", t_fresh) << "\n";
  auto p50 = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / static_cast<double>(v.size());
  };
  double base50 = (p50(t_open) + p50(t_open2)) / 2, basem = (mean(t_open) + mean(t_open2)) / 2;
  if (old_layout) {
    std::cout << "\nProcess B vs process A, no key anywhere: p50 " << fmt("%+.1f", 100 * (p50(t_same) / base50 - 1))
              << "%, mean " << fmt("%+.1f", 100 * (mean(t_same) / basem - 1)) << "%.\n";
    return 0;
  }
  std::cout << "\nWith a key and a known token vs without a key (the mean of sidecars 1 and 2): p50 "
            << fmt("%+.1f", 100 * (p50(t_same) / base50 - 1)) << "%, mean " << fmt("%+.1f", 100 * (mean(t_same) / basem - 1))
            << "%; the A/A control (sidecar 2 vs 1): p50 " << fmt("%+.1f", 100 * (p50(t_open2) / p50(t_open) - 1))
            << "%, mean " << fmt("%+.1f", 100 * (mean(t_open2) / mean(t_open) - 1)) << "%.\n";
  return 0;
}
