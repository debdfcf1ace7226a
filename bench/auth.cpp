// What authorization costs (docs/auth.md, issue 11).
//
//   auth [--seconds S] [--open HOST:PORT --auth HOST:PORT --secret SECRET --table T --count N]
//
// 1. Verifications per second, in-process, one thread: HS256 and RS256
//    signature checks (JwtVerifier, every call verifies) and a cached token
//    (JwtCache hit: what every request after a token's first costs).
// 2. With --open/--auth: request latency of GET /v1/shape?table=T&offset=-1
//    (the shape's snapshot, in memory after the first request) against two
//    sidecars of the same database in the same run, one without a key
//    (--insecure) and one with --jwt-secret, requests interleaved one by one
//    over keep-alive connections: no token (and, as a control, the token's
//    header sent to the sidecar that ignores it); the same token every time; a
//    fresh token (new claims) every time, which also registers the caller
//    with the extension (check_shape + get_or_create_shape with role and claims).
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

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

#include "auth/jwt.hpp"
#include "common.hpp"
#include "config.hpp"
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

}  // namespace

int main(int argc, char** argv) {
  double seconds = 1.0;
  std::string open_hp, auth_hp, secret = "bench-secret-bench-secret-bench-secret!!", table = "bench_auth";
  int count = 2000;
  bool with_fresh = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--seconds") seconds = std::stod(v);
    else if (a == "--open") open_hp = v;
    else if (a == "--auth") auth_hp = v;
    else if (a == "--secret") secret = v;
    else if (a == "--table") table = v;
    else if (a == "--count") count = std::stoi(v);
    else if (a == "--fresh") with_fresh = v != "0";
    else {
      std::cerr << "usage: auth [--seconds S] [--open HOST:PORT --auth HOST:PORT --secret S --table T --count N]\n";
      return 2;
    }
  }

  // 1. verifications per second
  using namespace shapesync::auth;
  json claims = {{"sub", "11111111-1111-4111-8111-111111111111"}, {"role", "authenticated"}, {"exp", unix_now() + 3600}};
  std::string hs = sign_hmac("HS256", claims, secret);
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
  shapesync::Config gate_cfg;
  gate_cfg.jwt_secret = secret;
  std::string gate_err;
  auto gate = shapesync::AuthGate::create(gate_cfg, &gate_err);
  if (!gate) {
    std::cerr << "auth bench: " << gate_err << "\n";
    return 1;
  }
  http::fields headers;
  headers.set(http::field::authorization, "Bearer " + hs);
  double gate_rate = rate(seconds, [&] { (void)gate->authenticate(headers); });
  std::cout << "| verification (one thread) | per second | µs each |\n|---|---:|---:|\n";
  std::cout << "| HS256 signature check (JwtVerifier) | " << fmt("%.0f", hs_rate) << " | " << fmt("%.2f", 1e6 / hs_rate)
            << " |\n";
  std::cout << "| RS256 (2048-bit) signature check | " << fmt("%.0f", rs_rate) << " | " << fmt("%.2f", 1e6 / rs_rate)
            << " |\n";
  std::cout << "| cached token (JwtCache hit) | " << fmt("%.0f", hit_rate) << " | " << fmt("%.2f", 1e6 / hit_rate)
            << " |\n";
  std::cout << "| the auth gate on a request with that token (AuthGate::authenticate) | " << fmt("%.0f", gate_rate)
            << " | " << fmt("%.2f", 1e6 / gate_rate) << " |\n";
  if (open_hp.empty() || auth_hp.empty()) return 0;

  // 2. request latency, interleaved
  boost::asio::io_context io;
  Conn open(io, open_hp), authed(io, auth_hp);
  std::string target = "/v1/shape?table=" + url_encode(table) + "&offset=-1";
  // warm up: the shapes exist and are ready on both sidecars
  for (int i = 0; i < 50; ++i) {
    if (open.get(target, "") != 200 || authed.get(target, hs) != 200) {
      std::cerr << "auth bench: warm-up request failed\n";
      return 1;
    }
  }
  std::vector<double> t_open, t_open_hdr, t_same, t_fresh;
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
    json fresh = claims;
    fresh["sub"] = "user-" + std::to_string(i);  // new claims: new request key, one registration
    std::string fresh_token = sign_hmac("HS256", fresh, secret);
    // the four kinds in a random order each round, so none always follows the slow one
    std::array<int, 4> order{0, 1, 2, 3};
    std::shuffle(order.begin(), order.end(), rng);
    for (int k : order) {
      if (k == 0) time(open, "", t_open);
      if (k == 1) time(open, hs, t_open_hdr);  // the same bytes on the wire, ignored: isolates the header's cost
      if (k == 2) time(authed, hs, t_same);
      if (k == 3 && with_fresh) time(authed, fresh_token, t_fresh);
    }
  }
  std::cout << "\n| GET " << target << " (" << count
            << " each, interleaved in random order) | p50 µs | p90 µs | p99 µs | mean µs |\n|---|---:|---:|---:|---:|\n";
  std::cout << row("no key (--insecure), no token", t_open) << "\n";
  std::cout << row("no key (--insecure), the same Authorization header (ignored)", t_open_hdr) << "\n";
  std::cout << row("--jwt-secret, the same token (cached verification)", t_same) << "\n";
  if (with_fresh)
    std::cout << row("--jwt-secret, a new token each time (verify + role-aware registration)", t_fresh) << "\n";
  return 0;
}
