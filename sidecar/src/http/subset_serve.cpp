// App::serve_subset: validates a subset's WHERE with PostgreSQL and runs the
// subset query (subset_query_sql) in a REPEATABLE READ READ ONLY transaction
// (the parsing is in subset.cpp).
#include <random>

#include "db/changes.hpp"
#include "http/app.hpp"
#include "http/pg_errors.hpp"
#include "http/subset.hpp"
#include "util/log.hpp"
#include "db/text_array.hpp"

namespace shapesync {

std::string subset_query_sql(const TableInfo& t, const std::vector<size_t>& selected, const std::string& shape_where,
                             const std::string& subset_where, const SubsetParams& p) {
  std::string sql = "SELECT ";
  for (size_t i = 0; i < selected.size(); ++i) {
    if (i) sql += ", ";
    sql += quote_ident(t.columns[selected[i]].name);
  }
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

namespace {

uint32_t random_mark() {
  thread_local std::mt19937 rng{std::random_device{}()};
  return std::uniform_int_distribution<uint32_t>(0, 0x7fffffff)(rng);
}

}  // namespace

asio::awaitable<Response> App::serve_subset(const Request& req, const QueryMap& q, const ShapeParams& p) {
  auto parsed = parse_subset_params(q);
  if (auto* e = std::get_if<ValidationErrors>(&parsed)) co_return error_400(req, *e);
  SubsetParams sp = std::get<SubsetParams>(std::move(parsed));

  // Validate the subset against the table before any shape is created: the
  // subset WHERE is parsed, analysed and canonicalised by PostgreSQL, and only
  // its canonical form goes into the query.
  std::string canonical;
  {
    ValidationErrors v;
    std::optional<PgError> failed;
    try {
      auto lease = co_await pool_.acquire();
      TableLookup lookup = co_await lookup_table(*lease, p.table);
      if (!lookup.table) {
        v.add("table", lookup.error);
      } else {
        if (std::string err = check_order_by_columns(sp.order_by, *lookup.table); !err.empty())
          add_subset_error(v, "order_by", err);
        if (sp.where) {
          std::optional<std::string> params;
          if (!sp.params.empty()) params = text_array_literal(sp.params);
          PgParams args{std::to_string(lookup.table->relid), *sp.where, params};
          // check_shape() returns a rejected filter as data: nothing in the server log
          PgResult r = co_await lease->exec(
              "SELECT canonical_where, error_message, error_position, error_detail "
              "FROM shapesync.check_shape($1::oid::regclass, $2, $3::text[])", args);
          if (auto m = r.opt(0, 1)) {
            std::string msg = *m;
            if (auto pos = r.opt(0, 2)) msg = "At location " + *pos + ": " + msg;
            if (auto d = r.opt(0, 3)) msg += ". " + *d;
            add_subset_error(v, "where", msg);
          }
          canonical = r.opt(0, 0).value_or("");
        }
      }
    } catch (const PgError& e) {
      failed = e;
    }
    if (failed) {
      if (classify_pg_error(*failed) != PgFailure::kRequest)
        co_return pg_failure_response(req, *failed, "validating a subset", "SELECT");
      add_subset_error(v, "where", request_error_message(*failed));
    }
    if (!v.empty()) co_return error_400(req, v);
  }

  // The shape (created if needed) and the usual handle check.
  std::string def_key = definition_key(p);
  std::shared_ptr<const TableInfo> table;
  Response err;
  auto shape = co_await get_shape(p, def_key, table, err, req);
  if (!shape) co_return err;
  if (p.offset.kind == RequestOffset::Kind::kAt && *p.handle != shape->handle)
    co_return must_refetch(req, shape->handle);
  std::string handle, schema_header, shape_where, prefix, relation;
  std::vector<size_t> selected;
  {
    std::lock_guard lk(store_.mutex());
    handle = shape->handle;
    schema_header = shape->schema_header;
    shape_where = shape->where;
    prefix = shape->key_prefix;
    relation = shape->relation;
    selected = shape->def.selected;
    table = shape->def.table;
  }
  const TableInfo& t = *table;
  std::string sql = subset_query_sql(t, selected, shape_where, canonical, sp);

  PgResult snap, rows;
  std::optional<PgError> failed;
  {
    auto lease = co_await pool_.acquire();
    PgConn& c = *lease;
    std::exception_ptr failure;
    try {
      co_await c.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      snap = co_await c.exec(
          "SELECT pg_current_snapshot()::text, coalesce((SELECT max(tick_id) FROM shapesync.ticks), 0)");
      rows = co_await c.exec(sql);
      co_await c.exec("COMMIT");
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure) {
      if (c.ok() && PQtransactionStatus(c.raw()) != PQTRANS_IDLE) co_await c.exec("ROLLBACK");
      try {
        std::rethrow_exception(failure);
      } catch (const PgError& e) {
        failed = e;
      }
    }
  }
  if (failed) {
    // The subset WHERE raised for a row (division by zero, a failed cast, ...).
    if (classify_pg_error(*failed) == PgFailure::kRequest) {
      ValidationErrors v;
      add_subset_error(v, "where", request_error_message(*failed));
      co_return error_400(req, v);
    }
    co_return pg_failure_response(req, *failed, "running a subset query", "SELECT");
  }
  auto ps = PgSnapshot::parse(snap.get(0, 0));
  if (!ps) throw PgError("bad snapshot text", "", false);
  // database_lsn is in the space of global_last_seen_lsn (transaction
  // positions, not WAL LSNs): every transaction visible in this snapshot is
  // sequenced by tick max+2 at the latest (a tick that committed after the
  // snapshot began, max+1, may have taken its own snapshot earlier), so once the
  // client has seen that far it needs the snapshot's visibility no more.
  uint64_t tick = std::stoull(std::string(snap.get(0, 1)));
  uint64_t database_lsn = make_position(tick + 2, 0xffffffffu);
  uint32_t mark = random_mark();

  std::vector<std::string> messages;
  messages.reserve(static_cast<size_t>(rows.rows()));
  RowValues row(t.columns.size());
  for (int i = 0; i < rows.rows(); ++i) {
    for (size_t k = 0; k < selected.size(); ++k) row[selected[k]] = rows.opt(i, static_cast<int>(k));
    std::string value;
    append_value_object(value, t, row, selected);
    messages.push_back(subset_row_message(row_key(prefix, t, row), value, relation, mark));
  }
  Response res = json_response(req, http::status::ok,
                               subset_body(ps->xmin_s, ps->xmax_s, ps->xip_s, database_lsn, mark, messages));
  res.set("electric-handle", handle);
  // The client moves its stream to this offset: echo its own, never skip ahead.
  res.set("electric-offset", p.offset.kind == RequestOffset::Kind::kAt       ? p.offset.at.to_string()
                             : p.offset.kind == RequestOffset::Kind::kNow ? std::string("now")
                                                                           : std::string("-1"));
  res.set("electric-schema", schema_header);
  res.set("electric-snapshot", "true");
  res.set(http::field::cache_control, "no-cache");
  co_return res;
}

}  // namespace shapesync
