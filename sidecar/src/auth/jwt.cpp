// JWT verification with OpenSSL 3 EVP (see jwt.hpp).
#include "auth/jwt.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <array>
#include <cmath>

namespace shapesync::auth {

namespace {

constexpr int kMaxJsonDepth = 32;

// The digest of an algorithm name's size suffix ("HS256" → SHA-256), or null.
const EVP_MD* digest_for(std::string_view alg) {
  if (alg.size() != 5) return nullptr;
  std::string_view bits = alg.substr(2);
  if (bits == "256") return EVP_sha256();
  if (bits == "384") return EVP_sha384();
  if (bits == "512") return EVP_sha512();
  return nullptr;
}

bool is_hmac_alg(std::string_view a) { return a == "HS256" || a == "HS384" || a == "HS512"; }
bool is_rsa_alg(std::string_view a) { return a == "RS256" || a == "RS384" || a == "RS512"; }
bool is_ec_alg(std::string_view a) { return a == "ES256" || a == "ES384"; }
bool is_known_alg(std::string_view a) { return is_hmac_alg(a) || is_rsa_alg(a) || is_ec_alg(a); }

void set_error(std::string* error, std::string message) {
  if (error) *error = std::move(message);
}

// Does JSON text nest deeper than kMaxJsonDepth (outside strings)?
bool too_deep(std::string_view json) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < json.size(); ++i) {
    char c = json[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

std::optional<nlohmann::json> parse_object(std::string_view text) {
  if (too_deep(text)) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

struct BioFree { void operator()(BIO* b) const { BIO_free(b); } };
struct BnFree { void operator()(BIGNUM* b) const { BN_free(b); } };
struct MdCtxFree { void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); } };
struct PkeyCtxFree { void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); } };
struct ParamBldFree { void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); } };
struct ParamFree { void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); } };
struct EcSigFree { void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); } };

std::string hmac_bytes(const EVP_MD* md, std::string_view key, std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  unsigned int len = 0;
  if (!HMAC(md, key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
            data.size(), out.data(), &len))
    return {};
  return std::string(reinterpret_cast<const char*>(out.data()), len);
}

// A JWS ES* signature (r || s, n bytes each) as the DER ECDSA-Sig-Value OpenSSL verifies.
std::optional<std::string> ec_raw_to_der(std::string_view raw, std::size_t n) {
  if (raw.size() != 2 * n) return std::nullopt;
  const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
  std::unique_ptr<ECDSA_SIG, EcSigFree> sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(p, static_cast<int>(n), nullptr);
  BIGNUM* s = BN_bin2bn(p + n, static_cast<int>(n), nullptr);
  if (!sig || !r || !s || !ECDSA_SIG_set0(sig.get(), r, s)) {
    BN_free(r);
    BN_free(s);
    return std::nullopt;
  }
  int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return std::nullopt;
  std::string der(static_cast<std::size_t>(len), '\0');
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_ECDSA_SIG(sig.get(), &out) != len) return std::nullopt;
  return der;
}

// The JWS algorithm of an EC key's curve, or "".
std::string ec_alg_of(EVP_PKEY* pkey) {
  char name[64] = {0};
  std::size_t len = 0;
  if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name), &len)) return {};
  std::string_view g(name, len);
  if (g == "prime256v1" || g == "P-256") return "ES256";
  if (g == "secp384r1" || g == "P-384") return "ES384";
  return {};
}

bool public_key_valid(EVP_PKEY* pkey) {
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr));
  return ctx && EVP_PKEY_public_check(ctx.get()) == 1;
}

}  // namespace

std::string_view to_string(JwtError e) {
  switch (e) {
    case JwtError::kMissing: return "missing";
    case JwtError::kMalformed: return "malformed";
    case JwtError::kBadSignature: return "bad_signature";
    case JwtError::kExpired: return "expired";
    case JwtError::kNotYetValid: return "not_yet_valid";
    case JwtError::kWrongIssuer: return "wrong_issuer";
    case JwtError::kWrongAudience: return "wrong_audience";
    case JwtError::kAlgNotAllowed: return "alg_not_allowed";
  }
  return "unknown";
}

