// Subset snapshots in the database.
#include "db/subset.hpp"

#include "db/act_as.hpp"

namespace shapesync {

std::string subset_query_sql(const TableInfo& t, const std::vector<size_t>& selected, const std::string& shape_where,
                             const std::string& subset_where, const SubsetParams& p, bool with_version) {
  std::string sql = "SELECT ";
  for (size_t i = 0; i < selected.size(); ++i) {
    if (i) sql += ", ";
    sql += quote_ident(t.columns[selected[i]].name);
  }
  if (with_version) sql += ", shapesync.row_version(xmin)";
  sql += " FROM ONLY " + quote_ident(t.schema) + "." + quote_ident(t.name);
  if (!shape_where.empty() && !subset_where.empty())
    sql += " WHERE (" + shape_where + ") AND (" + subset_where + ")";
  else if (!shape_where.empty())
    sql += " WHERE " + shape_where;
  else if (!subset_where.empty())
    sql += " WHERE " + subset_where;
  if (!p.order_by.empty()) {
    sql += " ORDER BY ";
    for (size_t i = 0; i < p.order_by.size(); ++i) {
      const OrderItem& o = p.order_by[i];
      if (i) sql += ", ";
      sql += quote_ident(o.column);
      if (o.desc) sql += " DESC";
      if (o.nulls_first) sql += *o.nulls_first ? " NULLS FIRST" : " NULLS LAST";
    }
  }
  if (p.limit) sql += " LIMIT " + std::to_string(*p.limit);
  if (p.offset) sql += " OFFSET " + std::to_string(*p.offset);
  return sql;
}

asio::awaitable<SubsetRows> run_subset(PgConn& c, const std::string& sql, const std::optional<std::string>& role,
                                       const std::string& claims) {
  SubsetRows out;
  std::exception_ptr failure;
  try {
    co_await c.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    PgResult snap =
        co_await c.exec("SELECT pg_current_snapshot()::text, coalesce((SELECT max(tick_id) FROM shapesync.ticks), 0)");
    co_await act_as(c, role, claims);
    PgResult rows = co_await c.exec(sql);
    co_await c.exec("COMMIT");
    out.snap = std::string(snap.get(0, 0));
    out.tick = std::stoull(std::string(snap.get(0, 1)));
    out.rows.reserve(static_cast<size_t>(rows.rows()));
    for (int i = 0; i < rows.rows(); ++i) {
      std::vector<std::optional<std::string>> r(static_cast<size_t>(rows.cols()));
      for (int k = 0; k < rows.cols(); ++k) r[static_cast<size_t>(k)] = rows.opt(i, k);
      out.rows.push_back(std::move(r));
    }
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    co_await c.rollback_if_open();
    std::rethrow_exception(failure);
  }
  co_return out;
}

}  // namespace shapesync
