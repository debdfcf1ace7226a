// A subset snapshot request (subset__* parameters, PROTOCOL.md §4.8): the
// rows of a shape that match a further WHERE, ordered and paged.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace shapesync {

// One ORDER BY item: a column and its direction and null placement.
struct OrderItem {
  std::string column;  // identifier as written (quoted: exact; unquoted: down-cased)
  bool desc = false;
  std::optional<bool> nulls_first;  // nullopt: PostgreSQL's default
  bool operator==(const OrderItem&) const = default;
};

// The validated subset parameters (column names not checked yet).
struct SubsetParams {
  std::optional<std::string> where;
  std::vector<std::string> params;  // $1..$n, in order
  std::vector<OrderItem> order_by;
  std::optional<long long> limit;
  std::optional<long long> offset;
};

}  // namespace shapesync
