// The auth gate of the shape endpoint.
#include "http/auth_gate.hpp"

#include <algorithm>
#include <cctype>
#include <iterator>

#include <boost/beast/core/string.hpp>

#include "auth/claims.hpp"
#include "auth/keys.hpp"
#include "http/params.hpp"

namespace shapesync {

namespace http = boost::beast::http;

namespace {

std::string json_text(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

AuthRefusal unauthorized(std::string_view error, std::string_view description) {
  AuthRefusal r;
  r.status = 401;
  if (error.empty()) {
    // RFC 6750 §3.1: no error code when the request carried no credentials
    r.www_authenticate = "Bearer realm=\"shapesync\"";
    r.body = json_text({{"message", "Unauthorized - a bearer token is required"}, {"error", "missing_token"}});
  } else {
    r.www_authenticate = "Bearer realm=\"shapesync\", error=\"" + std::string(error) + "\", error_description=\"" +
                         std::string(description) + "\"";
    r.body = json_text({{"message", "Unauthorized - invalid token"}, {"error", error}, {"reason", description}});
  }
  return r;
}

AuthRefusal forbidden(const std::string& field, const std::string& message) {
  AuthRefusal r;
  r.status = 403;
  r.body = json_text({{"message", "Forbidden"}, {"errors", {{field, {message}}}}});
  return r;
}

// The token of an Authorization header: "Bearer <token>" (scheme case-insensitive).
std::optional<std::string_view> bearer_token(const http::fields& headers, bool& present) {
  auto it = headers.find(http::field::authorization);
  present = it != headers.end() && !it->value().empty();
  if (!present) return std::nullopt;
  std::string_view v = it->value();
  if (!boost::beast::iequals(v.substr(0, 7), "bearer ")) return std::nullopt;
  v.remove_prefix(7);
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
  if (v.empty()) return std::nullopt;
  return v;
}

}  // namespace

std::shared_ptr<AuthGate> AuthGate::create(const Config& cfg, std::string* error, std::string* warning) {
  if (!cfg.auth_enabled()) return std::shared_ptr<AuthGate>(new AuthGate(cfg, nullptr));
  auto opts = auth::load_jwt_options(cfg, error, warning);
  if (!opts) return nullptr;
  return std::shared_ptr<AuthGate>(new AuthGate(cfg, std::make_shared<Keys>(std::move(*opts))));
}

AuthGate::AuthGate(const Config& cfg, std::shared_ptr<Keys> keys)
    : cfg_(cfg),
      enabled_(keys != nullptr),
      keys_(std::move(keys)),
      max_decided_(static_cast<std::size_t>(std::max(1, cfg.jwt_cache_entries))) {}

bool AuthGate::reload(std::string* error, std::string* warning) {
  if (!enabled_) return true;
  auto opts = auth::load_jwt_options(cfg_, error, warning);
  if (!opts) return false;
  auto fresh = std::make_shared<Keys>(std::move(*opts));
  std::lock_guard lk(mu_);
  keys_ = std::move(fresh);
  decided_.clear();
  return true;
}

std::shared_ptr<AuthGate::Keys> AuthGate::keys() const {
  std::lock_guard lk(mu_);
  return keys_;
}

std::uint64_t AuthGate::verifications() const {
  std::lock_guard lk(mu_);
  return verifications_;
}

std::uint64_t AuthGate::cache_hits() const {
  std::lock_guard lk(mu_);
  return hits_;
}

std::size_t AuthGate::remembered() const {
  std::lock_guard lk(mu_);
  return decided_.size();
}

void AuthGate::make_room_locked(std::chrono::system_clock::time_point now) const {
  if (decided_.size() < max_decided_) return;
  for (auto it = decided_.begin(); it != decided_.end();)
    it = now < it->second.expires ? std::next(it) : decided_.erase(it);
  // still full: drop entries in the map's (hash) order, an arbitrary tenth
  std::size_t keep = max_decided_ - std::max<std::size_t>(1, max_decided_ / 10);
  while (decided_.size() > keep) decided_.erase(decided_.begin());
}

bool AuthGate::has_valid_token(const http::fields& headers) const {
  if (!enabled_) return false;
  bool present = false;
  auto token = bearer_token(headers, present);
  if (!token) return false;
  auto now = std::chrono::system_clock::now();
  {
    std::lock_guard lk(mu_);
    if (auto it = decided_.find(*token); it != decided_.end() && now < it->second.expires) {
      ++hits_;
      return true;
    }
    ++verifications_;
  }
  return keys()->verifier.verify(*token, now).ok;
}

std::shared_ptr<const AuthDecision> AuthGate::decide(const http::fields& headers) const {
  static const auto kOwnRights = std::make_shared<const AuthDecision>();
  if (!enabled_) return kOwnRights;  // --insecure: the sidecar's own rights
  std::shared_ptr<AuthDecision> d;
  try {
    bool present = false;
    auto token = bearer_token(headers, present);
    if (!token || !present) d = std::make_shared<AuthDecision>();
    if (!present) {
      if (cfg_.anonymous_role.empty()) {
        d->refusal = unauthorized("", "");
        return d;
      }
      d->caller.role = cfg_.anonymous_role;
      d->caller.claims = "{}";
      d->caller.key = auth::caller_key(*d->caller.role, d->caller.claims);
      return d;
    }
    if (!token) {
      d->refusal = unauthorized("invalid_request", "the Authorization header is not 'Bearer <token>'");
      return d;
    }
    auto now = std::chrono::system_clock::now();
    std::shared_ptr<Keys> keys_now;
    {
      std::lock_guard lk(mu_);
      if (auto it = decided_.find(*token); it != decided_.end()) {
        if (now < it->second.expires) {
          ++hits_;
          return it->second.d;
        }
        decided_.erase(it);
      }
      ++verifications_;
      keys_now = keys_;
    }
    d = std::make_shared<AuthDecision>();
    auth::JwtResult r = keys_now->verifier.verify(*token, now);  // outside the lock: checks run in parallel
    if (!r.ok) {
      d->refusal = unauthorized("invalid_token", auth::to_string(r.error));
      return d;
    }
    auth::RoleChoice role = auth::role_from_claims(r.claims, cfg_.jwt_role_claim, cfg_.anonymous_role);
    if (!role.role) {
      d->refusal = forbidden("role", role.error);
      return d;
    }
    d->caller.role = std::move(*role.role);
    d->caller.claims = json_text(r.claims);
    d->caller.key = auth::caller_key(*d->caller.role, d->caller.claims);
    if (auto s = r.claims.find("shape"); s != r.claims.end() && !s->is_null()) d->shape_claim = *s;
    auto expires = now + std::chrono::minutes(5);
    if (auto e = r.claims.find("exp"); e != r.claims.end() && e->is_number())
      expires = std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
                    std::chrono::duration<double>(e->get<double>()))) +
                keys_now->verifier.options().leeway;
    std::lock_guard lk(mu_);
    if (keys_ != keys_now) return d;  // the keys changed meanwhile: do not remember it
    make_room_locked(now);
    decided_.emplace(std::string(*token), Decided{d, expires});
  } catch (const std::exception& e) {  // never let a token turn into a 500
    d = std::make_shared<AuthDecision>();
    d->refusal = unauthorized("invalid_token", "malformed");
  }
  return d;
}

