// JWT verification (sidecar/src/auth/jwt.hpp): tokens made here with OpenSSL
// (keys generated per run), every forgery of issue 11 refused with its code.
#include "auth/jwt.hpp"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

using namespace shapesync::auth;
using nlohmann::json;
using Clock = std::chrono::system_clock;

namespace {

const std::string kSecret = "0123456789abcdef0123456789abcdef-secret";
const Clock::time_point kNow = Clock::time_point(std::chrono::seconds(1'800'000'000));
const int64_t kNowS = 1'800'000'000;

struct PkeyFree { void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); } };
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

Pkey rsa_key(int bits = 2048) { return Pkey(EVP_RSA_gen(bits)); }
Pkey ec_key(const char* curve = "P-256") { return Pkey(EVP_EC_gen(curve)); }

std::string public_pem(EVP_PKEY* k) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, k);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return pem;
}

std::string bn_param(EVP_PKEY* k, const char* name) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(k, name, &bn);
  std::string out(static_cast<std::size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  BN_free(bn);
  return out;
}

json rsa_jwk(EVP_PKEY* k) {
  return {{"kty", "RSA"}, {"n", base64url_encode(bn_param(k, OSSL_PKEY_PARAM_RSA_N))},
          {"e", base64url_encode(bn_param(k, OSSL_PKEY_PARAM_RSA_E))}};
}

json ec_jwk(EVP_PKEY* k) {
  unsigned char buf[200];
  std::size_t len = 0;
  EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, buf, sizeof(buf), &len);
  std::string pub(reinterpret_cast<char*>(buf), len);  // 04 || x || y
  std::size_t n = (len - 1) / 2;
  return {{"kty", "EC"}, {"crv", n == 32 ? "P-256" : "P-384"}, {"x", base64url_encode(pub.substr(1, n))},
          {"y", base64url_encode(pub.substr(1 + n, n))}};
}

std::string der_to_raw(const std::string& der, std::size_t n) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
  std::string raw(2 * n, '\0');
  BN_bn2binpad(ECDSA_SIG_get0_r(sig), reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(n));
  BN_bn2binpad(ECDSA_SIG_get0_s(sig), reinterpret_cast<unsigned char*>(raw.data()) + n, static_cast<int>(n));
  ECDSA_SIG_free(sig);
  return raw;
}

// A compact JWS signed with an asymmetric key (RS*/ES*); raw_ec=false leaves an ES signature in DER.
std::string sign_pkey(EVP_PKEY* k, const std::string& alg, const json& claims, json header = json::object(),
                      bool raw_ec = true) {
  header["alg"] = alg;
  std::string input = base64url_encode(header.dump()) + "." + base64url_encode(claims.dump());
  const EVP_MD* md = alg.ends_with("256") ? EVP_sha256() : alg.ends_with("384") ? EVP_sha384() : EVP_sha512();
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestSignInit(ctx, nullptr, md, nullptr, k);
  std::size_t len = 0;
  EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                 reinterpret_cast<const unsigned char*>(input.data()), input.size());
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (alg.starts_with("ES") && raw_ec) sig = der_to_raw(sig, alg == "ES256" ? 32 : 48);
  return input + "." + base64url_encode(sig);
}

// A token with any header and payload text and a signature made with an HMAC secret.
std::string raw_hmac_token(const std::string& header_text, const std::string& payload_text, std::string_view key,
                           const EVP_MD* md = EVP_sha256()) {
  std::string input = base64url_encode(header_text) + "." + base64url_encode(payload_text);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(md, key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(input.data()),
       input.size(), out, &len);
  return input + "." + base64url_encode(std::string(reinterpret_cast<char*>(out), len));
}

json claims(json extra = json::object()) {
  json c = {{"sub", "00000000-0000-0000-0000-00000000000a"}, {"role", "authenticated"}, {"exp", kNowS + 3600}};
  for (auto& [k, v] : extra.items()) c[k] = v;
  return c;
}

