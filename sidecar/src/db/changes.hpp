// Reading the extension's ticks and batches, and tables' catalog information.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "db/pg.hpp"
#include "model/shape_request.hpp"
#include "model/batch.hpp"

namespace shapesync {

// Reads the batches of every tick in (after, upto] in one query, decoded and
// ordered, with transaction positions; ticks without changes have no entry.
// Throws PgError with sqlstate kLogTruncated when the change log no longer
// holds every change of (after, upto] (see shapesync.maintain()).
asio::awaitable<std::vector<Batch>> fetch_batches(PgConn& c, uint64_t after, uint64_t upto);

// Appends one row of shapesync.batches_packed() (the layout of
// extension/batch.c's PackChange) to out: a new Batch for a new tick, a new
// Tx for a new xid (rank counts the batch's transactions, from 0 at a new
// batch). False, and out unchanged, when the row is malformed. A new Tx
// reserves room for tx_size changes (how many its rows hold, when known).
bool append_packed_change(std::string_view row, std::vector<Batch>& out, uint32_t& rank, size_t tx_size = 0);

// SQLSTATE of shapesync.batch() for a tick at or below the change log's horizon.
inline constexpr const char* kLogTruncated = "SS001";
// Raised by the sidecar itself (never by PostgreSQL): a shape's snapshot was
// claimed by a sidecar that stopped before storing it; the shape is retired.
inline constexpr const char* kSnapshotAbandoned = "SS901";  // not a code the extension uses (SS002 is its RLS refusal)

// A table looked up for a shape: its info, or the error message for `table`.
struct TableLookup {
  std::shared_ptr<const TableInfo> table;
  std::string error;   // 400 message when table is null (the same whether it exists or not)
  std::string reason;  // for the log: why
};
// Throws PgError 42501 when the table is tracked but the connection's role may not read it.
asio::awaitable<TableLookup> lookup_table(PgConn& c, const QualifiedName& name);

}  // namespace shapesync