std::string normalize_where(std::string_view w) {
  std::string out;
  char quote = 0;
  bool blank = false;
  for (char c : w) {
    if (quote) {
      out += c;
      if (c == quote) quote = 0;
      continue;
    }
    if (std::isspace(static_cast<unsigned char>(c))) {
      blank = true;
      continue;
    }
    if (blank && !out.empty()) out += ' ';
    blank = false;
    out += c;
    if (c == '\'' || c == '"') quote = c;
  }
  return out;
}

std::string shape_claim_mismatch(const nlohmann::json& claim, const ShapeParams& p) {
  if (!claim.is_object()) return "the token's shape claim is not an object";
  // table
  auto t = claim.find("table");
  if (t == claim.end() || !t->is_string()) return "the token's shape claim names no table";
  auto rel = parse_relation(t->get<std::string>());
  if (auto* err = std::get_if<std::string>(&rel)) return "the token's shape claim has an invalid table: " + *err;
  const QualifiedName& want = std::get<QualifiedName>(rel);
  if (want.schema != p.table.schema || want.name != p.table.name)
    return "the token is for table " + quote_ident(want.schema) + "." + quote_ident(want.name);
  // where
  std::string claim_where;
  if (auto w = claim.find("where"); w != claim.end() && !w->is_null()) {
    if (!w->is_string()) return "the token's shape claim has a where that is not a string";
    claim_where = normalize_where(w->get<std::string>());
  }
  std::string req_where = p.where ? normalize_where(*p.where) : std::string();
  if (claim_where != req_where) return "the request's where differs from the token's";
  // params: {"1": "v"} or ["v", ...]
  std::map<int, std::string> claim_params;
  if (auto ps = claim.find("params"); ps != claim.end() && !ps->is_null()) {
    auto text = [](const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
    if (ps->is_array()) {
      int n = 0;
      for (auto& v : *ps) claim_params[++n] = text(v);
    } else if (ps->is_object()) {
      for (auto& [k, v] : ps->items()) {
        int n = 0;
        for (char c : k) {
          if (c < '0' || c > '9' || n > 100000) return "the token's shape claim has an invalid params key";
          n = n * 10 + (c - '0');
        }
        claim_params[n] = text(v);
      }
    } else {
      return "the token's shape claim has params that are neither an object nor an array";
    }
  }
  if (claim_params != p.params) return "the request's params differ from the token's";
  // columns: a set
  std::vector<std::string> claim_cols, req_cols;
  bool claim_has_cols = false;
  if (auto cs = claim.find("columns"); cs != claim.end() && !cs->is_null()) {
    claim_has_cols = true;
    if (cs->is_string()) {
      auto parsed = parse_columns(cs->get<std::string>());
      if (auto* err = std::get_if<std::string>(&parsed)) return "the token's shape claim has invalid columns: " + *err;
      claim_cols = std::get<std::vector<std::string>>(parsed);
    } else if (cs->is_array()) {
      for (auto& c : *cs) {
        if (!c.is_string()) return "the token's shape claim has a column that is not a string";
        claim_cols.push_back(c.get<std::string>());
      }
    } else {
      return "the token's shape claim has columns that are neither a list nor a string";
    }
  }
  if (claim_has_cols != p.columns.has_value()) return "the request's columns differ from the token's";
  if (p.columns) req_cols = *p.columns;
  std::sort(claim_cols.begin(), claim_cols.end());
  claim_cols.erase(std::unique(claim_cols.begin(), claim_cols.end()), claim_cols.end());
  std::sort(req_cols.begin(), req_cols.end());
  req_cols.erase(std::unique(req_cols.begin(), req_cols.end()), req_cols.end());
  if (claim_cols != req_cols) return "the request's columns differ from the token's";
  return "";
}

}  // namespace shapesync