JwtResult JwtResult::success(nlohmann::json claims) {
  JwtResult r;
  r.ok = true;
  r.claims = std::move(claims);
  return r;
}

JwtResult JwtResult::failure(JwtError e, std::string message) {
  JwtResult r;
  r.ok = false;
  r.error = e;
  r.message = std::move(message);
  return r;
}

// ---------------------------------------------------------------- base64url

std::string base64url_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (bytes.size() - i == 1) {
    uint32_t v = uint8_t(bytes[i]) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
  } else if (bytes.size() - i == 2) {
    uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
  };
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  // the unused low bits of the last character must be zero (one encoding per value)
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

// ---------------------------------------------------------------- keys

struct JwtKey::PkeyHolder {
  EVP_PKEY* pkey = nullptr;
  explicit PkeyHolder(EVP_PKEY* p) : pkey(p) {}
  ~PkeyHolder() { EVP_PKEY_free(pkey); }
  PkeyHolder(const PkeyHolder&) = delete;
  PkeyHolder& operator=(const PkeyHolder&) = delete;
};

std::optional<JwtKey> JwtKey::hmac(std::string secret, std::string* error) {
  if (secret.size() < 32) {
    set_error(error, "an HMAC secret must be at least 32 bytes long");
    return std::nullopt;
  }
  JwtKey k;
  k.type_ = Type::kHmac;
  k.secret_ = std::move(secret);
  return k;
}

namespace {

// A JwtKey-ready classification of an OpenSSL public key, or an error.
struct Classified {
  JwtKey::Type type;
  std::string ec_alg;
};

std::optional<Classified> classify(EVP_PKEY* pkey, std::string* error) {
  int id = EVP_PKEY_get_base_id(pkey);
  if (id == EVP_PKEY_RSA) {
    if (EVP_PKEY_get_bits(pkey) < 2048) {
      set_error(error, "RSA keys must have at least 2048 bits");
      return std::nullopt;
    }
    return Classified{JwtKey::Type::kRsa, {}};
  }
  if (id == EVP_PKEY_EC) {
    std::string alg = ec_alg_of(pkey);
    if (alg.empty()) {
      set_error(error, "EC keys must be on curve P-256 (ES256) or P-384 (ES384)");
      return std::nullopt;
    }
    return Classified{JwtKey::Type::kEc, alg};
  }
  set_error(error, "unsupported key type (RSA or EC public keys only)");
  return std::nullopt;
}

}  // namespace

std::optional<JwtKey> JwtKey::from_pem(std::string_view pem, std::string* error) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) {
    set_error(error, "out of memory");
    return std::nullopt;
  }
  EVP_PKEY* pkey = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
  if (!pkey) {
    set_error(error, "not a PEM public key (-----BEGIN PUBLIC KEY-----)");
    return std::nullopt;
  }
  auto holder = std::make_shared<PkeyHolder>(pkey);
  auto c = classify(pkey, error);
  if (!c) return std::nullopt;
  JwtKey k;
  k.type_ = c->type;
  k.curve_alg_ = c->ec_alg;
  k.pkey_ = std::move(holder);
  return k;
}

