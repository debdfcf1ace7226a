// Shape snapshots in the database: taking one (after every writer that could
// miss the shape has ended, in a REPEATABLE READ transaction that records its
// pg_snapshot and the last tick), the claim that makes a handle's snapshot
// unique, storing the chunks for every sidecar, loading them, and the
// per-shape build lock.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "db/copy_text.hpp"
#include "db/pg.hpp"
#include "model/batch.hpp"
#include "model/table.hpp"

namespace shapesync {

// A shape's snapshot: where it stands in the change log and its chunks.
struct SnapshotData {
  bool building = false;  // claimed by a builder, not stored yet (nothing else is set)
  PgSnapshot snap;
  std::string snap_text;
  uint64_t start_tick = 0;
  long long rows = 0;
  std::vector<std::shared_ptr<const std::string>> chunks;
};

// Waits until every transaction that could have missed a new shape of the table has ended.
asio::awaitable<void> wait_for_writers(PgConn& c, uint32_t relid);
// Claims the handle's snapshot before anything of it is served (a row without a chunk count).
asio::awaitable<void> claim_snapshot(PgConn& c, const std::string& handle);
// Drops a claim nothing was served from, so the next attempt starts afresh.
asio::awaitable<void> forget_claim(PgConn& c, const std::string& handle);
// Opens the snapshot's REPEATABLE READ READ ONLY transaction (statement_timeout
// `timeout_ms`) and returns its pg_snapshot and the newest tick it sees
// (`snap`, `snap_text`, `start_tick` set). The rest of the transaction runs
// as `role` with `claims` (db/act_as.hpp; nullopt: the sidecar's own rights), so
// the role's row-level security and column grants apply to the rows copied.
// The caller ends it (COMMIT, or rollback_if_open).
asio::awaitable<SnapshotData> begin_snapshot(PgConn& c, int timeout_ms, const std::optional<std::string>& role = {},
                                             const std::string& claims = "{}");
// A snapshot row as COPY gave it, encoded on demand as its Shape protocol
// insert message (straight from the COPY text: no per-field strings).
class SnapshotRow {
 public:
  explicit SnapshotRow(const CopyRowEncoder& e) : e_(e) {}
  // Appends {"key":…,"value":{…},"headers":{"operation":"insert",…}} with the
  // row's version header when copied with versions; PgError when malformed.
  void append_message(std::string& out) const;

 private:
  const CopyRowEncoder& e_;
};
// Streams the shape's rows (`selected` columns of ONLY the table, filtered by
// the canonical WHERE) to `on_row`, with each row's version when
// `versions_at` (extension 0.2.0) holds the snapshot's xmax: the row's xmin,
// widened against it to what shapesync.row_version(xmin) returns.
asio::awaitable<void> copy_snapshot_rows(PgConn& c, const TableInfo& t, const std::vector<size_t>& selected,
                                         const std::string& where, std::optional<uint64_t> versions_at,
                                         const std::function<void(const SnapshotRow&)>& on_row);
// True when `role` (nullopt: the current user) may read the table's row
// versions: SELECT on its xmin system column, which a table-level SELECT
// grant gives and column grants give only when they name xmin.
asio::awaitable<bool> can_read_versions(PgConn& c, uint32_t relid, const std::optional<std::string>& role);
// Stores a taken snapshot's chunks; the claim becomes the stored snapshot in the same transaction.
asio::awaitable<void> store_snapshot(PgConn& c, const std::string& handle, const SnapshotData& d);
// The stored snapshot of a handle (building = claimed, not stored yet), or nullopt.
asio::awaitable<std::optional<SnapshotData>> load_snapshot(PgConn& c, const std::string& handle);
// The shape's build lock (session advisory lock): the first sidecar to hold it takes the snapshot.
asio::awaitable<bool> try_build_lock(PgConn& c, int32_t shape_id);
asio::awaitable<void> build_unlock(PgConn& c, int32_t shape_id);
// Records a built shape's snapshot rows for the monitoring views.
asio::awaitable<void> report_shape_built(PgConn& c, const std::string& handle, long long rows);

// --- The same for a group of shapes, one round trip each (shapes/service.cpp
// builds the new shapes of one table, role and column list together) ---

// The stored snapshots of `handles`, in their order (nullopt: none; building:
// claimed, not stored yet): two statements whatever the number of handles.
asio::awaitable<std::vector<std::optional<SnapshotData>>> load_snapshots(PgConn& c,
                                                                         const std::vector<std::string>& handles);
// Tries the build lock of each shape; which ones this session now holds, in order.
asio::awaitable<std::vector<bool>> try_build_locks(PgConn& c, const std::vector<int32_t>& shape_ids);
asio::awaitable<void> build_unlock_all(PgConn& c, const std::vector<int32_t>& shape_ids);
asio::awaitable<void> claim_snapshots(PgConn& c, const std::vector<std::string>& handles);
asio::awaitable<void> forget_claims(PgConn& c, const std::vector<std::string>& handles);
// One COPY for several shapes of one table and one column list, inside the
// snapshot transaction: a UNION ALL of one SELECT per shape, each with its own
// canonical WHERE (PostgreSQL evaluates every filter exactly as for a single
// shape), its rows tagged with the shape's index in `wheres`.
asio::awaitable<void> copy_snapshot_rows_many(
    PgConn& c, const TableInfo& t, const std::vector<size_t>& selected, const std::vector<std::string>& wheres,
    std::optional<uint64_t> versions_at,
    const std::function<void(size_t shape, const SnapshotRow&)>& on_row);
// Stores the snapshots of several claimed handles in one transaction.
asio::awaitable<void> store_snapshots(PgConn& c, const std::vector<std::string>& handles,
                                      const std::vector<const SnapshotData*>& data);
asio::awaitable<void> report_shapes_built(PgConn& c, const std::vector<std::string>& handles,
                                          const std::vector<long long>& rows);

}  // namespace shapesync
