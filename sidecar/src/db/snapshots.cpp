// Shape snapshots in the database.
#include "db/snapshots.hpp"

#include "db/act_as.hpp"
#include "db/copy_text.hpp"

namespace shapesync {

namespace {
// Advisory lock class of shape builds (21320, shape_id); 21321 is the ticker's (db/follow.cpp).
constexpr const char* kBuildLockClass = "21320";
}  // namespace

asio::awaitable<void> wait_for_writers(PgConn& c, uint32_t relid) {
  PgParams args{std::to_string(relid)};
  co_await c.exec("SELECT shapesync.wait_for_writers($1::oid::regclass)", args);
}

asio::awaitable<void> claim_snapshot(PgConn& c, const std::string& handle) {
  PgParams args{handle};
  co_await c.exec(
      "INSERT INTO shapesync.shape_snapshots (handle, snap, start_tick, chunk_count, row_count) "
      "VALUES ($1, '1:1:', 0, NULL, NULL)",
      args);
}

asio::awaitable<void> forget_claim(PgConn& c, const std::string& handle) {
  PgParams args{handle};
  co_await c.exec("DELETE FROM shapesync.shape_snapshots WHERE handle = $1 AND chunk_count IS NULL", args);
}

asio::awaitable<SnapshotData> begin_snapshot(PgConn& c, int timeout_ms, const std::optional<std::string>& role,
                                             const std::string& claims) {
  co_await c.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  co_await c.exec("SET LOCAL statement_timeout = " + std::to_string(timeout_ms));
  PgResult snap =
      co_await c.exec("SELECT pg_current_snapshot()::text, coalesce((SELECT max(tick_id) FROM shapesync.ticks), 0)");
  auto ps = PgSnapshot::parse(snap.get(0, 0));
  if (!ps) throw PgError("bad snapshot text", "", false);
  SnapshotData d;
  d.snap = *ps;
  d.snap_text = std::string(snap.get(0, 0));
  d.start_tick = std::stoull(std::string(snap.get(0, 1)));
  // after reading shapesync.ticks, which the caller's role need not see
  co_await act_as(c, role, claims);
  co_return d;
}

asio::awaitable<void> copy_snapshot_rows(
    PgConn& c, const TableInfo& t, const std::vector<size_t>& selected, const std::string& where, bool with_version,
    const std::function<void(std::vector<std::optional<std::string>>&, std::string_view)>& on_row) {
  std::string sql = "COPY (SELECT ";
  for (size_t i = 0; i < selected.size(); ++i) {
    if (i) sql += ", ";
    sql += quote_ident(t.columns[selected[i]].name);
  }
  // last, so that the values keep their indexes (xmin: a system column, no user column can take its name)
  if (with_version) sql += ", shapesync.row_version(xmin)::text";
  // ONLY: the rows of an inheritance child are not the tracked table's
  // (a child's changes fire none of its triggers)
  sql += " FROM ONLY " + quote_ident(t.schema) + "." + quote_ident(t.name);
  // The canonical WHERE is PostgreSQL's own deparse of the validated expression.
  if (!where.empty()) sql += " WHERE " + where;
  sql += ") TO STDOUT";
  std::vector<std::optional<std::string>> fields;
  std::string version;
  const size_t width = selected.size() + (with_version ? 1 : 0);
  co_await c.copy_out(sql, [&](std::string_view line) {
    if (!parse_copy_row(line, fields) || fields.size() != width)
      throw PgError("unexpected COPY row from the snapshot query", "", false);
    version.clear();
    if (with_version) {
      if (fields.back()) version = std::move(*fields.back());
      fields.pop_back();
    }
    on_row(fields, version);
  });
}

asio::awaitable<bool> can_read_versions(PgConn& c, uint32_t relid, const std::optional<std::string>& role) {
  PgParams args{role.value_or(""), std::to_string(relid)};
  PgResult r = co_await c.exec(
      "SELECT CASE WHEN $1 = '' THEN has_column_privilege($2::oid, 'xmin', 'SELECT') "
      "ELSE has_column_privilege($1::name, $2::oid, 'xmin', 'SELECT') END",
      args);
  co_return r.rows() == 1 && r.get(0, 0) == "t";
}

asio::awaitable<void> store_snapshot(PgConn& c, const std::string& handle, const SnapshotData& d) {
  co_await c.exec("BEGIN");
  std::exception_ptr failure;
  try {
    for (size_t i = 0; i < d.chunks.size(); ++i) {
      PgParams args{handle, std::to_string(i), *d.chunks[i]};
      co_await c.exec("INSERT INTO shapesync.shape_snapshot_chunks (handle, chunk_no, body) VALUES ($1, $2::int, $3)",
                      args);
    }
    PgParams args{handle, std::to_string(d.chunks.size()), std::to_string(d.rows), d.snap_text,
                  std::to_string(d.start_tick)};
    co_await c.exec(
        "UPDATE shapesync.shape_snapshots SET chunk_count = $2::int, row_count = $3::bigint, "
        "snap = $4::pg_snapshot, start_tick = $5::bigint WHERE handle = $1",
        args);
    co_await c.exec("COMMIT");
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    co_await c.rollback_if_open();
    std::rethrow_exception(failure);
  }
}

asio::awaitable<std::optional<SnapshotData>> load_snapshot(PgConn& c, const std::string& handle) {
  PgParams args{handle};
  PgResult meta = co_await c.exec(
      "SELECT snap::text, start_tick, chunk_count, row_count FROM shapesync.shape_snapshots WHERE handle = $1", args);
  if (meta.rows() == 0) co_return std::nullopt;
  SnapshotData d;
  if (meta.is_null(0, 2)) {  // claimed by a builder that has not stored it (yet)
    d.building = true;
    co_return d;
  }
  auto ps = PgSnapshot::parse(meta.get(0, 0));
  if (!ps) throw PgError("bad stored snapshot", "", false);
  d.snap = *ps;
  d.snap_text = std::string(meta.get(0, 0));
  d.start_tick = std::stoull(std::string(meta.get(0, 1)));
  long long count = meta.get_int(0, 2);
  d.rows = meta.get_int(0, 3);
  PgResult bodies =
      co_await c.exec("SELECT body FROM shapesync.shape_snapshot_chunks WHERE handle = $1 ORDER BY chunk_no", args);
  if (bodies.rows() != count) throw PgError("stored snapshot of " + handle + " is incomplete", "", false);
  for (int i = 0; i < bodies.rows(); ++i) d.chunks.push_back(std::make_shared<const std::string>(bodies.get(i, 0)));
  co_return d;
}

asio::awaitable<bool> try_build_lock(PgConn& c, int32_t shape_id) {
  PgResult got = co_await c.exec(std::string("SELECT pg_try_advisory_lock(") + kBuildLockClass + ", " +
                                 std::to_string(shape_id) + ")");
  co_return got.get(0, 0) == "t";
}

asio::awaitable<void> build_unlock(PgConn& c, int32_t shape_id) {
  co_await c.exec(std::string("SELECT pg_advisory_unlock(") + kBuildLockClass + ", " + std::to_string(shape_id) + ")");
}

asio::awaitable<void> report_shape_built(PgConn& c, const std::string& handle, long long rows) {
  PgParams args{handle, std::to_string(rows)};
  co_await c.exec("SELECT shapesync.report_shape($1, $2::bigint, '0_inf')", args);
}

}  // namespace shapesync