std::optional<JwtKey> JwtKey::from_jwk(const nlohmann::json& jwk, std::string* error) {
  auto str = [&](const char* name) -> std::optional<std::string> {
    auto it = jwk.find(name);
    if (it == jwk.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
  };
  auto bytes = [&](const char* name) -> std::optional<std::string> {
    auto s = str(name);
    if (!s) return std::nullopt;
    return base64url_decode(*s);
  };
  if (!jwk.is_object()) {
    set_error(error, "a JWK must be a JSON object");
    return std::nullopt;
  }
  auto kty = str("kty");
  if (!kty) {
    set_error(error, "a JWK needs a kty");
    return std::nullopt;
  }
  if (auto use = str("use"); use && *use != "sig") {
    set_error(error, "JWK \"use\" is not \"sig\"");
    return std::nullopt;
  }

  std::optional<JwtKey> key;
  if (*kty == "oct") {
    auto k = bytes("k");
    if (!k) {
      set_error(error, "an oct JWK needs k (base64url)");
      return std::nullopt;
    }
    key = hmac(std::move(*k), error);
  } else if (*kty == "RSA" || *kty == "EC") {
    std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
    std::unique_ptr<BIGNUM, BnFree> n, e;
    std::string pub;
    std::string group;
    if (*kty == "RSA") {
      auto nb = bytes("n");
      auto eb = bytes("e");
      if (!nb || !eb || nb->empty() || eb->empty()) {
        set_error(error, "an RSA JWK needs n and e (base64url)");
        return std::nullopt;
      }
      n.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(nb->data()), static_cast<int>(nb->size()), nullptr));
      e.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(eb->data()), static_cast<int>(eb->size()), nullptr));
      if (!bld || !n || !e || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) ||
          !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get())) {
        set_error(error, "could not build the RSA key");
        return std::nullopt;
      }
    } else {
      auto crv = str("crv");
      std::size_t size = 0;
      if (crv && *crv == "P-256") {
        group = "prime256v1";
        size = 32;
      } else if (crv && *crv == "P-384") {
        group = "secp384r1";
        size = 48;
      } else {
        set_error(error, "an EC JWK must be on curve P-256 or P-384");
        return std::nullopt;
      }
      auto x = bytes("x");
      auto y = bytes("y");
      if (!x || !y || x->size() != size || y->size() != size) {
        set_error(error, "an EC JWK needs x and y of the curve's size (base64url)");
        return std::nullopt;
      }
      pub = std::string(1, '\x04') + *x + *y;
      if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group.c_str(), 0) ||
          !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, pub.data(), pub.size())) {
        set_error(error, "could not build the EC key");
        return std::nullopt;
      }
    }
    std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld.get()));
    std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_from_name(nullptr, kty->c_str(), nullptr));
    EVP_PKEY* pkey = nullptr;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
        EVP_PKEY_fromdata(ctx.get(), &pkey, EVP_PKEY_PUBLIC_KEY, params.get()) <= 0 || !pkey) {
      set_error(error, "the JWK is not a valid " + *kty + " public key");
      return std::nullopt;
    }
    auto holder = std::make_shared<PkeyHolder>(pkey);
    if (*kty == "EC" && !public_key_valid(pkey)) {
      set_error(error, "the EC JWK's point is not on its curve");
      return std::nullopt;
    }
    auto c = classify(pkey, error);
    if (!c) return std::nullopt;
    JwtKey k;
    k.type_ = c->type;
    k.curve_alg_ = c->ec_alg;
    k.pkey_ = std::move(holder);
    key = std::move(k);
  } else {
    set_error(error, "unsupported JWK kty \"" + *kty + "\"");
    return std::nullopt;
  }
  if (!key) return std::nullopt;

  if (auto alg = str("alg")) {
    if (!key->allows(*alg)) {
      set_error(error, "JWK \"alg\" " + *alg + " does not fit its key type");
      return std::nullopt;
    }
    key->only_alg_ = *alg;
  }
  if (auto kid = str("kid")) key->kid_ = *kid;
  return key;
}

std::vector<JwtKey> JwtKey::from_jwks(std::string_view jwks_json, std::string* error) {
  std::vector<JwtKey> keys;
  auto doc = parse_object(jwks_json);
  if (!doc || !doc->contains("keys") || !(*doc)["keys"].is_array()) {
    set_error(error, "a JWKS must be a JSON object with a \"keys\" array");
    return keys;
  }
  std::string problems;
  std::size_t index = 0;
  for (const auto& jwk : (*doc)["keys"]) {
    std::string e;
    if (auto k = from_jwk(jwk, &e)) keys.push_back(std::move(*k));
    else problems += (problems.empty() ? "" : "; ") + ("key " + std::to_string(index) + ": " + e);
    ++index;
  }
  set_error(error, problems);
  return keys;
}