JwtVerifier hmac_verifier(JwtOptions o = {}) {
  o.keys.push_back(*JwtKey::hmac(kSecret));
  return JwtVerifier(std::move(o));
}

void expect_error(const JwtResult& r, JwtError e) {
  EXPECT_FALSE(r.ok) << "accepted";
  EXPECT_EQ(to_string(r.error), to_string(e)) << r.message;
}

}  // namespace

TEST(Base64Url, RoundTripAndStrictness) {
  for (std::string s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba", "foobar",
                                                 std::string("\0\xff\xfe", 3)})
    EXPECT_EQ(base64url_decode(base64url_encode(s)), s);
  EXPECT_EQ(base64url_encode("\xfb\xff"), "-_8");
  EXPECT_FALSE(base64url_decode("Zm9v="));   // padding
  EXPECT_FALSE(base64url_decode("+/8"));     // standard alphabet
  EXPECT_FALSE(base64url_decode("Zm 9v"));   // whitespace
  EXPECT_FALSE(base64url_decode("Z"));       // impossible length
  EXPECT_FALSE(base64url_decode("Zh"));      // non-zero trailing bits ("Zg" is canonical)
  EXPECT_TRUE(base64url_decode("Zg"));
}

TEST(Jwt, Hs256Hs384Hs512Accepted) {
  auto v = hmac_verifier();
  for (const char* alg : {"HS256", "HS384", "HS512"}) {
    auto r = v.verify(sign_hmac(alg, claims(), kSecret), kNow);
    ASSERT_TRUE(r.ok) << alg << ": " << r.message;
    EXPECT_EQ(r.claims["sub"], "00000000-0000-0000-0000-00000000000a");
  }
}

TEST(Jwt, Rs256WithPemAndJwks) {
  auto k = rsa_key();
  std::string err;
  auto pem_key = JwtKey::from_pem(public_pem(k.get()), &err);
  ASSERT_TRUE(pem_key) << err;
  EXPECT_EQ(pem_key->type(), JwtKey::Type::kRsa);
  JwtVerifier v(JwtOptions{.keys = {*pem_key}});
  for (const char* alg : {"RS256", "RS384", "RS512"}) {
    auto r = v.verify(sign_pkey(k.get(), alg, claims()), kNow);
    EXPECT_TRUE(r.ok) << alg << ": " << r.message;
  }

  json jwks = {{"keys", json::array({rsa_jwk(k.get())})}};
  auto keys = JwtKey::from_jwks(jwks.dump(), &err);
  ASSERT_EQ(keys.size(), 1u) << err;
  JwtVerifier v2(JwtOptions{.keys = keys});
  EXPECT_TRUE(v2.verify(sign_pkey(k.get(), "RS256", claims()), kNow).ok);
}

TEST(Jwt, Es256WithPemAndJwks) {
  auto k = ec_key();
  std::string err;
  auto key = JwtKey::from_pem(public_pem(k.get()), &err);
  ASSERT_TRUE(key) << err;
  EXPECT_TRUE(key->allows("ES256"));
  EXPECT_FALSE(key->allows("ES384"));
  JwtVerifier v(JwtOptions{.keys = {*key}});
  auto r = v.verify(sign_pkey(k.get(), "ES256", claims()), kNow);
  EXPECT_TRUE(r.ok) << r.message;

  auto jwk_key = JwtKey::from_jwk(ec_jwk(k.get()), &err);
  ASSERT_TRUE(jwk_key) << err;
  JwtVerifier v2(JwtOptions{.keys = {*jwk_key}});
  EXPECT_TRUE(v2.verify(sign_pkey(k.get(), "ES256", claims()), kNow).ok);

  // an ES256 signature must be raw r||s (JWS), not DER
  expect_error(v.verify(sign_pkey(k.get(), "ES256", claims(), json::object(), false), kNow),
               JwtError::kBadSignature);
  // ES384 with a P-384 key
  auto k384 = ec_key("P-384");
  JwtVerifier v384(JwtOptions{.keys = {*JwtKey::from_jwk(ec_jwk(k384.get()), &err)}});
  EXPECT_TRUE(v384.verify(sign_pkey(k384.get(), "ES384", claims()), kNow).ok);
}

