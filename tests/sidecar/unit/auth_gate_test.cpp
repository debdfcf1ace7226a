// The pure parts of the sidecar's authorization (docs/auth.md): claims → role,
// the caller key, shape-scoped token matching, the gate's 401/403 decisions
// on request headers, and the settings that refuse to start without a key.
#include "auth/claims.hpp"
#include "config.hpp"
#include "http/auth_gate.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

using namespace shapesync;
using nlohmann::json;
namespace http = boost::beast::http;

namespace {

const std::string kSecret = "0123456789abcdef0123456789abcdef-secret";

long long unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

ShapeParams params(std::string schema, std::string table, std::optional<std::string> where = std::nullopt,
                   std::optional<std::vector<std::string>> columns = std::nullopt) {
  ShapeParams p;
  p.table = QualifiedName{std::move(schema), std::move(table)};
  p.where = std::move(where);
  p.columns = std::move(columns);
  return p;
}

Config auth_config() {
  Config c;
  c.database_url = "postgresql:///x";
  c.jwt_secret = kSecret;
  return c;
}

http::fields with_auth(const std::string& value) {
  http::fields f;
  f.set(http::field::authorization, value);
  return f;
}

}  // namespace

TEST(RoleFromClaims, TopLevelClaim) {
  auto r = auth::role_from_claims(json{{"role", "authenticated"}, {"sub", "u"}}, "role", "");
  ASSERT_TRUE(r.role);
  EXPECT_EQ(*r.role, "authenticated");
}

TEST(RoleFromClaims, DottedPath) {
  json c = {{"app_metadata", {{"role", "editor"}}}, {"role", "ignored"}};
  auto r = auth::role_from_claims(c, ".app_metadata.role", "");
  ASSERT_TRUE(r.role);
  EXPECT_EQ(*r.role, "editor");
  EXPECT_FALSE(auth::role_from_claims(c, ".app_metadata.missing", "").role);
  EXPECT_FALSE(auth::role_from_claims(c, ".role.deeper", "").role);  // "ignored" is not an object
}

TEST(RoleFromClaims, MissingClaimUsesTheAnonymousRoleOrRefuses) {
  auto anon = auth::role_from_claims(json{{"sub", "u"}}, "role", "web_anon");
  ASSERT_TRUE(anon.role);
  EXPECT_EQ(*anon.role, "web_anon");
  auto none = auth::role_from_claims(json{{"sub", "u"}}, "role", "");
  EXPECT_FALSE(none.role);
  EXPECT_NE(none.error.find("role"), std::string::npos);
  // null counts as missing
  EXPECT_EQ(*auth::role_from_claims(json{{"role", nullptr}}, "role", "web_anon").role, "web_anon");
}

TEST(RoleFromClaims, RefusesRolesThatAreNotNames) {
  EXPECT_FALSE(auth::role_from_claims(json{{"role", 42}}, "role", "anon").role);  // present but not a string
  EXPECT_FALSE(auth::role_from_claims(json{{"role", ""}}, "role", "anon").role);
  EXPECT_FALSE(auth::role_from_claims(json{{"role", std::string(64, 'r')}}, "role", "").role);
  EXPECT_TRUE(auth::role_from_claims(json{{"role", std::string(63, 'r')}}, "role", "").role);
  EXPECT_FALSE(auth::role_from_claims(json{{"role", std::string("a\0b", 3)}}, "role", "").role);
}

