// A tracked table as the wire needs it: its columns, primary key and rows as
// text values. Plain data, no behaviour beyond naming.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shapesync {

struct QualifiedName {
  std::string schema = "public";
  std::string name;
  bool operator==(const QualifiedName&) const = default;
};

// One column of a tracked table, as the wire needs it.
struct ColumnInfo {
  std::string name;
  int attnum = 0;              // pg_attribute.attnum (index into decoded row images)
  std::string type;            // typname; element typname for arrays
  int dims = 0;                // > 0 for arrays
  int pk_index = -1;           // position in the primary key, -1 if not part of it
  bool not_null = false;
  int typmod = -1;
  std::string base_type;       // typname of the column's own type (e.g. _int4, varchar)
  bool operator==(const ColumnInfo&) const = default;
};

struct TableInfo {
  uint32_t relid = 0;
  std::string schema;
  std::string name;
  std::vector<ColumnInfo> columns;  // non-dropped, attnum order
  std::vector<size_t> pk;           // indexes into columns, in primary-key order
  int natts = 0;                    // relnatts (decoded arrays have this length)
  bool operator==(const TableInfo&) const = default;
};

// A row as text values indexed like TableInfo::columns (nullopt = SQL NULL).
using RowValues = std::vector<std::optional<std::string>>;

// Quotes an identifier for SQL ("a""b").
std::string quote_ident(std::string_view s);

}  // namespace shapesync
