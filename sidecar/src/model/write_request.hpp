// One POST /v1/mutations as the database gets it (docs/mutations.md).
#pragma once
#include <optional>
#include <string>

namespace shapesync {

struct WriteRequest {
  std::string mutations;  // the body's "mutations" array, as JSON text
  std::optional<std::string> idempotency_key;
  bool allow_partial = false;
};

}  // namespace shapesync
