// The auth gate of the shape endpoint (docs/auth.md): `Authorization: Bearer
// <JWT>` verified (auth/jwt.hpp) once per token, the role its claims
// select, and the request's match with a shape-scoped token. Answers what a
// request that may not go on gets: 401 (no token, or one that does not verify)
// or 403 (no usable role, a request outside the token's `shape` claim).
// Never throws; owns its lock (the keys, swapped on SIGHUP).
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "auth/jwt.hpp"
#include "config.hpp"
#include "model/caller.hpp"
#include "model/shape_request.hpp"

namespace shapesync {

// A request the gate stops: status, WWW-Authenticate (401 only) and JSON body.
struct AuthRefusal {
  int status = 401;
  std::string www_authenticate;
  std::string body;
};

// What the gate decided: the caller, or a refusal.
struct AuthDecision {
  Caller caller;
  std::optional<nlohmann::json> shape_claim;  // the token's "shape" claim, when it has one
  std::optional<AuthRefusal> refusal;
};

class AuthGate {
 public:
  // The gate of a config: its keys loaded (nullptr with *error when one cannot
  // be used). Without a key configured (--insecure), the gate lets every
  // request through with the sidecar's own rights.
  static std::shared_ptr<AuthGate> create(const Config& cfg, std::string* error, std::string* warning = nullptr);

  bool enabled() const { return enabled_; }
  // Reads the keys again (SIGHUP: a rotated JWKS). On failure the old keys stay.
  bool reload(std::string* error, std::string* warning = nullptr);
  // Checks a request's Authorization header. decide() shares what a known
  // token decided (no copy per request); authenticate() copies it.
  std::shared_ptr<const AuthDecision> decide(const boost::beast::http::fields& headers) const;
  AuthDecision authenticate(const boost::beast::http::fields& headers) const { return *decide(headers); }
  // True when the request carries a token that verifies (whatever its role).
  bool has_valid_token(const boost::beast::http::fields& headers) const;

  std::uint64_t verifications() const;  // signature checks (tokens not remembered)
  std::uint64_t cache_hits() const;     // requests answered from what a token decided before
  std::size_t remembered() const;       // tokens remembered now

 private:
  struct Keys {
    explicit Keys(auth::JwtOptions o) : verifier(std::move(o)) {}
    auth::JwtVerifier verifier;
  };
  AuthGate(const Config& cfg, std::shared_ptr<Keys> keys);
  std::shared_ptr<Keys> keys() const;
  // Makes room for one more remembered token (under mu_): expired ones go
  // first; when that is not enough, an arbitrary tenth of the rest, so that
  // with more tokens in use than room most of them are still remembered
  // (a full clear, or LRU under round-robin use, would remember none).
  void make_room_locked(std::chrono::system_clock::time_point now) const;

  const Config& cfg_;
  bool enabled_ = false;
  mutable std::mutex mu_;
  std::shared_ptr<Keys> keys_;
  // What a verified token decides (its caller and shape claim), by token, until
  // the token expires (exp + leeway, or 5 minutes without exp): a token is
  // verified and its claims turned into a role and a key once, not per
  // request. At most --jwt-cache-entries tokens; cleared when the keys change.
  // Refusals are not remembered.
  struct Decided {
    std::shared_ptr<const AuthDecision> d;
    std::chrono::system_clock::time_point expires;
  };
  struct TokenHash {  // looked up by the header's view of the token, not a copy
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  mutable std::unordered_map<std::string, Decided, TokenHash, std::equal_to<>> decided_;
  std::size_t max_decided_;
  mutable std::uint64_t verifications_ = 0, hits_ = 0;  // under mu_
};

// Does a request match a shape-scoped token's claim {"table":…,"where":…,
// "params":{…},"columns":[…]}? Every part the claim names must equal the
// request's after normalisation (the table as a qualified name, the WHERE with
// runs of blanks outside quotes collapsed, columns as a set, params by number);
// a part the claim leaves out must be absent from the request too. Returns ""
// when it matches, else what differs. Pure.
std::string shape_claim_mismatch(const nlohmann::json& claim, const ShapeParams& p);

// A WHERE for comparison: trimmed, blank runs outside '…' and "…" made one space.
std::string normalize_where(std::string_view w);

}  // namespace shapesync