TEST(Jwt, BadSignature) {
  auto v = hmac_verifier();
  std::string t = sign_hmac("HS256", claims(), kSecret);
  // signed with another secret
  expect_error(v.verify(sign_hmac("HS256", claims(), "another-secret-another-secret-123456"), kNow),
               JwtError::kBadSignature);
  // payload swapped (role escalation), signature kept
  auto dot1 = t.find('.');
  auto dot2 = t.rfind('.');
  std::string forged = t.substr(0, dot1 + 1) + base64url_encode(claims({{"role", "service_role"}}).dump()) +
                       t.substr(dot2);
  expect_error(v.verify(forged, kNow), JwtError::kBadSignature);
  // truncated signature, empty signature
  expect_error(v.verify(t.substr(0, t.size() - 4), kNow), JwtError::kBadSignature);
  expect_error(v.verify(t.substr(0, dot2 + 1), kNow), JwtError::kBadSignature);
  // RSA: another key's signature
  auto k1 = rsa_key();
  auto k2 = rsa_key();
  JwtVerifier rv(JwtOptions{.keys = {*JwtKey::from_pem(public_pem(k1.get()))}});
  expect_error(rv.verify(sign_pkey(k2.get(), "RS256", claims()), kNow), JwtError::kBadSignature);
  // EC: another key's signature
  auto e1 = ec_key();
  auto e2 = ec_key();
  JwtVerifier ev(JwtOptions{.keys = {*JwtKey::from_pem(public_pem(e1.get()))}});
  expect_error(ev.verify(sign_pkey(e2.get(), "ES256", claims()), kNow), JwtError::kBadSignature);
}

TEST(Jwt, AlgNoneAndUnknownAlgs) {
  auto v = hmac_verifier();
  std::string payload = base64url_encode(claims().dump());
  expect_error(v.verify(base64url_encode(R"({"alg":"none","typ":"JWT"})") + "." + payload + ".", kNow),
               JwtError::kAlgNotAllowed);
  expect_error(v.verify(base64url_encode(R"({"alg":"none"})") + "." + payload + ".c2ln", kNow),
               JwtError::kAlgNotAllowed);
  expect_error(v.verify(base64url_encode(R"({"alg":"None"})") + "." + payload + ".", kNow), JwtError::kAlgNotAllowed);
  for (const char* alg : {"HS1024", "PS256", "EdDSA", "hs256", ""})
    expect_error(v.verify(raw_hmac_token(json{{"alg", alg}}.dump(), claims().dump(), kSecret), kNow),
                 JwtError::kAlgNotAllowed);
}

TEST(Jwt, HsSignedWithTheRsaPublicKeyIsRefused) {
  // the classic confusion: the attacker HMACs with the server's public key PEM
  auto k = rsa_key();
  std::string pem = public_pem(k.get());
  JwtVerifier v(JwtOptions{.keys = {*JwtKey::from_pem(pem)}});
  expect_error(v.verify(raw_hmac_token(R"({"alg":"HS256","typ":"JWT"})", claims().dump(), pem), kNow),
               JwtError::kAlgNotAllowed);
  // and an RS token against an HMAC-only configuration
  expect_error(hmac_verifier().verify(sign_pkey(k.get(), "RS256", claims()), kNow), JwtError::kAlgNotAllowed);
  // an EC key does not take RS or HS tokens either
  auto e = ec_key();
  JwtVerifier ev(JwtOptions{.keys = {*JwtKey::from_pem(public_pem(e.get()))}});
  expect_error(ev.verify(sign_pkey(k.get(), "RS256", claims()), kNow), JwtError::kAlgNotAllowed);
  expect_error(ev.verify(raw_hmac_token(R"({"alg":"HS256"})", claims().dump(), public_pem(e.get())), kNow),
               JwtError::kAlgNotAllowed);
}

