// PostgreSQL's COPY text format (the rows of `COPY ... TO STDOUT`): fields
// separated by tabs, \N for NULL, backslash escapes. The values are the
// columns' output texts, the same bytes a text-mode query returns.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/table.hpp"

namespace shapesync {

// Splits and unescapes one row (without its newline) into `out` (resized to
// the number of fields). Returns false when the row is malformed.
bool parse_copy_row(std::string_view line, std::vector<std::optional<std::string>>& out);

// The xid8 of a 32-bit xid read from a tuple (its xmin), widened against
// `next`, a full xid not older than it: the arithmetic of
// shapesync.row_version() (extension/versions.c) with `next` in place of the
// next xid to be assigned. For every row a snapshot sees, widened against
// the snapshot's xmax, it is the value row_version(xmin) returns (the row's
// xmin is older than the xmax, and by less than 2^31): a snapshot then
// selects `xmin` instead of calling row_version() for each row.
uint64_t widen_xmin(uint32_t xid, uint64_t next);


// Snapshot rows straight from COPY text to Shape protocol insert messages
// (PROTOCOL.md §4): each field is unescaped and JSON-escaped in one pass into
// the output, with no per-row or per-field strings. The bytes are those of
// row_key + append_value_object + snapshot_row_message (+ version_header) on
// the row parse_copy_row gives; a unit test holds them equal.
class CopyRowEncoder {
 public:
  // A row holds `lead` fields first (a group snapshot's shape index), then
  // the `selected` columns' values, then the row version when with_version:
  // its decimal xid8, or, when `widen_from` is not 0, the row's 32-bit xmin,
  // widened against widen_from (the snapshot's xmax) by widen_xmin().
  CopyRowEncoder(const TableInfo& t, const std::vector<size_t>& selected, size_t lead, bool with_version,
                 uint64_t widen_from = 0);

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
  uint64_t widen_from_;
  std::string head_;                  // {"key":"<prefix, JSON-escaped>
  std::vector<long> pk_fields_;       // per key column: its field, -1 when not selected
  std::vector<std::string> names_;    // per value: {"col": or ,"col":
  std::string tail_;                  // ,"headers":{"operation":"insert","relation":[...]
};

}  // namespace shapesync