bool JwtKey::allows(std::string_view alg) const {
  if (!only_alg_.empty() && alg != only_alg_) return false;
  switch (type_) {
    case Type::kHmac: return is_hmac_alg(alg);
    case Type::kRsa: return is_rsa_alg(alg);
    case Type::kEc: return alg == curve_alg_;
  }
  return false;
}

bool JwtKey::verify(std::string_view alg, std::string_view signing_input, std::string_view signature) const {
  if (!allows(alg)) return false;
  const EVP_MD* md = digest_for(alg);
  if (!md) return false;
  if (type_ == Type::kHmac) {
    std::string mac = hmac_bytes(md, secret_, signing_input);
    return !mac.empty() && mac.size() == signature.size() &&
           CRYPTO_memcmp(mac.data(), signature.data(), mac.size()) == 0;
  }
  std::string der;
  if (type_ == Type::kEc) {
    auto d = ec_raw_to_der(signature, alg == "ES256" ? 32 : 48);
    if (!d) return false;
    der = std::move(*d);
    signature = der;
  }
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, pkey_->pkey) != 1) return false;
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size()) == 1;
}

// ---------------------------------------------------------------- verifier

JwtVerifier::JwtVerifier(JwtOptions options) : options_(std::move(options)) {}

JwtResult JwtVerifier::verify(std::string_view token, std::chrono::system_clock::time_point now) const {
  using E = JwtError;
  if (token.empty()) return JwtResult::failure(E::kMissing, "no token");
  if (token.size() > options_.max_token_bytes)
    return JwtResult::failure(E::kMalformed, "token larger than " + std::to_string(options_.max_token_bytes) + " bytes");

  auto dot1 = token.find('.');
  auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos)
    return JwtResult::failure(E::kMalformed, "not a compact JWS (three base64url parts separated by dots)");
  std::string_view header_b64 = token.substr(0, dot1);
  std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view signature_b64 = token.substr(dot2 + 1);
  if (header_b64.empty() || payload_b64.empty())
    return JwtResult::failure(E::kMalformed, "empty header or payload");

  auto header_text = base64url_decode(header_b64);
  auto payload_text = base64url_decode(payload_b64);
  auto signature = base64url_decode(signature_b64);
  if (!header_text || !payload_text || !signature)
    return JwtResult::failure(E::kMalformed, "invalid base64url");

  auto header = parse_object(*header_text);
  if (!header) return JwtResult::failure(E::kMalformed, "the header is not a JSON object");
  auto alg_it = header->find("alg");
  if (alg_it == header->end() || !alg_it->is_string())
    return JwtResult::failure(E::kMalformed, "the header has no \"alg\"");
  std::string alg = alg_it->get<std::string>();
  if (header->contains("crit"))
    return JwtResult::failure(E::kMalformed, "critical header parameters are not supported");
  if (!is_known_alg(alg))
    return JwtResult::failure(E::kAlgNotAllowed, "algorithm \"" + alg + "\" is not allowed");
  std::string kid;
  if (auto k = header->find("kid"); k != header->end() && k->is_string()) kid = k->get<std::string>();

  // the keys decide: only keys that allow this algorithm (and match the kid) are tried
  std::string_view signing_input = token.substr(0, dot2);
  bool any_key = false;
  bool verified = false;
  for (const auto& key : options_.keys) {
    if (!key.allows(alg)) continue;
    if (!kid.empty() && !key.kid().empty() && key.kid() != kid) continue;
    any_key = true;
    if (key.verify(alg, signing_input, *signature)) {
      verified = true;
      break;
    }
  }
  if (!any_key)
    return JwtResult::failure(E::kAlgNotAllowed, "no configured key accepts algorithm \"" + alg + "\"");
  if (!verified) return JwtResult::failure(E::kBadSignature, "invalid signature");

  auto claims = parse_object(*payload_text);
  if (!claims) return JwtResult::failure(E::kMalformed, "the payload is not a JSON object");

  const double t = std::chrono::duration<double>(now.time_since_epoch()).count();
  const double leeway = static_cast<double>(options_.leeway.count());
  if (auto it = claims->find("exp"); it != claims->end()) {
    if (!it->is_number() || !std::isfinite(it->get<double>()))
      return JwtResult::failure(E::kMalformed, "\"exp\" is not a number");
    if (t >= it->get<double>() + leeway) return JwtResult::failure(E::kExpired, "the token has expired");
  } else if (options_.require_exp) {
    return JwtResult::failure(E::kMalformed, "the token has no \"exp\"");
  }
  if (auto it = claims->find("nbf"); it != claims->end()) {
    if (!it->is_number() || !std::isfinite(it->get<double>()))
      return JwtResult::failure(E::kMalformed, "\"nbf\" is not a number");
    if (t + leeway < it->get<double>()) return JwtResult::failure(E::kNotYetValid, "the token is not valid yet");
  }
  if (options_.issuer) {
    auto it = claims->find("iss");
    if (it == claims->end() || !it->is_string() || it->get<std::string>() != *options_.issuer)
      return JwtResult::failure(E::kWrongIssuer, "wrong issuer");
  }
  if (options_.audience) {
    bool found = false;
    if (auto it = claims->find("aud"); it != claims->end()) {
      if (it->is_string()) {
        found = it->get<std::string>() == *options_.audience;
      } else if (it->is_array()) {
        for (const auto& a : *it)
          if (a.is_string() && a.get<std::string>() == *options_.audience) found = true;
      }
    }
    if (!found) return JwtResult::failure(E::kWrongAudience, "wrong audience");
  }
  return JwtResult::success(std::move(*claims));
}

