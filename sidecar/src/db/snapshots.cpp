// Shape snapshots in the database.
#include "db/snapshots.hpp"

#include <charconv>

#include "db/act_as.hpp"
#include "db/copy_text.hpp"
#include "db/text_array.hpp"

namespace shapesync {

namespace {
// Advisory lock class of shape builds (21320, shape_id); 21321 is the ticker's (db/follow.cpp).
constexpr const char* kBuildLockClass = "21320";

template <class T>
std::string number_array_literal(const std::vector<T>& v) {
  std::string o = "{";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) o += ',';
    o += std::to_string(v[i]);
  }
  return o + "}";
}

// The SELECT list and FROM of a snapshot query (the values, then the row's xmin when versions are asked:
// the sidecar widens it to the row version, CopyRowEncoder).
std::string snapshot_select(const TableInfo& t, const std::vector<size_t>& selected, bool with_version) {
  std::string sql;
  for (size_t i = 0; i < selected.size(); ++i) {
    if (i) sql += ", ";
    sql += quote_ident(t.columns[selected[i]].name);
  }
  // last, so that the values keep their indexes (xmin: a system column, no user column can take its name)
  // what shapesync.row_version(xmin) would return, widened in the sidecar (widen_xmin): one
  // function call and one xid8 output less per row in the database's part of the snapshot
  if (with_version) sql += ", xmin";
  // ONLY: the rows of an inheritance child are not the tracked table's
  // (a child's changes fire none of its triggers)
  sql += " FROM ONLY " + quote_ident(t.schema) + "." + quote_ident(t.name);
  return sql;
}

PgError malformed_copy_row() { return PgError("unexpected COPY row from the snapshot query", "", false); }
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

void SnapshotRow::append_message(std::string& out) const {
  if (!e_.append_message(out)) throw malformed_copy_row();
}

