// Claims to role, and the caller key.
#include "auth/claims.hpp"

#include <openssl/evp.h>

namespace shapesync::auth {

RoleChoice role_from_claims(const nlohmann::json& claims, std::string_view claim, const std::string& anonymous_role) {
  auto refuse = [](std::string why) { return RoleChoice{std::nullopt, std::move(why)}; };
  const nlohmann::json* at = &claims;
  std::string shown(claim);
  if (!claim.empty() && claim.front() == '.') {
    std::string_view rest = claim.substr(1);
    while (at) {
      size_t dot = rest.find('.');
      std::string key(rest.substr(0, dot));
      if (!at->is_object() || key.empty()) {
        at = nullptr;
        break;
      }
      auto it = at->find(key);
      at = it == at->end() ? nullptr : &*it;
      if (dot == std::string_view::npos) break;
      rest = rest.substr(dot + 1);
    }
  } else {
    auto it = claims.is_object() ? claims.find(std::string(claim)) : claims.end();
    at = claims.is_object() && it != claims.end() ? &*it : nullptr;
  }
  if (!at || at->is_null()) {
    if (!anonymous_role.empty()) return RoleChoice{anonymous_role, {}};
    return refuse("the token has no \"" + shown + "\" claim naming a role");
  }
  if (!at->is_string()) return refuse("the token's \"" + shown + "\" claim is not a string");
  std::string role = at->get<std::string>();
  if (role.empty()) return refuse("the token's \"" + shown + "\" claim is empty");
  if (role.size() > 63) return refuse("the token's role is longer than 63 bytes");
  if (role.find('\0') != std::string::npos) return refuse("the token's role holds a NUL byte");
  return RoleChoice{std::move(role), {}};
}

std::string sha256_hex(std::string_view bytes) {
  // fetched once: EVP_sha256() in EVP_Digest fetches the implementation on
  // every call (OpenSSL 3), under a lock every request thread would share
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &n, kSha256 ? kSha256 : EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (unsigned int i = 0; i < n; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

std::string caller_key(const std::string& role, const std::string& claims_text) {
  std::string quoted = "\"";
  for (char c : role) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  quoted += '"';
  return "|role=" + quoted + "|claims=" + sha256_hex(claims_text);
}

}  // namespace shapesync::auth
