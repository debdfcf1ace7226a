// JWT verification for shapesyncd (issue 11, docs/auth.md): compact JWS
// tokens checked with OpenSSL 3 (EVP), claims parsed with nlohmann::json.
// Pure: no sockets, no database.
//
// Conventions of this layer: verification never throws for a bad token; it
// returns a JwtResult (claims, or an error code and a message). Key loading
// returns std::nullopt and fills an error string. Nothing here logs.
//
// The key decides the algorithms, never the token: an HMAC secret accepts
// HS256/384/512, an RSA key RS256/384/512, an EC P-256 key ES256 and a P-384
// key ES384 (a JWK's "alg" narrows that to one). "alg": "none", unknown
// algorithms and an HS token checked against an RSA key are alg_not_allowed.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace shapesync::auth {

enum class JwtError {
  kMissing,         // no token
  kMalformed,       // not a compact JWS, bad base64url, bad JSON, oversized, bad claim types
  kBadSignature,    // no key verifies it
  kExpired,         // exp (+ leeway) has passed
  kNotYetValid,     // nbf (- leeway) is in the future
  kWrongIssuer,     // iss differs from the configured issuer
  kWrongAudience,   // aud does not contain the configured audience
  kAlgNotAllowed,   // none, unknown, or not allowed by any configured key
};

// "missing", "malformed", "bad_signature", ...
std::string_view to_string(JwtError e);

// Claims, or why the token was refused.
struct JwtResult {
  bool ok = false;
  nlohmann::json claims;  // the payload (an object) when ok
  JwtError error = JwtError::kMissing;
  std::string message;    // for logs and the 401 body; never contains key material

  explicit operator bool() const { return ok; }
  static JwtResult success(nlohmann::json claims);
  static JwtResult failure(JwtError e, std::string message);
};

// A verification key. Copies share the underlying OpenSSL key.
class JwtKey {
 public:
  enum class Type { kHmac, kRsa, kEc };

  // An HMAC secret (HS256/384/512); at least 32 bytes (RFC 7518 §3.2 asks for
  // at least the hash size for HS256).
  static std::optional<JwtKey> hmac(std::string secret, std::string* error = nullptr);
  // A PEM public key ("-----BEGIN PUBLIC KEY-----"): RSA (>= 2048 bits) or EC
  // P-256/P-384.
  static std::optional<JwtKey> from_pem(std::string_view pem, std::string* error = nullptr);
  // One JWK: kty RSA (n, e), EC (crv P-256/P-384, x, y) or oct (k); "use"
  // other than "sig" is refused; "alg" narrows the allowed algorithm; "kid" kept.
  static std::optional<JwtKey> from_jwk(const nlohmann::json& jwk, std::string* error = nullptr);
  // A JWKS document {"keys": [...]}: every usable key; keys that cannot be
  // used are skipped and described in *error (empty result = nothing usable).
  static std::vector<JwtKey> from_jwks(std::string_view jwks_json, std::string* error = nullptr);

  Type type() const { return type_; }
  const std::string& kid() const { return kid_; }
  // Does this key accept tokens signed with alg?
  bool allows(std::string_view alg) const;
  // Check signature over signing_input (header.payload) for alg.
  bool verify(std::string_view alg, std::string_view signing_input, std::string_view signature) const;

 private:
  struct PkeyHolder;
  Type type_ = Type::kHmac;
  std::string secret_;                 // kHmac
  std::shared_ptr<PkeyHolder> pkey_;   // kRsa, kEc
  std::string curve_alg_;              // kEc: "ES256" or "ES384"
  std::string only_alg_;               // from a JWK's "alg"
  std::string kid_;
};

struct JwtOptions {
  std::vector<JwtKey> keys;
  std::optional<std::string> issuer;    // iss must equal it when set
  std::optional<std::string> audience;  // aud (string or array) must contain it when set
  std::chrono::seconds leeway{30};      // for exp and nbf
  std::size_t max_token_bytes = 16 * 1024;
  bool require_exp = false;             // refuse tokens without exp (malformed)
};

class JwtVerifier {
 public:
  explicit JwtVerifier(JwtOptions options);

  // Verify a compact JWS ("Bearer " already stripped) at time now.
  JwtResult verify(std::string_view token, std::chrono::system_clock::time_point now) const;
  JwtResult verify(std::string_view token) const { return verify(token, std::chrono::system_clock::now()); }

  const JwtOptions& options() const { return options_; }

 private:
  JwtOptions options_;
};

// A bounded cache of successful verifications keyed by the token string, so a
// token is verified once: an entry lives until the token's exp (+ leeway), or
// no_exp_ttl for tokens without exp (an expired entry is dropped when next
// looked up); when full, the least recently used entry goes. Refusals are not
// cached. Owns its lock.
class JwtCache {
 public:
  JwtCache(const JwtVerifier& verifier, std::size_t max_entries = 10000,
           std::chrono::seconds no_exp_ttl = std::chrono::seconds(300));

  JwtResult verify(std::string_view token, std::chrono::system_clock::time_point now);
  JwtResult verify(std::string_view token) { return verify(token, std::chrono::system_clock::now()); }

  std::size_t size() const;
  std::uint64_t verifications() const;  // signature checks done (cache misses)
  std::uint64_t hits() const;

 private:
  struct Entry {
    nlohmann::json claims;
    std::chrono::system_clock::time_point expires;
    std::list<std::string>::iterator lru;
  };
  const JwtVerifier& verifier_;
  std::size_t max_entries_;
  std::chrono::seconds no_exp_ttl_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // front = most recent
  std::uint64_t verifications_ = 0;
  std::uint64_t hits_ = 0;
};

// base64url without padding (RFC 7515 §2). decode is strict: only the
// base64url alphabet, no '=', no whitespace, canonical trailing bits.
std::string base64url_encode(std::string_view bytes);
std::optional<std::string> base64url_decode(std::string_view text);

// A compact JWS of claims signed with an HMAC secret (alg HS256/384/512):
// for tests and for printing a demo token.
std::string sign_hmac(std::string_view alg, const nlohmann::json& claims, std::string_view secret);

}  // namespace shapesync::auth