TEST(Jwt, JwkAlgNarrowsTheKey) {
  auto k = rsa_key();
  json jwk = rsa_jwk(k.get());
  jwk["alg"] = "RS512";
  auto key = JwtKey::from_jwk(jwk);
  ASSERT_TRUE(key);
  JwtVerifier v(JwtOptions{.keys = {*key}});
  expect_error(v.verify(sign_pkey(k.get(), "RS256", claims()), kNow), JwtError::kAlgNotAllowed);
  EXPECT_TRUE(v.verify(sign_pkey(k.get(), "RS512", claims()), kNow).ok);
  jwk["alg"] = "HS256";  // does not fit an RSA key
  std::string err;
  EXPECT_FALSE(JwtKey::from_jwk(jwk, &err));
  EXPECT_NE(err.find("does not fit"), std::string::npos);
  jwk.erase("alg");
  jwk["use"] = "enc";
  EXPECT_FALSE(JwtKey::from_jwk(jwk));
}

TEST(Jwt, KidSelectsTheKey) {
  auto k1 = rsa_key();
  auto k2 = rsa_key();
  json j1 = rsa_jwk(k1.get());
  j1["kid"] = "one";
  json j2 = rsa_jwk(k2.get());
  j2["kid"] = "two";
  auto keys = JwtKey::from_jwks(json{{"keys", {j1, j2}}}.dump());
  ASSERT_EQ(keys.size(), 2u);
  JwtVerifier v(JwtOptions{.keys = keys});
  EXPECT_TRUE(v.verify(sign_pkey(k2.get(), "RS256", claims(), {{"kid", "two"}}), kNow).ok);
  // signed by key two but claiming key one
  expect_error(v.verify(sign_pkey(k2.get(), "RS256", claims(), {{"kid", "one"}}), kNow), JwtError::kBadSignature);
  // no kid: every key is tried
  EXPECT_TRUE(v.verify(sign_pkey(k2.get(), "RS256", claims()), kNow).ok);
}

TEST(Jwt, ExpAndNbfWithLeeway) {
  JwtOptions o;
  o.leeway = std::chrono::seconds(10);
  auto v = hmac_verifier(o);
  auto at = [&](json c) { return v.verify(sign_hmac("HS256", c, kSecret), kNow); };
  expect_error(at(claims({{"exp", kNowS - 11}})), JwtError::kExpired);
  expect_error(at(claims({{"exp", kNowS - 10}})), JwtError::kExpired);
  EXPECT_TRUE(at(claims({{"exp", kNowS - 9}})).ok);  // within the leeway
  expect_error(at(claims({{"nbf", kNowS + 11}})), JwtError::kNotYetValid);
  EXPECT_TRUE(at(claims({{"nbf", kNowS + 10}})).ok);
  EXPECT_TRUE(at(claims({{"nbf", kNowS - 100}, {"exp", kNowS + 0.5}})).ok);
  expect_error(at(claims({{"exp", "tomorrow"}})), JwtError::kMalformed);
  expect_error(at(claims({{"nbf", json::array()}})), JwtError::kMalformed);
  json no_exp = claims();
  no_exp.erase("exp");
  EXPECT_TRUE(at(no_exp).ok);
  JwtOptions strict;
  strict.require_exp = true;
  expect_error(hmac_verifier(strict).verify(sign_hmac("HS256", no_exp, kSecret), kNow), JwtError::kMalformed);
}

