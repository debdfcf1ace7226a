// Keys and checks of the JWT verifier, from the settings.
#include "auth/keys.hpp"

#include <fstream>
#include <sstream>

namespace shapesync::auth {

namespace {

std::optional<std::string> read_file(const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot read " + path;
    return std::nullopt;
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::optional<JwtOptions> load_jwt_options(const Config& cfg, std::string* error, std::string* warning) {
  JwtOptions o;
  std::string why;
  if (!cfg.jwt_secret.empty()) {
    auto k = JwtKey::hmac(cfg.jwt_secret, &why);
    if (!k) {
      *error = "--jwt-secret: " + why;
      return std::nullopt;
    }
    o.keys.push_back(std::move(*k));
  }
  if (!cfg.jwt_public_key_file.empty()) {
    auto pem = read_file(cfg.jwt_public_key_file, &why);
    std::optional<JwtKey> k;
    if (pem) k = JwtKey::from_pem(*pem, &why);
    if (!k) {
      *error = "--jwt-public-key: " + why;
      return std::nullopt;
    }
    o.keys.push_back(std::move(*k));
  }
  if (!cfg.jwks_file.empty()) {
    auto doc = read_file(cfg.jwks_file, &why);
    if (!doc) {
      *error = "--jwks-file: " + why;
      return std::nullopt;
    }
    auto keys = JwtKey::from_jwks(*doc, &why);
    if (keys.empty()) {
      *error = "--jwks-file: no usable key in " + cfg.jwks_file + (why.empty() ? "" : ": " + why);
      return std::nullopt;
    }
    if (!why.empty() && warning) *warning = "--jwks-file: " + why;
    for (auto& k : keys) o.keys.push_back(std::move(k));
  }
  if (!cfg.jwt_issuer.empty()) o.issuer = cfg.jwt_issuer;
  if (!cfg.jwt_audience.empty()) o.audience = cfg.jwt_audience;
  o.leeway = std::chrono::seconds(cfg.jwt_leeway_s);
  return o;
}

}  // namespace shapesync::auth
