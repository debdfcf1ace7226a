// PostgreSQL text[] literals: how values travel to and from SQL as arrays
// (change-log rows, shape parameters). Pure functions.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/table.hpp"

namespace shapesync {

// Formats a PostgreSQL text[] literal, every element quoted.
std::string text_array_literal(const std::vector<std::string>& v);

// Parses a PostgreSQL text[] literal with lower bound 1 ("{a,\"b c\",NULL}").
// Returns nullopt on malformed input.
std::optional<RowValues> parse_text_array(std::string_view s);

}  // namespace shapesync
