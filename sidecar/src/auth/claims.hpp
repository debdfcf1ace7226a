// What a verified token's claims mean to shapesyncd (docs/auth.md): the
// PostgreSQL role they select (PostgREST's convention) and the key that keeps
// callers' requests apart. Pure functions.
#pragma once
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace shapesync::auth {

// The role named by `claim` in `claims`: a top-level claim ("role"), or a path
// of object keys starting with a dot (".app_metadata.role"). A token without
// it gets `anonymous_role` when that is set (PostgREST does the same). Returns
// the role, or why there is none (a 403 message): the claim is missing and
// there is no anonymous role, it is not a non-empty string, or it is longer
// than a PostgreSQL name (63 bytes) or holds a NUL byte.
struct RoleChoice {
  std::optional<std::string> role;  // the role, or
  std::string error;                // why there is none
};
RoleChoice role_from_claims(const nlohmann::json& claims, std::string_view claim, const std::string& anonymous_role);

// "|role=<quoted role>|claims=<sha256 hex of the claims' JSON text>": appended to
// the request key so requests of different callers never share an alias.
std::string caller_key(const std::string& role, const std::string& claims_text);

// Lowercase hex SHA-256 of bytes (OpenSSL).
std::string sha256_hex(std::string_view bytes);

}  // namespace shapesync::auth