TEST(Jwt, IssuerAndAudience) {
  JwtOptions o;
  o.issuer = "https://auth.example.com";
  o.audience = "shapesync";
  auto v = hmac_verifier(o);
  auto check = [&](json c) { return v.verify(sign_hmac("HS256", c, kSecret), kNow); };
  json good = claims({{"iss", "https://auth.example.com"}, {"aud", "shapesync"}});
  EXPECT_TRUE(check(good).ok);
  EXPECT_TRUE(check(claims({{"iss", "https://auth.example.com"}, {"aud", {"other", "shapesync"}}})).ok);
  expect_error(check(claims({{"iss", "https://evil.example.com"}, {"aud", "shapesync"}})), JwtError::kWrongIssuer);
  expect_error(check(claims({{"aud", "shapesync"}})), JwtError::kWrongIssuer);
  expect_error(check(claims({{"iss", "https://auth.example.com"}, {"aud", "other"}})), JwtError::kWrongAudience);
  expect_error(check(claims({{"iss", "https://auth.example.com"}, {"aud", {"a", "b"}}})), JwtError::kWrongAudience);
  expect_error(check(claims({{"iss", "https://auth.example.com"}})), JwtError::kWrongAudience);
  expect_error(check(claims({{"iss", "https://auth.example.com"}, {"aud", {{"x", "shapesync"}}}})),
               JwtError::kWrongAudience);
}

TEST(Jwt, MalformedTokens) {
  auto v = hmac_verifier();
  expect_error(v.verify("", kNow), JwtError::kMissing);
  for (const char* t : {"abc", "a.b", "a.b.c.d", ".b.c", "a..c", "...", "Bearer x.y.z"})
    expect_error(v.verify(t, kNow), JwtError::kMalformed);
  std::string good = sign_hmac("HS256", claims(), kSecret);
  // standard base64 characters and padding
  std::string padded = good.substr(0, good.find('.')) + "=" + good.substr(good.find('.'));
  expect_error(v.verify(padded, kNow), JwtError::kMalformed);
  std::string plus = good;
  plus[plus.rfind('.') + 1] = '+';
  expect_error(v.verify(plus, kNow), JwtError::kMalformed);
  // header not JSON, not an object, no alg, alg not a string, crit
  expect_error(v.verify(raw_hmac_token("not json", claims().dump(), kSecret), kNow), JwtError::kMalformed);
  expect_error(v.verify(raw_hmac_token("[\"HS256\"]", claims().dump(), kSecret), kNow), JwtError::kMalformed);
  expect_error(v.verify(raw_hmac_token("{\"typ\":\"JWT\"}", claims().dump(), kSecret), kNow), JwtError::kMalformed);
  expect_error(v.verify(raw_hmac_token("{\"alg\":256}", claims().dump(), kSecret), kNow), JwtError::kMalformed);
  expect_error(v.verify(raw_hmac_token(R"({"alg":"HS256","crit":["exp"]})", claims().dump(), kSecret), kNow),
               JwtError::kMalformed);
  // payload not an object (validly signed), or nested too deep
  expect_error(v.verify(raw_hmac_token(R"({"alg":"HS256"})", "\"sub\"", kSecret), kNow), JwtError::kMalformed);
  expect_error(v.verify(raw_hmac_token(R"({"alg":"HS256"})", "{\"a\":" + std::string(100, '[') +
                                                                 std::string(100, ']') + "}", kSecret), kNow),
               JwtError::kMalformed);
}

TEST(Jwt, OversizedTokens) {
  auto v = hmac_verifier();
  json big = claims({{"pad", std::string(20 * 1024, 'x')}});
  expect_error(v.verify(sign_hmac("HS256", big, kSecret), kNow), JwtError::kMalformed);
  std::string mega(1024 * 1024, 'a');
  expect_error(v.verify(mega, kNow), JwtError::kMalformed);
  JwtOptions o;
  o.max_token_bytes = 64 * 1024;
  EXPECT_TRUE(hmac_verifier(o).verify(sign_hmac("HS256", big, kSecret), kNow).ok);
}

TEST(Jwt, ClaimsWithSqlMetacharactersAreReturnedVerbatim) {
  auto r = hmac_verifier().verify(sign_hmac("HS256", claims({{"sub", "x' OR true --"}}), kSecret), kNow);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.claims["sub"], "x' OR true --");
}

