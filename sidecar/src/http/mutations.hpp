// POST /v1/mutations: checking a request body before it goes to the database
// (pure, unit-tested and fuzzed); the endpoint itself is App::handle_mutations.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "http/params.hpp"
#include "model/write_request.hpp"

namespace shapesync {

// JSON nesting allowed in a mutations body (values of json/jsonb columns included).
inline constexpr int kMaxMutationNesting = 64;

struct MutationsRequestError {
  ValidationErrors errors;
  bool too_large = false;  // 413 rather than 400
};

// The body {"mutations":[{...},...], "allow_partial": bool?}, the
// allow_partial query parameter ("" when absent) and the Idempotency-Key
// header, checked: the mutations array (1..max_mutations objects) as JSON
// text for the database, or what is wrong.
std::variant<WriteRequest, MutationsRequestError> parse_mutations_request(std::string_view body,
                                                                          std::string_view allow_partial_param,
                                                                          const std::optional<std::string>& key,
                                                                          int max_mutations);

}  // namespace shapesync