// ---------------------------------------------------------------- cache

JwtCache::JwtCache(const JwtVerifier& verifier, std::size_t max_entries, std::chrono::seconds no_exp_ttl)
    : verifier_(verifier), max_entries_(max_entries == 0 ? 1 : max_entries), no_exp_ttl_(no_exp_ttl) {}

JwtResult JwtCache::verify(std::string_view token, std::chrono::system_clock::time_point now) {
  const std::string key(token);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      if (now < it->second.expires) {
        ++hits_;
        lru_.splice(lru_.begin(), lru_, it->second.lru);
        return JwtResult::success(it->second.claims);
      }
      lru_.erase(it->second.lru);
      entries_.erase(it);
    }
    ++verifications_;
  }

  JwtResult r = verifier_.verify(token, now);  // outside the lock: signature checks run in parallel
  if (!r.ok || token.size() > verifier_.options().max_token_bytes) return r;

  auto expires = now + no_exp_ttl_;
  if (auto it = r.claims.find("exp"); it != r.claims.end() && it->is_number()) {
    auto exp = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(it->get<double>())));
    expires = exp + verifier_.options().leeway;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.count(key)) return r;  // another thread cached it meanwhile
  while (entries_.size() >= max_entries_ && !lru_.empty()) {
    entries_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(key);
  entries_.emplace(key, Entry{r.claims, expires, lru_.begin()});
  return r;
}

std::size_t JwtCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

std::uint64_t JwtCache::verifications() const {
  std::lock_guard<std::mutex> lock(mu_);
  return verifications_;
}

std::uint64_t JwtCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}

// ---------------------------------------------------------------- signing (HMAC)

std::string sign_hmac(std::string_view alg, const nlohmann::json& claims, std::string_view secret) {
  const EVP_MD* md = is_hmac_alg(alg) ? digest_for(alg) : nullptr;
  if (!md) return {};
  nlohmann::json header = {{"alg", std::string(alg)}, {"typ", "JWT"}};
  std::string input = base64url_encode(header.dump()) + "." + base64url_encode(claims.dump());
  return input + "." + base64url_encode(hmac_bytes(md, secret, input));
}

}  // namespace shapesync::auth