TEST(CallerKey, DiffersByRoleAndByClaims) {
  std::string a = auth::caller_key("authenticated", R"({"sub":"a"})");
  EXPECT_NE(a, auth::caller_key("authenticated", R"({"sub":"b"})"));
  EXPECT_NE(a, auth::caller_key("admin", R"({"sub":"a"})"));
  EXPECT_EQ(a, auth::caller_key("authenticated", R"({"sub":"a"})"));
  // a role with a quote cannot forge another key's text
  EXPECT_NE(auth::caller_key("x\"|claims=", "{}"), auth::caller_key("x", "{}"));
  EXPECT_EQ(auth::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ShapeClaim, MatchesAfterNormalisation) {
  json claim = {{"table", "todos"}, {"where", "  owner = 'a  b'   AND  done "}, {"columns", {"title", "id"}}};
  EXPECT_EQ(shape_claim_mismatch(claim, params("public", "todos", "owner = 'a  b' AND done",
                                               std::vector<std::string>{"id", "title", "id"})),
            "");
  // quoted text keeps its blanks
  EXPECT_NE(shape_claim_mismatch(claim, params("public", "todos", "owner = 'a b' AND done",
                                               std::vector<std::string>{"id", "title"})),
            "");
}

TEST(ShapeClaim, EveryPartMustMatch) {
  json claim = {{"table", "app.todos"}, {"where", "id > 0"}, {"columns", "id,title"}};
  auto ok = params("app", "todos", "id > 0", std::vector<std::string>{"title", "id"});
  EXPECT_EQ(shape_claim_mismatch(claim, ok), "");
  EXPECT_NE(shape_claim_mismatch(claim, params("public", "todos", "id > 0", ok.columns)), "");   // schema
  EXPECT_NE(shape_claim_mismatch(claim, params("app", "todos", std::nullopt, ok.columns)), "");  // no where
  EXPECT_NE(shape_claim_mismatch(claim, params("app", "todos", "id > 0 OR true", ok.columns)), "");
  EXPECT_NE(shape_claim_mismatch(claim, params("app", "todos", "id > 0")), "");  // columns omitted
  EXPECT_NE(shape_claim_mismatch(claim, params("app", "todos", "id > 0", std::vector<std::string>{"id"})), "");
  // a claim without where or columns allows neither
  json table_only = {{"table", "todos"}};
  EXPECT_EQ(shape_claim_mismatch(table_only, params("public", "todos")), "");
  EXPECT_NE(shape_claim_mismatch(table_only, params("public", "todos", "true")), "");
  EXPECT_NE(shape_claim_mismatch(table_only, params("public", "todos", std::nullopt, std::vector<std::string>{"id"})), "");
}

TEST(ShapeClaim, ParamsAreBoundByTheToken) {
  json claim = {{"table", "todos"}, {"where", "owner = $1"}, {"params", {{"1", "alice"}}}};
  auto p = params("public", "todos", "owner = $1");
  p.params[1] = "alice";
  EXPECT_EQ(shape_claim_mismatch(claim, p), "");
  p.params[1] = "bob";
  EXPECT_NE(shape_claim_mismatch(claim, p), "");
  json as_array = {{"table", "todos"}, {"where", "owner = $1"}, {"params", {"bob"}}};
  EXPECT_EQ(shape_claim_mismatch(as_array, p), "");
  json no_params = {{"table", "todos"}, {"where", "owner = $1"}};
  EXPECT_NE(shape_claim_mismatch(no_params, p), "");  // the browser may not choose the value
}

TEST(ShapeClaim, MalformedClaimsNeverMatch) {
  auto p = params("public", "todos");
  EXPECT_NE(shape_claim_mismatch(json("todos"), p), "");
  EXPECT_NE(shape_claim_mismatch(json::object(), p), "");
  EXPECT_NE(shape_claim_mismatch(json{{"table", 1}}, p), "");
  EXPECT_NE(shape_claim_mismatch(json{{"table", "todos"}, {"where", 1}}, p), "");
  EXPECT_NE(shape_claim_mismatch(json{{"table", "todos"}, {"columns", {1}}}, p), "");
}

TEST(AuthGate, DecidesOnTheAuthorizationHeader) {
  Config cfg = auth_config();
  std::string err;
  auto gate = AuthGate::create(cfg, &err);
  ASSERT_TRUE(gate) << err;
  ASSERT_TRUE(gate->enabled());

  auto missing = gate->authenticate(http::fields{});
  ASSERT_TRUE(missing.refusal);
  EXPECT_EQ(missing.refusal->status, 401);
  EXPECT_EQ(missing.refusal->www_authenticate, "Bearer realm=\"shapesync\"");

  auto wrong_scheme = gate->authenticate(with_auth("Basic dXNlcjpwYXNz"));
  ASSERT_TRUE(wrong_scheme.refusal);
  EXPECT_EQ(wrong_scheme.refusal->status, 401);

  json claims = {{"sub", "u1"}, {"role", "authenticated"}, {"exp", unix_now() + 600}};
  std::string token = auth::sign_hmac("HS256", claims, kSecret);
  auto ok = gate->authenticate(with_auth("bearer  " + token));  // scheme case-insensitive
  ASSERT_FALSE(ok.refusal) << ok.refusal->body;
  ASSERT_TRUE(ok.caller.role);
  EXPECT_EQ(*ok.caller.role, "authenticated");
  EXPECT_EQ(json::parse(ok.caller.claims), claims);
  EXPECT_EQ(ok.caller.key, auth::caller_key("authenticated", ok.caller.claims));
  EXPECT_FALSE(ok.shape_claim);

  auto expired = gate->authenticate(
      with_auth("Bearer " + auth::sign_hmac("HS256", {{"role", "r"}, {"exp", unix_now() - 3600}}, kSecret)));
  ASSERT_TRUE(expired.refusal);
  EXPECT_EQ(expired.refusal->status, 401);
  EXPECT_NE(expired.refusal->www_authenticate.find("error=\"invalid_token\""), std::string::npos);
  EXPECT_NE(expired.refusal->www_authenticate.find("expired"), std::string::npos);

  auto forged = gate->authenticate(with_auth("Bearer " + token.substr(0, token.size() - 2) + "xx"));
  ASSERT_TRUE(forged.refusal);
  EXPECT_EQ(forged.refusal->status, 401);

  auto no_role = gate->authenticate(with_auth("Bearer " + auth::sign_hmac("HS256", {{"sub", "u"}}, kSecret)));
  ASSERT_TRUE(no_role.refusal);
  EXPECT_EQ(no_role.refusal->status, 403);

  auto scoped = gate->authenticate(
      with_auth("Bearer " + auth::sign_hmac("HS256", {{"role", "r"}, {"shape", {{"table", "t"}}}}, kSecret)));
  ASSERT_FALSE(scoped.refusal);
  ASSERT_TRUE(scoped.shape_claim);
  EXPECT_EQ((*scoped.shape_claim)["table"], "t");

  // verified once, then from the cache
  auto checks = gate->verifications();
  auto hits = gate->cache_hits();
  EXPECT_TRUE(gate->has_valid_token(with_auth("Bearer " + token)));
  EXPECT_EQ(gate->verifications(), checks);
  EXPECT_EQ(gate->cache_hits(), hits + 1);
  EXPECT_FALSE(gate->has_valid_token(http::fields{}));
}

// More tokens in use than the gate may remember (round robin, the pattern of
// many users' long-polls): most are still remembered, within the bound.
TEST(AuthGate, RemembersTokensWithinItsBoundWhenMoreAreInUse) {
  Config cfg = auth_config();
  cfg.jwt_cache_entries = 100;
  std::string err;
  auto gate = AuthGate::create(cfg, &err);
  ASSERT_TRUE(gate) << err;
  std::vector<http::fields> users;
  for (int i = 0; i < 150; ++i)
    users.push_back(with_auth("Bearer " + auth::sign_hmac("HS256", {{"sub", "u" + std::to_string(i)},
                                                                     {"role", "authenticated"},
                                                                     {"exp", unix_now() + 600}},
                                                          kSecret)));
  for (auto& h : users) ASSERT_FALSE(gate->authenticate(h).refusal);
  EXPECT_EQ(gate->verifications(), 150u);
  EXPECT_LE(gate->remembered(), 100u);
  auto checks = gate->verifications();
  for (int pass = 0; pass < 4; ++pass)
    for (auto& h : users) ASSERT_FALSE(gate->authenticate(h).refusal);
  EXPECT_LE(gate->remembered(), 100u);
  // 600 requests; a gate that forgot everything when full (or evicted the
  // least recently used) would check every one of them again
  EXPECT_LT(gate->verifications() - checks, 600u * 3 / 4) << "hits: " << gate->cache_hits();
  EXPECT_GT(gate->cache_hits(), 600u / 4);
}

TEST(AuthGate, AnonymousRole) {
  Config cfg = auth_config();
  cfg.anonymous_role = "web_anon";
  std::string err;
  auto gate = AuthGate::create(cfg, &err);
  ASSERT_TRUE(gate) << err;
  auto anon = gate->authenticate(http::fields{});
  ASSERT_FALSE(anon.refusal);
  EXPECT_EQ(*anon.caller.role, "web_anon");
  EXPECT_EQ(anon.caller.claims, "{}");
  // a token that does not verify is still refused, not downgraded to anonymous
  auto bad = gate->authenticate(with_auth("Bearer x.y.z"));
  ASSERT_TRUE(bad.refusal);
  EXPECT_EQ(bad.refusal->status, 401);
}

TEST(AuthGate, WithoutKeysEveryRequestHasTheSidecarsRights) {
  Config cfg;
  cfg.insecure = true;
  std::string err;
  auto gate = AuthGate::create(cfg, &err);
  ASSERT_TRUE(gate);
  EXPECT_FALSE(gate->enabled());
  auto d = gate->authenticate(http::fields{});
  EXPECT_FALSE(d.refusal);
  EXPECT_FALSE(d.caller.role);
  EXPECT_EQ(d.caller.key, "");
}

TEST(AuthGate, RefusesUnusableKeys) {
  Config cfg = auth_config();
  cfg.jwt_secret = "short";
  std::string err;
  EXPECT_FALSE(AuthGate::create(cfg, &err));
  EXPECT_NE(err.find("--jwt-secret"), std::string::npos);
  cfg = auth_config();
  cfg.jwt_public_key_file = "/nonexistent/key.pem";
  EXPECT_FALSE(AuthGate::create(cfg, &err));
  EXPECT_NE(err.find("--jwt-public-key"), std::string::npos);
}

TEST(AuthConfig, RefusesToStartWithoutAKeyUnlessInsecure) {
  std::vector<std::string> base = {"shapesyncd", "--database-url", "postgresql:///x"};
  auto run = [](std::vector<std::string> a) {
    std::vector<char*> argv;
    for (auto& s : a) argv.push_back(s.data());
    return parse_config(static_cast<int>(argv.size()), argv.data());
  };
  auto refused = run(base);
  ASSERT_TRUE(std::holds_alternative<ConfigExit>(refused));
  EXPECT_EQ(std::get<ConfigExit>(refused).code, 2);
  EXPECT_NE(std::get<ConfigExit>(refused).message.find("--insecure"), std::string::npos);

  auto insecure = base;
  insecure.push_back("--insecure");  // a switch, no value
  auto c = run(insecure);
  ASSERT_TRUE(std::holds_alternative<Config>(c));
  EXPECT_TRUE(std::get<Config>(c).insecure);

  auto keyed = base;
  for (std::string a : {"--jwt-secret", kSecret.c_str(), "--jwt-role-claim", ".app.role", "--jwt-leeway", "5"})
    keyed.push_back(a);
  auto k = run(keyed);
  ASSERT_TRUE(std::holds_alternative<Config>(k));
  EXPECT_TRUE(std::get<Config>(k).auth_enabled());
  EXPECT_EQ(std::get<Config>(k).jwt_role_claim, ".app.role");
  EXPECT_EQ(std::get<Config>(k).jwt_leeway_s, 5);

  auto anon_without_key = insecure;
  anon_without_key.push_back("--anonymous-role");
  anon_without_key.push_back("web_anon");
  EXPECT_TRUE(std::holds_alternative<ConfigExit>(run(anon_without_key)));
}
