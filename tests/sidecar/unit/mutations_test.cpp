// POST /v1/mutations without a database (docs/mutations.md): the body checks
// before anything reaches PostgreSQL, and the endpoint's answers for each
// outcome of the write service (a fake that records what it was asked).
#include "auth/jwt.hpp"
#include "fake_shape_source.hpp"
#include "http/app.hpp"
#include "http/mutations.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>

using namespace shapesync;
using shapesync::testing::FakeShapeSource;
using nlohmann::json;
namespace http = boost::beast::http;

namespace {

const std::string kSecret = "0123456789abcdef0123456789abcdef-secret";

MutationsRequestError error_of(std::string_view body, std::string_view ap = {},
                               std::optional<std::string> key = std::nullopt, int max = 1000) {
  auto r = parse_mutations_request(body, ap, key, max);
  EXPECT_TRUE(std::holds_alternative<MutationsRequestError>(r)) << body;
  if (auto* e = std::get_if<MutationsRequestError>(&r)) return *e;
  return {};
}

WriteRequest ok_of(std::string_view body, std::string_view ap = {}, std::optional<std::string> key = std::nullopt) {
  auto r = parse_mutations_request(body, ap, key, 1000);
  EXPECT_TRUE(std::holds_alternative<WriteRequest>(r)) << body;
  if (auto* w = std::get_if<WriteRequest>(&r)) return *w;
  return {};
}

const char* kOne = R"({"mutations":[{"id":"6f1b1d39-6e8e-4f5e-9b8a-2a0f7c1b2c3d","table":"todos","op":"insert","values":{"title":"x"}}]})";

}  // namespace

TEST(MutationsRequest, PassesTheArrayOnAsJson) {
  WriteRequest w = ok_of(kOne);
  json m = json::parse(w.mutations);
  ASSERT_TRUE(m.is_array());
  EXPECT_EQ(m[0]["values"]["title"], "x");
  EXPECT_FALSE(w.allow_partial);
  EXPECT_FALSE(w.idempotency_key);
}