asio::awaitable<void> copy_snapshot_rows(PgConn& c, const TableInfo& t, const std::vector<size_t>& selected,
                                         const std::string& where, std::optional<uint64_t> versions_at,
                                         const std::function<void(const SnapshotRow&)>& on_row) {
  const bool with_version = versions_at.has_value();
  std::string sql = "COPY (SELECT " + snapshot_select(t, selected, with_version);
  // The canonical WHERE is PostgreSQL's own deparse of the validated expression.
  if (!where.empty()) sql += " WHERE " + where;
  sql += ") TO STDOUT";
  CopyRowEncoder enc(t, selected, 0, with_version, versions_at.value_or(0));
  const SnapshotRow row(enc);
  co_await c.copy_out(sql, [&](std::string_view line) {
    if (!enc.split(line)) throw malformed_copy_row();
    on_row(row);
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

asio::awaitable<std::vector<std::optional<SnapshotData>>> load_snapshots(PgConn& c,
                                                                         const std::vector<std::string>& handles) {
  std::vector<std::optional<SnapshotData>> out(handles.size());
  if (handles.empty()) co_return out;
  PgParams args{text_array_literal(handles)};
  PgResult meta = co_await c.exec(
      "SELECT u.i, s.snap::text, s.start_tick, s.chunk_count, s.row_count "
      "FROM unnest($1::text[]) WITH ORDINALITY AS u(handle, i) "
      "JOIN shapesync.shape_snapshots s ON s.handle = u.handle",
      args);
  std::vector<long long> counts(handles.size(), 0);
  std::vector<std::string> stored;
  for (int r = 0; r < meta.rows(); ++r) {
    size_t i = static_cast<size_t>(meta.get_int(r, 0) - 1);
    if (i >= handles.size()) throw PgError("unexpected row from the stored snapshots", "", false);
    SnapshotData d;
    if (meta.is_null(r, 3)) {  // claimed by a builder that has not stored it (yet)
      d.building = true;
      out[i] = std::move(d);
      continue;
    }
    auto ps = PgSnapshot::parse(meta.get(r, 1));
    if (!ps) throw PgError("bad stored snapshot", "", false);
    d.snap = *ps;
    d.snap_text = std::string(meta.get(r, 1));
    d.start_tick = std::stoull(std::string(meta.get(r, 2)));
    counts[i] = meta.get_int(r, 3);
    d.rows = meta.get_int(r, 4);
    out[i] = std::move(d);
    stored.push_back(handles[i]);
  }
  if (stored.empty()) co_return out;
  PgParams bargs{text_array_literal(handles)};
  PgResult bodies = co_await c.exec(
      "SELECT u.i, b.body FROM unnest($1::text[]) WITH ORDINALITY AS u(handle, i) "
      "JOIN shapesync.shape_snapshot_chunks b ON b.handle = u.handle ORDER BY u.i, b.chunk_no",
      bargs);
  for (int r = 0; r < bodies.rows(); ++r) {
    size_t i = static_cast<size_t>(bodies.get_int(r, 0) - 1);
    if (i >= handles.size() || !out[i] || out[i]->building) continue;  // stored since the first read: next time
    out[i]->chunks.push_back(std::make_shared<const std::string>(bodies.get(r, 1)));
  }
  for (size_t i = 0; i < handles.size(); ++i)
    if (out[i] && !out[i]->building && static_cast<long long>(out[i]->chunks.size()) != counts[i])
      throw PgError("stored snapshot of " + handles[i] + " is incomplete", "", false);
  co_return out;
}

asio::awaitable<std::vector<bool>> try_build_locks(PgConn& c, const std::vector<int32_t>& shape_ids) {
  std::vector<bool> out(shape_ids.size(), false);
  if (shape_ids.empty()) co_return out;
  PgParams args{number_array_literal(shape_ids)};
  const std::string sql = std::string("SELECT u.i, pg_try_advisory_lock(") + kBuildLockClass +
                          ", u.id) FROM unnest($1::int[]) WITH ORDINALITY AS u(id, i) ORDER BY u.i";
  PgResult got = co_await c.exec(sql, args);
  if (got.rows() != static_cast<int>(shape_ids.size())) throw PgError("unexpected build lock answer", "", false);
  for (int r = 0; r < got.rows(); ++r) out[static_cast<size_t>(r)] = got.get(r, 1) == "t";
  co_return out;
}

asio::awaitable<void> build_unlock_all(PgConn& c, const std::vector<int32_t>& shape_ids) {
  if (shape_ids.empty()) co_return;
  PgParams args{number_array_literal(shape_ids)};
  const std::string sql = std::string("SELECT pg_advisory_unlock(") + kBuildLockClass + ", id) FROM unnest($1::int[]) id";
  co_await c.exec(sql, args);
}

asio::awaitable<void> claim_snapshots(PgConn& c, const std::vector<std::string>& handles) {
  if (handles.empty()) co_return;
  PgParams args{text_array_literal(handles)};
  co_await c.exec(
      "INSERT INTO shapesync.shape_snapshots (handle, snap, start_tick, chunk_count, row_count) "
      "SELECT h, '1:1:', 0, NULL, NULL FROM unnest($1::text[]) h",
      args);
}

asio::awaitable<void> forget_claims(PgConn& c, const std::vector<std::string>& handles) {
  if (handles.empty()) co_return;
  PgParams args{text_array_literal(handles)};
  co_await c.exec("DELETE FROM shapesync.shape_snapshots WHERE handle = ANY($1::text[]) AND chunk_count IS NULL",
                  args);
}

asio::awaitable<void> copy_snapshot_rows_many(
    PgConn& c, const TableInfo& t, const std::vector<size_t>& selected, const std::vector<std::string>& wheres,
    std::optional<uint64_t> versions_at,
    const std::function<void(size_t shape, const SnapshotRow&)>& on_row) {
  if (wheres.empty()) co_return;
  const bool with_version = versions_at.has_value();
  const std::string select = snapshot_select(t, selected, with_version);
  std::string sql = "COPY (";
  for (size_t i = 0; i < wheres.size(); ++i) {
    if (i) sql += " UNION ALL ";
    // each branch its own shape's canonical WHERE, as PostgreSQL deparsed it
    sql += "SELECT " + std::to_string(i) + ", " + select;
    if (!wheres[i].empty()) sql += " WHERE " + wheres[i];
  }
  sql += ") TO STDOUT";
  CopyRowEncoder enc(t, selected, 1, with_version, versions_at.value_or(0));
  const SnapshotRow row(enc);
  co_await c.copy_out(sql, [&](std::string_view line) {
    if (!enc.split(line)) throw malformed_copy_row();
    std::string_view tag = enc.lead_field(0);
    size_t shape = 0;
    auto [end, ec] = std::from_chars(tag.data(), tag.data() + tag.size(), shape);
    if (ec != std::errc() || end != tag.data() + tag.size() || shape >= wheres.size()) throw malformed_copy_row();
    on_row(shape, row);
  });
}

asio::awaitable<void> store_snapshots(PgConn& c, const std::vector<std::string>& handles,
                                      const std::vector<const SnapshotData*>& data) {
  if (handles.empty()) co_return;
  std::vector<std::string> chunk_handles, bodies, snaps, hs;
  std::vector<int32_t> chunk_nos, counts;
  std::vector<long long> rows;
  std::vector<uint64_t> ticks;
  for (size_t i = 0; i < handles.size(); ++i) {
    const SnapshotData& d = *data[i];
    for (size_t k = 0; k < d.chunks.size(); ++k) {
      chunk_handles.push_back(handles[i]);
      chunk_nos.push_back(static_cast<int32_t>(k));
      bodies.push_back(*d.chunks[k]);
    }
    hs.push_back(handles[i]);
    counts.push_back(static_cast<int32_t>(d.chunks.size()));
    rows.push_back(d.rows);
    snaps.push_back(d.snap_text);
    ticks.push_back(d.start_tick);
  }
  co_await c.exec("BEGIN");
  std::exception_ptr failure;
  try {
    PgParams cargs{text_array_literal(chunk_handles), number_array_literal(chunk_nos), text_array_literal(bodies)};
    co_await c.exec(
        "INSERT INTO shapesync.shape_snapshot_chunks (handle, chunk_no, body) "
        "SELECT * FROM unnest($1::text[], $2::int[], $3::text[])",
        cargs);
    PgParams sargs{text_array_literal(hs), number_array_literal(counts), number_array_literal(rows),
                   text_array_literal(snaps), number_array_literal(ticks)};
    co_await c.exec(
        "UPDATE shapesync.shape_snapshots s SET chunk_count = u.n, row_count = u.r, snap = u.snap::pg_snapshot, "
        "start_tick = u.t FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::bigint[]) "
        "AS u(handle, n, r, snap, t) WHERE s.handle = u.handle",
        sargs);
    co_await c.exec("COMMIT");
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    co_await c.rollback_if_open();
    std::rethrow_exception(failure);
  }
}

asio::awaitable<void> report_shapes_built(PgConn& c, const std::vector<std::string>& handles,
                                          const std::vector<long long>& rows) {
  if (handles.empty()) co_return;
  PgParams args{text_array_literal(handles), number_array_literal(rows)};
  co_await c.exec(
      "SELECT shapesync.report_shape(u.h, u.r, '0_inf') FROM unnest($1::text[], $2::bigint[]) AS u(h, r)", args);
}

}  // namespace shapesync
