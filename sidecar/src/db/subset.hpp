// Subset snapshots in the database: the query, and running it in one
// REPEATABLE READ READ ONLY transaction that also records its snapshot.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "db/pg.hpp"
#include "model/subset.hpp"
#include "model/table.hpp"

namespace shapesync {

// SELECT <columns> FROM <table> WHERE (<shape where>) AND (<subset where>)
// ORDER BY ... LIMIT ... OFFSET ...; both WHEREs must be canonical
// (PostgreSQL's deparse), ORDER BY is built from quoted identifiers only.
// `with_version`: one more column, last, the row's version (shapesync.row_version(xmin)).
std::string subset_query_sql(const TableInfo& t, const std::vector<size_t>& selected, const std::string& shape_where,
                             const std::string& subset_where, const SubsetParams& p, bool with_version = false);

struct SubsetRows {
  std::string snap;     // pg_current_snapshot() of the query
  uint64_t tick = 0;    // the newest tick it sees
  std::vector<std::vector<std::optional<std::string>>> rows;  // values of the selected columns
};
// Runs a subset query (subset_query_sql) in its own read-only snapshot, as
// `role` with `claims` (db/act_as.hpp; nullopt: the sidecar's own rights).
// Throws PgError.
asio::awaitable<SubsetRows> run_subset(PgConn& c, const std::string& sql, const std::optional<std::string>& role = {},
                                       const std::string& claims = "{}");

}  // namespace shapesync