TEST(MutationsRequest, MalformedBodiesAreNamed) {
  EXPECT_TRUE(error_of("").errors.errors.contains("body"));
  EXPECT_TRUE(error_of("{").errors.errors.contains("body"));
  EXPECT_TRUE(error_of("[1]").errors.errors.contains("body"));
  EXPECT_TRUE(error_of(R"({"mutations":{}})").errors.errors.contains("mutations"));
  EXPECT_TRUE(error_of(R"({"mutations":[]})").errors.errors.contains("mutations"));
  EXPECT_TRUE(error_of(R"({"mutations":[1]})").errors.errors.contains("mutations[0]"));
  EXPECT_TRUE(error_of(R"({"mutations":[{}],"extra":1})").errors.errors.contains("extra"));
  // invalid UTF-8 never reaches the database
  EXPECT_TRUE(error_of(std::string(R"({"mutations":[{"table":")") + "\xff\xfe" + R"("}]})").errors.errors.contains("body"));
}

TEST(MutationsRequest, DeepNestingIsRefusedBeforeParsing) {
  std::string deep = R"({"mutations":[{"values":{"j":)" + std::string(100000, '[') + std::string(100000, ']') + "}}]}";
  auto e = error_of(deep);
  ASSERT_TRUE(e.errors.errors.contains("body"));
  // brackets inside strings are not nesting
  ok_of(R"({"mutations":[{"values":{"a":")" + std::string(100, '[') + R"("}}]})");
  ok_of(R"({"mutations":[{"values":{"j":)" + std::string(50, '[') + std::string(50, ']') + "}}]}");
}

TEST(MutationsRequest, TooManyMutationsIs413) {
  std::string body = R"({"mutations":[)";
  for (int i = 0; i < 11; ++i) body += std::string(i ? "," : "") + "{}";
  body += "]}";
  auto e = error_of(body, {}, std::nullopt, 10);
  EXPECT_TRUE(e.too_large);
  EXPECT_TRUE(e.errors.errors.contains("mutations"));
}

TEST(MutationsRequest, AllowPartialFromQueryOrBody) {
  EXPECT_TRUE(ok_of(kOne, "true").allow_partial);
  EXPECT_TRUE(ok_of(R"({"mutations":[{}],"allow_partial":true})").allow_partial);
  EXPECT_TRUE(error_of(kOne, "yes").errors.errors.contains("allow_partial"));
  EXPECT_TRUE(error_of(R"({"mutations":[{}],"allow_partial":"true"})").errors.errors.contains("allow_partial"));
  EXPECT_TRUE(error_of(R"({"mutations":[{}],"allow_partial":true})", "false").errors.errors.contains("allow_partial"));
}

TEST(MutationsRequest, IdempotencyKeyIsPrintableAndBounded) {
  EXPECT_EQ(*ok_of(kOne, {}, std::string("k-1")).idempotency_key, "k-1");
  EXPECT_TRUE(error_of(kOne, {}, std::string()).errors.errors.contains("Idempotency-Key"));
  EXPECT_TRUE(error_of(kOne, {}, std::string(256, 'k')).errors.errors.contains("Idempotency-Key"));
  EXPECT_TRUE(error_of(kOne, {}, std::string("a\nb")).errors.errors.contains("Idempotency-Key"));
}

TEST(WriteErrors, ClassifiedBySqlstate) {
  using K = WriteOutcome::Kind;
  EXPECT_EQ(classify_write_error(PgError("x", "22023", false)), K::kBadInput);
  EXPECT_EQ(classify_write_error(PgError("x", "22P05", false)), K::kBadInput);
  EXPECT_EQ(classify_write_error(PgError("x", "54000", false)), K::kTooLarge);
  EXPECT_EQ(classify_write_error(PgError("x", "42501", false)), K::kForbidden);
  EXPECT_EQ(classify_write_error(PgError("x", "40001", false)), K::kRetry);
  EXPECT_EQ(classify_write_error(PgError("x", "40P01", false)), K::kRetry);
  EXPECT_EQ(classify_write_error(PgError("x", "57P01", true)), K::kDatabase);
  EXPECT_EQ(classify_write_error(PgError("x", "XX000", false)), K::kDatabase);
}

namespace {

// Records what it is asked and answers with `next`.
struct FakeWriter : MutationSink {
  WriteOutcome next;
  std::vector<std::pair<Caller, WriteRequest>> calls;
  asio::awaitable<WriteOutcome> apply(const Caller& who, const WriteRequest& req) override {
    calls.emplace_back(who, req);
    co_return next;
  }
};

struct MutationsHttp : ::testing::Test {
  Config cfg = [] {
    Config c;
    c.database_url = "postgresql:///x";
    c.jwt_secret = kSecret;
    return c;
  }();
  std::unique_ptr<FakeShapeSource> src;
  std::shared_ptr<AuthGate> gate;
  std::unique_ptr<App> app;
  FakeWriter writer;

  App& the_app(bool with_gate = true) {
    if (!app) {
      src = std::make_unique<FakeShapeSource>(cfg);
      if (with_gate) {
        std::string err;
        gate = AuthGate::create(cfg, &err);
        EXPECT_TRUE(gate) << err;
      }
      app = std::make_unique<App>(*src, gate);
      app->set_writer(&writer);
    }
    return *app;
  }
  static std::string token(json claims = {{"role", "authenticated"}, {"sub", "u1"}}) {
    return "Bearer " + auth::sign_hmac("HS256", claims, kSecret);
  }
  Request post(std::string body, std::optional<std::string> auth = token(), std::string target = "/v1/mutations") {
    Request req{http::verb::post, target, 11};
    req.set(http::field::content_type, "application/json");
    if (auth) req.set(http::field::authorization, *auth);
    req.body() = std::move(body);
    req.prepare_payload();
    return req;
  }
  Response request(Request req, bool with_gate = true) {
    App& a = the_app(with_gate);
    asio::io_context io;
    std::optional<Response> res;
    Deferred later;
    struct : StreamWriter {
      asio::awaitable<bool> write_head(Response&) override { co_return true; }
      asio::awaitable<bool> write_chunk(std::string) override { co_return true; }
    } out;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> { res = co_await a.handle(std::move(req), out, later); },
                   [](std::exception_ptr e) {
                     if (e) std::rethrow_exception(e);
                   });
    io.run();
    EXPECT_TRUE(res);
    return res ? *res : Response{http::status::internal_server_error, 11};
  }
};

}  // namespace

