// PostgreSQL's COPY text format (the rows of `COPY ... TO STDOUT`): fields
// separated by tabs, \N for NULL, backslash escapes. The values are the
// columns' output texts, the same bytes a text-mode query returns.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shapesync {

// Splits and unescapes one row (without its newline) into `out` (resized to
// the number of fields). Returns false when the row is malformed.
bool parse_copy_row(std::string_view line, std::vector<std::optional<std::string>>& out);

}  // namespace shapesync
