// PostgreSQL's COPY text format (the rows of `COPY ... TO STDOUT`): fields
// separated by tabs, \N for NULL, backslash escapes. The values are the
// columns' output texts, the same bytes a text-mode query returns.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/table.hpp"

namespace shapesync {

// Splits and unescapes one row (without its newline) into `out` (resized to
// the number of fields). Returns false when the row is malformed.
bool parse_copy_row(std::string_view line, std::vector<std::optional<std::string>>& out);


// Snapshot rows straight from COPY text to Shape protocol insert messages
// (PROTOCOL.md §4): each field is unescaped and JSON-escaped in one pass into
// the output, with no per-row or per-field strings. The bytes are those of
// row_key + append_value_object + snapshot_row_message (+ version_header) on
// the row parse_copy_row gives; a unit test holds them equal.
class CopyRowEncoder {
 public:
  // A row holds `lead` fields first (a group snapshot's shape index), then
  // the `selected` columns' values, then the row version when with_version.
  CopyRowEncoder(const TableInfo& t, const std::vector<size_t>& selected, size_t lead, bool with_version);

  // Splits a row into its fields; false when malformed (wrong field count).
  bool split(std::string_view line);
  // A lead field of the last split row, still COPY-escaped.
  std::string_view lead_field(size_t i) const { return fields_[i]; }
  // Appends the last split row's insert message to out; false (out as it
  // was) when a field holds a malformed escape.
  bool append_message(std::string& out) const;

 private:
  std::vector<std::string_view> fields_;
  size_t width_;
  size_t lead_;
  bool with_version_;
  std::string head_;                  // {"key":"<prefix, JSON-escaped>
  std::vector<long> pk_fields_;       // per key column: its field, -1 when not selected
  std::vector<std::string> names_;    // per value: {"col": or ,"col":
  std::string tail_;                  // ,"headers":{"operation":"insert","relation":[...]
};

}  // namespace shapesync
