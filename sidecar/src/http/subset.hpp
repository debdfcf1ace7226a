// Subset snapshots (PROTOCOL.md §2.2 `subset__*`, POST /v1/shape, §4.8):
// request parsing and validation that needs no database (the POST body, the
// ORDER BY tokenizer, limit/offset/params), and the response encoding. The
// part that asks the database (App::serve_subset) is in subset_serve.cpp.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "protocol/encode.hpp"
#include "http/params.hpp"
#include "model/subset.hpp"

namespace shapesync {

// True when the query carries any `subset__*` parameter.
bool is_subset_request(const QueryMap& q);

// Re-encodes a query map as a query string (percent-encoding everything but
// unreserved characters); parse_query() reads it back unchanged.
std::string encode_query(const QueryMap& q);

// A POST /v1/shape body that cannot be used: the status and the JSON body.
struct BodyError {
  int status = 400;
  std::string body;
};

// Merges a POST body into the query parameters (PROTOCOL.md §2.1): subset keys
// (where order_by limit offset params where_expr order_by_expr, top level or in
// a nested "subset" object) become `subset__<key>` and override the query's;
// other keys replace top-level parameters. Non-string values are stored as
// their JSON text. An empty body counts as {}.
std::variant<QueryMap, BodyError> merge_post_body(QueryMap q, std::string_view body);

// Tokenizes an ORDER BY list: column references (plain or double-quoted
// identifiers), each optionally ASC|DESC and NULLS FIRST|LAST, comma-separated.
// Anything else is an error message ("Function calls are not allowed in ORDER BY", ...).
std::variant<std::vector<OrderItem>, std::string> parse_order_by(std::string_view s);

// Reads the `subset__*` parameters. Errors are nested under "subset":
// {"subset":{"order_by":["..."]}}.
std::variant<SubsetParams, ValidationErrors> parse_subset_params(const QueryMap& q);

// Adds a message under errors.subset.<field>.
void add_subset_error(ValidationErrors& e, const std::string& field, const std::string& msg);

// Checks the ORDER BY columns against the shape's table; returns an error
// message naming the unknown columns, or "".
std::string check_order_by_columns(const std::vector<OrderItem>& order_by, const TableInfo& t);

// A subset row: {"key":…,"value":{…},"headers":{"operation":"insert","relation":[…],"version":"…","snapshot_mark":N}}
// ("version" only when given).
std::string subset_row_message(const std::string& key, const std::string& value_object, std::string_view relation,
                               uint32_t snapshot_mark, std::string_view version = {});

// {"metadata":{"xmin":…,"xmax":…,"xip_list":[…],"database_lsn":"…","snapshot_mark":N},"data":[rows…]}
std::string subset_body(std::string_view xmin, std::string_view xmax, const std::vector<std::string>& xip,
                        uint64_t database_lsn, uint32_t snapshot_mark, const std::vector<std::string>& rows);

}  // namespace shapesync
