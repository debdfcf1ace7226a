// On whose behalf a request is served (docs/auth.md): the PostgreSQL role a
// verified token (or --anonymous-role) selected and the token's claims. Set by
// the HTTP layer's auth gate; read by shapes/ (registration, the request key)
// and db/ (SET LOCAL ROLE and request.jwt.claims around snapshots and subsets).
#pragma once
#include <optional>
#include <string>

namespace shapesync {

struct Caller {
  std::optional<std::string> role;  // nullopt: auth is off (--insecure without a key); the sidecar's own rights
  std::string claims = "{}";        // the token's payload as JSON text ("{}" when anonymous)
  // "|role=…|claims=<sha256 of claims>": appended to the request key, so that
  // requests of different callers never alias one another's shapes (the
  // canonical key, from the effective filter, still shares them).
  std::string key;
};

}  // namespace shapesync
