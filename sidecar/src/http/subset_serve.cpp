// App::serve_subset: validates a subset's WHERE with PostgreSQL and runs the
// subset query (subset_query_sql) in a REPEATABLE READ READ ONLY transaction
// (the parsing is in subset.cpp).
#include <algorithm>
#include <random>

#include "db/changes.hpp"
#include "db/registry.hpp"
#include "db/subset.hpp"
#include "http/app.hpp"
#include "db/errors.hpp"
#include "http/subset.hpp"
#include "util/log.hpp"

namespace shapesync {


namespace {

uint32_t random_mark() {
  thread_local std::mt19937 rng{std::random_device{}()};
  return std::uniform_int_distribution<uint32_t>(0, 0x7fffffff)(rng);
}

}  // namespace

asio::awaitable<Response> App::serve_subset(const Request& req, const QueryMap& q, const ShapeParams& p,
                                         const Caller& who) {
  auto parsed = parse_subset_params(q);
  if (auto* e = std::get_if<ValidationErrors>(&parsed)) co_return error_400(req, *e);
  SubsetParams sp = std::get<SubsetParams>(std::move(parsed));

  // Validate the subset against the table before any shape is created: the
  // subset WHERE is parsed, analysed and canonicalised by PostgreSQL, and only
  // its canonical form goes into the query.
  std::string canonical;
  bool with_version = false;
  {
    ValidationErrors v;
    SubsetCheck chk = co_await shapes_.check_subset(p.table, sp, who);
    if (chk.failure) {
      if (classify_pg_error(*chk.failure) != PgFailure::kRequest)
        co_return pg_failure_response(req, *chk.failure, "validating a subset", "SELECT");
      add_subset_error(v, "where", request_error_message(*chk.failure));
    }
    for (auto& [field, msg] : chk.errors) {
      if (field == "table") v.add(field, msg);
      else add_subset_error(v, field, msg);
    }
    canonical = chk.canonical_where;
    with_version = chk.versions;
    if (!v.empty()) co_return error_400(req, v);
    if (!chk.forbidden.empty()) {  // the caller's role may not filter on that (a column, a policy)
      ShapeError e;
      e.kind = ShapeError::Kind::kForbidden;
      for (auto& f : chk.forbidden) e.fields.push_back(f);
      co_return error_response(req, e);
    }
  }

  // The shape (created if needed) and the usual handle check.
  std::string def_key = definition_key(p) + who.key;
  ShapeOutcome got = co_await shapes_.get_shape(p, def_key, who);
  if (!got.shape) co_return error_response(req, got.error);
  std::shared_ptr<Shape> shape = std::move(got.shape);
  if (p.offset.kind == RequestOffset::Kind::kAt && *p.handle != shape->handle)
    co_return must_refetch(req, shape->handle);
  // a shape's identity is set once, at creation: read without the store's lock
  const std::string& handle = shape->handle;
  const std::string& schema_header = *shape->schema_header;
  const std::string& shape_where = shape->where;
  const std::string& prefix = *shape->key_prefix;
  const std::string& relation = *shape->relation;
  const std::vector<size_t>& selected = shape->def.selected;
  std::shared_ptr<const TableInfo> table = shape->def.table;
  const TableInfo& t = *table;
  if (who.role) {
    // ORDER BY only on the shape's columns: the query runs as the role, and
    // ordering by a column it may not read would tell its values apart.
    std::string hidden;
    for (auto& o : sp.order_by) {
      bool shown = std::any_of(selected.begin(), selected.end(), [&](size_t i) { return t.columns[i].name == o.column; });
      bool exists = std::any_of(t.columns.begin(), t.columns.end(), [&](const ColumnInfo& c) { return c.name == o.column; });
      if (exists && !shown) hidden += (hidden.empty() ? "" : ", ") + o.column;
    }
    if (!hidden.empty()) {
      ShapeError e;
      e.kind = ShapeError::Kind::kForbidden;
      e.fields.emplace_back("order_by", "permission denied for column " + hidden + " (not a column of this shape)");
      co_return error_response(req, e);
    }
  }
  std::string sql = subset_query_sql(t, selected, shape_where, canonical, sp, with_version);

  SubsetRows result;
  std::optional<PgError> failed = co_await shapes_.run_subset(sql, result, who);
  if (failed) {
    // The subset WHERE raised for a row (division by zero, a failed cast, ...).
    if (classify_pg_error(*failed) == PgFailure::kRequest) {
      ValidationErrors v;
      add_subset_error(v, "where", request_error_message(*failed));
      co_return error_400(req, v);
    }
    co_return pg_failure_response(req, *failed, "running a subset query", "SELECT");
  }
  auto ps = PgSnapshot::parse(result.snap);
  if (!ps) throw PgError("bad snapshot text", "", false);
  // database_lsn is in the space of global_last_seen_lsn (transaction
  // positions, not WAL LSNs): every transaction visible in this snapshot is
  // sequenced by tick max+2 at the latest (a tick that committed after the
  // snapshot began, max+1, may have taken its own snapshot earlier), so once the
  // client has seen that far it needs the snapshot's visibility no more.
  uint64_t tick = result.tick;
  uint64_t database_lsn = make_position(tick + 2, 0xffffffffu);
  uint32_t mark = random_mark();

  std::vector<std::string> messages;
  messages.reserve(result.rows.size());
  RowValues row(t.columns.size());
  for (auto& values : result.rows) {
    if (values.size() != selected.size() + (with_version ? 1 : 0))
      throw PgError("unexpected row from the subset query", "", false);
    for (size_t k = 0; k < selected.size(); ++k) row[selected[k]] = std::move(values[k]);
    std::string value;
    append_value_object(value, t, row, selected);
    std::string version = with_version && values.back() ? *values.back() : std::string();
    messages.push_back(subset_row_message(row_key(prefix, t, row), value, relation, mark, version));
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
  res.set(http::field::cache_control, auth_on_ && shape->def.policy_applied ? "private, no-cache" : "no-cache");
  co_return res;
}

}  // namespace shapesync