TEST(JwtKeys, RefusedKeys) {
  std::string err;
  EXPECT_FALSE(JwtKey::hmac("short", &err));
  EXPECT_FALSE(JwtKey::from_pem("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", &err));
  auto small = rsa_key(1024);
  EXPECT_FALSE(JwtKey::from_pem(public_pem(small.get()), &err));
  EXPECT_NE(err.find("2048"), std::string::npos);
  auto k256k1 = ec_key("secp256k1");
  EXPECT_FALSE(JwtKey::from_pem(public_pem(k256k1.get()), &err));
  // an EC JWK whose point is not on the curve
  auto e = ec_key();
  json jwk = ec_jwk(e.get());
  jwk["y"] = base64url_encode(std::string(32, '\x01'));
  EXPECT_FALSE(JwtKey::from_jwk(jwk, &err));
  // JWKS: unusable keys skipped and described
  json jwks = {{"keys", {{{"kty", "OKP"}}, ec_jwk(e.get())}}};
  auto keys = JwtKey::from_jwks(jwks.dump(), &err);
  EXPECT_EQ(keys.size(), 1u);
  EXPECT_NE(err.find("key 0"), std::string::npos);
  EXPECT_TRUE(JwtKey::from_jwks("{}", &err).empty());
  // an oct JWK is an HMAC key
  auto oct = JwtKey::from_jwk({{"kty", "oct"}, {"k", base64url_encode(kSecret)}});
  ASSERT_TRUE(oct);
  JwtVerifier v(JwtOptions{.keys = {*oct}});
  EXPECT_TRUE(v.verify(sign_hmac("HS256", claims(), kSecret), kNow).ok);
}

TEST(JwtCache, OneVerificationPerTokenUntilItExpires) {
  auto v = hmac_verifier();
  JwtCache cache(v, 100);
  std::string t = sign_hmac("HS256", claims({{"exp", kNowS + 60}}), kSecret);
  for (int i = 0; i < 5; ++i) {
    auto r = cache.verify(t, kNow + std::chrono::seconds(i));
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.claims["sub"], "00000000-0000-0000-0000-00000000000a");
  }
  EXPECT_EQ(cache.verifications(), 1u);
  EXPECT_EQ(cache.hits(), 4u);
  // past exp + leeway (30 s): verified again, and refused
  expect_error(cache.verify(t, kNow + std::chrono::seconds(91)), JwtError::kExpired);
  EXPECT_EQ(cache.verifications(), 2u);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(JwtCache, RefusalsAreNotCachedAndSizeIsBounded) {
  auto v = hmac_verifier();
  JwtCache cache(v, 3);
  std::string bad = sign_hmac("HS256", claims(), "another-secret-another-secret-123456");
  expect_error(cache.verify(bad, kNow), JwtError::kBadSignature);
  expect_error(cache.verify(bad, kNow), JwtError::kBadSignature);
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.verifications(), 2u);
  std::vector<std::string> tokens;
  for (int i = 0; i < 10; ++i) tokens.push_back(sign_hmac("HS256", claims({{"n", i}}), kSecret));
  for (const auto& t : tokens) ASSERT_TRUE(cache.verify(t, kNow).ok);
  EXPECT_EQ(cache.size(), 3u);
  // the most recent ones stay
  auto before = cache.verifications();
  EXPECT_TRUE(cache.verify(tokens[9], kNow).ok);
  EXPECT_EQ(cache.verifications(), before);
  EXPECT_TRUE(cache.verify(tokens[0], kNow).ok);
  EXPECT_EQ(cache.verifications(), before + 1);
}

TEST(JwtCache, ConcurrentUse) {
  auto v = hmac_verifier();
  JwtCache cache(v, 50);
  std::vector<std::string> tokens;
  for (int i = 0; i < 20; ++i) tokens.push_back(sign_hmac("HS256", claims({{"n", i}}), kSecret));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i)
        if (!cache.verify(tokens[i % tokens.size()], kNow).ok) ++failures;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(cache.verifications(), 20u * 4u);
  EXPECT_EQ(cache.size(), 20u);
}
