// The JWT settings of shapesyncd (docs/auth.md) turned into a verifier: keys
// read from --jwt-secret, --jwt-public-key and --jwks-file, and the claim
// checks (--jwt-issuer, --jwt-audience, --jwt-leeway). Reading files is all
// the I/O here; nothing logs.
#pragma once
#include <optional>
#include <string>

#include "auth/jwt.hpp"
#include "config.hpp"

namespace shapesync::auth {

// The verifier options of a config, keys loaded. nullopt with *error set when a
// key cannot be read or used (a missing file, a short secret, a JWKS without
// a usable key); warnings (JWKS keys skipped) go to *warning.
std::optional<JwtOptions> load_jwt_options(const Config& cfg, std::string* error, std::string* warning = nullptr);

}  // namespace shapesync::auth
