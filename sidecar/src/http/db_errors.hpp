// How database failures that are not the client's fault read on the wire.
#pragma once
#include <string>

#include "db/errors.hpp"

namespace shapesync {

// The 503 body of a kConfiguration error; names the missing privilege.
std::string configuration_error_body(const PgError& e);

}  // namespace shapesync