TEST_F(MutationsHttp, AppliedResultIs200WithTheDatabasesBody) {
  writer.next.body = R"({"txid":77,"committed":true,"invalid":false,"results":[]})";
  Request req = post(kOne);
  req.set("idempotency-key", "req-1");
  Response r = request(std::move(req));
  EXPECT_EQ(r.result(), http::status::ok);
  EXPECT_EQ(r.body(), writer.next.body);
  EXPECT_EQ(r[http::field::cache_control], "no-store");
  ASSERT_EQ(writer.calls.size(), 1u);
  EXPECT_EQ(*writer.calls[0].first.role, "authenticated");
  EXPECT_EQ(json::parse(writer.calls[0].first.claims)["sub"], "u1");
  EXPECT_EQ(*writer.calls[0].second.idempotency_key, "req-1");
}

TEST_F(MutationsHttp, InvalidResultIs400) {
  writer.next.body = R"({"txid":null,"committed":false,"invalid":true,"results":[]})";
  writer.next.invalid = true;
  EXPECT_EQ(request(post(kOne)).result(), http::status::bad_request);
}

TEST_F(MutationsHttp, DatabaseRefusalsMapToStatuses) {
  auto with = [&](WriteOutcome::Kind k, const char* state) {
    writer.next = WriteOutcome{};
    writer.next.kind = k;
    writer.next.db = PgError("refused", state, false);
    return request(post(kOne));
  };
  EXPECT_EQ(with(WriteOutcome::Kind::kBadInput, "22023").result(), http::status::bad_request);
  EXPECT_EQ(with(WriteOutcome::Kind::kTooLarge, "54000").result(), http::status::payload_too_large);
  Response forbidden = with(WriteOutcome::Kind::kForbidden, "42501");
  EXPECT_EQ(forbidden.result(), http::status::forbidden);
  EXPECT_EQ(json::parse(forbidden.body())["code"], "42501");
  Response retry = with(WriteOutcome::Kind::kRetry, "40001");
  EXPECT_EQ(retry.result(), http::status::service_unavailable);
  EXPECT_TRUE(retry.find(http::field::retry_after) != retry.end());
}

TEST_F(MutationsHttp, NothingReachesTheDatabaseWithoutAValidTokenAndBody) {
  EXPECT_EQ(request(post(kOne, std::nullopt)).result(), http::status::unauthorized);
  EXPECT_EQ(request(post(kOne, std::string("Bearer x.y.z"))).result(), http::status::unauthorized);
  EXPECT_EQ(request(post(kOne, "Bearer " + auth::sign_hmac("HS256", {{"role", "r"}}, "another secret of 32+ bytes!!!!")))
                .result(),
            http::status::unauthorized);
  // a shape-scoped token reads one shape and cannot write
  EXPECT_EQ(request(post(kOne, token({{"role", "r"}, {"shape", {{"table", "todos"}}}}))).result(),
            http::status::forbidden);
  EXPECT_EQ(request(post("{bad")).result(), http::status::bad_request);
  Request text = post(kOne);
  text.set(http::field::content_type, "text/plain");
  EXPECT_EQ(request(std::move(text)).result(), http::status::unsupported_media_type);
  Request get{http::verb::get, "/v1/mutations", 11};
  Response r = request(std::move(get));
  EXPECT_EQ(r.result(), http::status::method_not_allowed);
  EXPECT_EQ(r[http::field::allow], "POST, OPTIONS");
  EXPECT_TRUE(writer.calls.empty());
}

TEST_F(MutationsHttp, InsecureModeRefusesWrites) {
  cfg.jwt_secret.clear();
  cfg.insecure = true;
  Response r = request(post(kOne, std::nullopt), /*with_gate=*/false);
  EXPECT_EQ(r.result(), http::status::forbidden);
  EXPECT_EQ(json::parse(r.body())["code"], "writes_need_auth");
  EXPECT_TRUE(writer.calls.empty());
}

TEST_F(MutationsHttp, PreflightAllowsTheWriteHeaders) {
  Request req{http::verb::options, "/v1/mutations", 11};
  req.set(http::field::origin, "http://app.example");
  Response r = request(std::move(req));
  EXPECT_EQ(r.result(), http::status::no_content);
  EXPECT_NE(std::string(r[http::field::access_control_allow_headers]).find("idempotency-key"), std::string::npos);
  EXPECT_EQ(r[http::field::access_control_allow_origin], "http://app.example");
}
