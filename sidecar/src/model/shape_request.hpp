// What a client asks for: a shape (table, WHERE, params, columns, replica, log
// mode) and where in its log to read. Parsed from HTTP by http/params; read by
// every layer below it.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/offset.hpp"
#include "model/table.hpp"

namespace shapesync {

enum class Replica { kDefault, kFull };
enum class LogMode { kFull, kChangesOnly };

struct ShapeParams {
  QualifiedName table;
  RequestOffset offset;
  std::optional<std::string> handle;  // dropped for offset -1 / now
  bool live = false;
  bool live_sse = false;
  long long cursor = 0;
  std::optional<std::string> where;
  std::map<int, std::string> params;  // $n values
  std::optional<std::vector<std::string>> columns;
  Replica replica = Replica::kDefault;
  LogMode log = LogMode::kFull;
  std::optional<std::string> secret;
};

}  // namespace shapesync
