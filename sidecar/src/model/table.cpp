// Names of tables and columns.
#include "model/table.hpp"

namespace shapesync {

std::string quote_ident(std::string_view s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"') o += '"';
    o += c;
  }
  o += '"';
  return o;
}

}  // namespace shapesync
