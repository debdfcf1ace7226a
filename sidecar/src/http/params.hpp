// GET /v1/shape request parameters: query-string parsing and the validation
// stages of PROTOCOL.md §2 that need no database. Pure functions, unit-tested.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/shape_request.hpp"

namespace shapesync {

using QueryMap = std::multimap<std::string, std::string>;

// Splits "a=1&b=%20x" into decoded pairs ('+' is a space, %XX decoded).
QueryMap parse_query(std::string_view query);
std::string url_decode(std::string_view s);


// Parses a PostgreSQL relation identifier: name or schema.name, quoted parts keep
// case ("" escapes "), unquoted parts are down-cased. Returns an error message.
std::variant<QualifiedName, std::string> parse_relation(std::string_view s);
// Parses a comma-separated column list with the same identifier rules.
std::variant<std::vector<std::string>, std::string> parse_columns(std::string_view s);



// Electric's error body fields: {"<field>": ["msg", ...]}.
struct ValidationErrors {
  nlohmann::json errors = nlohmann::json::object();
  void add(const std::string& field, const std::string& msg) { errors[field].push_back(msg); }
  bool empty() const { return errors.empty(); }
  // {"message":"Invalid request","errors":{...}}
  std::string body() const;
};

std::variant<ShapeParams, ValidationErrors> parse_shape_params(const QueryMap& q);

// $n values are numbered 1..kMaxShapeParams.
inline constexpr int kMaxShapeParams = 65535;
// Reads a params JSON object ({"1":"v",...}; values strings, numbers or
// booleans) into (key, value) pairs; returns an error message or "".
std::string read_params_object(std::string_view text, std::vector<std::pair<std::string, std::string>>& out);
// Checks numbered parameters (keys digits only, 1..kMaxShapeParams, sequential
// from 1) into `out`; errors go under "params" (or "subset": {"params": ...}).
void check_numbered_params(const std::vector<std::pair<std::string, std::string>>& pairs,
                           std::map<int, std::string>& out, ValidationErrors& e, bool in_subset = false);

}  // namespace shapesync
