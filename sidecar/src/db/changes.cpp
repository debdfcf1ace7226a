// Batches and catalog look-ups.
#include "db/changes.hpp"

#include <atomic>
#include <chrono>
#include <optional>

#include "util/log.hpp"
#include "util/log_limit.hpp"
#include "db/text_array.hpp"

namespace shapesync {

namespace {
Tx& tx_of(std::vector<Batch>& out, uint64_t tick, std::optional<int64_t> time_us, uint64_t xid, uint32_t& rank);

// The layout is the extension's (extension/batch.c, PackChange).
enum : uint64_t { kTime = 0x01, kNew = 0x02, kOld = 0x04, kOps = 0x08, kError = 0x10, kVersion = 0x20 };

// The fixed part of a packed change, up to its counted fields (which start at `end`).
struct PackedHead {
  uint64_t flags = 0, tick = 0, time_us = 0, xid = 0, relid = 0, op = 0, version = 0;
  size_t end = 0;
};

bool parse_packed_head(std::string_view row, PackedHead& h) {
  size_t pos = 0;
  if (!read_be(row, pos, 2, h.flags) || h.flags > 0x3f || !read_be(row, pos, 8, h.tick) ||
      ((h.flags & kTime) && !read_be(row, pos, 8, h.time_us)) || !read_be(row, pos, 8, h.xid) ||
      !read_be(row, pos, 4, h.relid) || !read_be(row, pos, 1, h.op) ||
      ((h.flags & kVersion) && !read_be(row, pos, 8, h.version)))
    return false;
  h.end = pos;
  return true;
}
}  // namespace

bool append_packed_change(std::string_view row, std::vector<Batch>& out, uint32_t& rank, size_t tx_size) {
  PackedHead h;
  if (!parse_packed_head(row, h)) return false;
  size_t pos = h.end;
  auto counted = [&](std::string_view& part) {
    uint64_t len;
    if (!read_be(row, pos, 4, len) || len > row.size() - pos) return false;
    part = row.substr(pos, static_cast<size_t>(len));
    pos += static_cast<size_t>(len);
    return true;
  };
  Change ch;
  ch.relid = static_cast<uint32_t>(h.relid);
  ch.op = static_cast<char>(h.op);
  ch.version = h.version;
  std::string_view part;
  if (h.flags & kNew) {
    if (!counted(part)) return false;
    ch.new_values = parse_binary_text_array(part);
    if (!ch.new_values) return false;
  }
  if (h.flags & kOld) {
    if (!counted(part)) return false;
    ch.old_values = parse_binary_text_array(part);
    if (!ch.old_values) return false;
  }
  // an image the database could not decode (its table gone or altered) is left out
  if ((ch.op == 'I' || ch.op == 'U') && !ch.new_values) ch.undecodable = true;
  if ((ch.op == 'U' || ch.op == 'D') && !ch.old_values) ch.undecodable = true;
  if (h.flags & kOps) {
    if (!counted(part)) return false;
    auto ops = parse_binary_int4_array(part);
    if (!ops) return false;
    ch.shape_ops = std::move(*ops);
  }
  if (h.flags & kError) {
    if (!counted(part)) return false;
    ch.error = std::string(part);
  }
  if (pos != row.size()) return false;
  std::optional<int64_t> time;
  if (h.flags & kTime) time = static_cast<int64_t>(h.time_us);
  Tx& tx = tx_of(out, h.tick, time, h.xid, rank);
  if (tx.changes.empty() && tx.changes.capacity() < tx_size) tx.changes.reserve(tx_size);
  tx.changes.push_back(std::move(ch));
  return true;
}

namespace {

// The transaction a change of (tick, xid) goes into: the last one of out
// when it is that tick's and that xid's, else a new one (and a new batch
// for a new tick, with the tick's time); rank counts a batch's transactions.
Tx& tx_of(std::vector<Batch>& out, uint64_t tick, std::optional<int64_t> time_us, uint64_t xid, uint32_t& rank) {
  if (out.empty() || out.back().tick_id != tick) {
    out.push_back(Batch{tick, {}});
    if (time_us) out.back().tick_time_us = *time_us;
    rank = 0;
  }
  Batch& b = out.back();
  if (b.txs.empty() || b.txs.back().xid != xid) {
    Tx tx;
    tx.xid = xid;
    tx.position = make_position(tick, ++rank);
    b.txs.push_back(std::move(tx));
  }
  return b.txs.back();
}

// Batches stay in the window: no spare capacity from growing by doubling.
void shrink(std::vector<Batch>& out) {
  for (Batch& b : out)
    for (Tx& tx : b.txs)
      if (tx.changes.capacity() > tx.changes.size() + tx.changes.size() / 8) tx.changes.shrink_to_fit();
}

// Appends the rows of `r` (tick_id, then the columns of shapesync.batch()) to
// batches, one Batch per tick. Columns come in binary format (what
// fetch_batches asks for: no array_out/int8out in the server, no text
// parsing here) or in text format; each is read in the format it has.
void decode_batches(const PgResult& r, std::vector<Batch>& out) {
  auto col = [&](const char* name) { return PQfnumber(r.raw(), name); };
  int c_tick = col("tick_id"), c_time = col("tick_time_us"), c_xid = col("xid"), c_relid = col("relid"), c_op = col("op"), c_new = col("new_values"),
      c_old = col("old_values"), c_ops = col("shape_ops"), c_err = col("error"), c_ver = col("version");
  if (r.rows() == 0) return;
  if (c_tick < 0 || c_xid < 0 || c_relid < 0 || c_op < 0 || c_new < 0 || c_old < 0)
    throw PgError("shapesync.batch() lacks expected columns: extension version mismatch", "", false);
  auto binary = [&](int c) { return c >= 0 && PQfformat(r.raw(), c) == 1; };
  auto malformed = [](const char* what) {
    return PgError(std::string("shapesync.batch() returned a malformed ") + what + " (binary format)", "", false);
  };
  // an integer column (int8, xid8, oid) in either format
  auto number = [&](int i, int c, const char* what) -> uint64_t {
    if (binary(c)) {
      auto v = binary_uint(r.get(i, c));
      if (!v) throw malformed(what);
      return *v;
    }
    return std::stoull(std::string(r.get(i, c)));
  };
  auto values = [&](int i, int c) {
    return binary(c) ? parse_binary_text_array(r.get(i, c)) : parse_text_array(r.get(i, c));
  };
  uint32_t rank = 0;
  for (int i = 0; i < r.rows(); ++i) {
    uint64_t tick = number(i, c_tick, "tick_id");
    std::optional<int64_t> time_us;
    if (c_time >= 0 && !r.is_null(i, c_time)) time_us = static_cast<int64_t>(number(i, c_time, "tick_time_us"));
    Tx& tx = tx_of(out, tick, time_us, number(i, c_xid, "xid"), rank);
    Change ch;
    ch.relid = static_cast<uint32_t>(number(i, c_relid, "relid"));
    ch.op = r.get(i, c_op).empty() ? '?' : r.get(i, c_op)[0];
    if (!r.is_null(i, c_new)) {
      ch.new_values = values(i, c_new);
      if (!ch.new_values) ch.undecodable = true;
    }
    if (!r.is_null(i, c_old)) {
      ch.old_values = values(i, c_old);
      if (!ch.old_values) ch.undecodable = true;
    }
    if ((ch.op == 'I' || ch.op == 'U') && !ch.new_values) ch.undecodable = true;
    if ((ch.op == 'U' || ch.op == 'D') && !ch.old_values) ch.undecodable = true;
    if (c_ops >= 0 && !r.is_null(i, c_ops)) {
      if (binary(c_ops)) {
        auto ops = parse_binary_int4_array(r.get(i, c_ops));
        if (!ops) throw malformed("shape_ops");
        ch.shape_ops = std::move(*ops);
      } else if (auto ops = parse_text_array(r.get(i, c_ops))) {
        for (auto& o : *ops)
          if (o) ch.shape_ops.push_back(static_cast<int32_t>(std::stol(*o)));
      }
    }
    if (c_err >= 0 && !r.is_null(i, c_err)) ch.error = std::string(r.get(i, c_err));
    if (c_ver >= 0 && !r.is_null(i, c_ver)) ch.version = number(i, c_ver, "version");
    tx.changes.push_back(std::move(ch));
  }
  shrink(out);
}

// Rows of shapesync.batches_packed(), one bytea each (append_packed_change).
void decode_packed_batches(const PgResult& r, std::vector<Batch>& out) {
  if (r.rows() == 0) return;
  if (r.cols() != 1 || PQfformat(r.raw(), 0) != 1)
    throw PgError("shapesync.batches_packed() returned an unexpected result: extension version mismatch", "", false);
  // How many changes each row's transaction holds (a transaction's changes
  // are consecutive rows), so that its vector is sized once: no moves as it
  // grows, nothing to shrink before the window keeps it. A row whose head
  // does not parse is counted alone; append_packed_change rejects it.
  std::vector<uint32_t> tx_size(static_cast<size_t>(r.rows()), 1);
  for (int i = 0; i < r.rows();) {
    int j = i + 1;
    PackedHead first, next;
    if (parse_packed_head(r.get(i, 0), first))
      while (j < r.rows() && parse_packed_head(r.get(j, 0), next) && next.tick == first.tick && next.xid == first.xid)
        ++j;
    for (int k = i; k < j; ++k) tx_size[static_cast<size_t>(k)] = static_cast<uint32_t>(j - i);
    i = j;
  }
  uint32_t rank = 0;
  for (int i = 0; i < r.rows(); ++i)
    if (!append_packed_change(r.get(i, 0), out, rank, tx_size[static_cast<size_t>(i)]))
      throw PgError("shapesync.batches_packed() returned a malformed change (row " + std::to_string(i + 1) + ")", "",
                    false);
  shrink(out);
}

// What the database's batch reader offers: 3, shapesync.batches_packed();
// 2, shapesync.batches() and shapesync.text_array_send(); 1, batches() only
// (2 and 1: a development 0.2.0); 0, neither (0.1.0). Known for good at 3
// (an extension is not downgraded under a running sidecar), asked again a
// minute after a lower answer (ALTER EXTENSION UPDATE may add them meanwhile). The answer is read without a
// coroutine (every live tick reads it); only asking is one.
std::atomic<int> known_level{-1};  // -1: never asked
std::atomic<int64_t> known_at_ms{0};

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::optional<int> known_reader_level() {
  int level = known_level.load();
  if (level == 3 || (level >= 0 && steady_ms() - known_at_ms.load() < 60000)) return level;
  return std::nullopt;
}

asio::awaitable<int> ask_reader_level(PgConn& c) {
  PgResult r = co_await c.exec(
      "SELECT to_regprocedure('shapesync.batches(bigint,bigint)') IS NOT NULL, "
      "to_regprocedure('shapesync.text_array_send(text[])') IS NOT NULL, "
      "to_regprocedure('shapesync.batches_packed(bigint,bigint)') IS NOT NULL");
  bool batches = r.rows() == 1 && r.get(0, 0) == "t";
  int level = !batches ? 0 : r.get(0, 2) == "t" ? 3 : r.get(0, 1) == "t" ? 2 : 1;
  known_at_ms.store(steady_ms());
  known_level.store(level);
  co_return level;
}

// The statements, by reader level (built once): the row images through
// text_array_send() when the database has it (bytea holding array_send's
// bytes, which decode_batches parses as it parses a text[]).
constexpr const char* kPackedColumns =
    "b.xid, b.seq, b.tx_max_seq, b.relid, b.op, shapesync.text_array_send(b.new_values) AS new_values, "
    "shapesync.text_array_send(b.old_values) AS old_values, b.shape_ops, b.error, b.version";

std::string one_tick_sql(bool packed) {
  return std::string("SELECT $1::bigint AS tick_id, ") + (packed ? kPackedColumns : "b.*") +
         ", (SELECT (extract(epoch FROM k.tick_time) * 1000000)::bigint FROM shapesync.ticks k "
         " WHERE k.tick_id = $1::bigint) AS tick_time_us "
         "FROM shapesync.batch($1::bigint) WITH ORDINALITY AS b ORDER BY b.ordinality";
}

// batch(t) of every tick id in the range, with the tick's time (for the
// commit-to-send latency, docs/monitoring.md), already in order: no sort of
// the whole range. Every tick id is read, not just the rows of
// shapesync.ticks: ticks before the change log's horizon are deleted, and one
// of them raises SS001 where a join would skip it without a word.
std::string range_sql(bool packed) {
  return std::string("SELECT ") + (packed ? std::string("b.tick_id, b.tick_time_us, ") + kPackedColumns : "b.*") +
         " FROM shapesync.batches($1::bigint, $2::bigint) WITH ORDINALITY AS b ORDER BY b.ordinality";
}

}  // namespace

asio::awaitable<std::vector<Batch>> fetch_batches(PgConn& c, uint64_t after, uint64_t upto) {
  std::vector<Batch> out;
  int level;
  if (auto k = known_reader_level()) level = *k;
  else level = co_await ask_reader_level(c);
  if (level >= 3) {
    // one bytea per change, for one tick as for a range (a C function: no plan to speak of)
    PgParams args{std::to_string(after), std::to_string(upto)};
    PgResult r = co_await c.exec_prepared("shapesync_batches_packed",
                                          "SELECT p FROM shapesync.batches_packed($1::bigint, $2::bigint) AS p", args,
                                          true);
    decode_packed_batches(r, out);
    co_return out;
  }
  if (upto == after + 1) {
    // One tick, what a live follower reads after each notification: a
    // statement prepared once per session and half the work of the range
    // query below (no generate_series, no joins to plan).
    PgParams one{std::to_string(upto)};
    // (Names and texts are named constants: GCC 12 mishandles a conditional's
    // temporaries in a co_await's arguments; the sidecar died on it.)
    static const std::string kName[2] = {"shapesync_batch_1", "shapesync_batch_1p"};
    static const std::string kSql[2] = {one_tick_sql(false), one_tick_sql(true)};
    const int packed = level >= 2 ? 1 : 0;
    PgResult r = co_await c.exec_prepared(kName[packed], kSql[packed], one, true);
    decode_batches(r, out);
    co_return out;
  }
  PgParams args{std::to_string(after), std::to_string(upto)};
  if (level == 0) {
    // An extension from before shapesync.batches() (0.1.0, or a development
    // 0.2.0 being upgraded in place): batch() per tick id, sorted here.
    PgResult r = co_await c.exec_prepared(
        "shapesync_batches_v0",
        "SELECT t.tick_id, b.*, k.tick_time_us "
        "FROM generate_series($1::bigint + 1, $2::bigint) AS t(tick_id) "
        "LEFT JOIN LATERAL (SELECT (extract(epoch FROM k.tick_time) * 1000000)::bigint AS tick_time_us "
        "                   FROM shapesync.ticks k WHERE k.tick_id = t.tick_id) k ON true "
        "CROSS JOIN LATERAL shapesync.batch(t.tick_id) WITH ORDINALITY AS b "
        "ORDER BY t.tick_id, b.ordinality",
        args, true);
    decode_batches(r, out);
    co_return out;
  }
  static const std::string kName[2] = {"shapesync_batches", "shapesync_batches_p"};
  static const std::string kSql[2] = {range_sql(false), range_sql(true)};
  const int packed = level >= 2 ? 1 : 0;
  PgResult r = co_await c.exec_prepared(kName[packed], kSql[packed], args, true);
  decode_batches(r, out);
  co_return out;
}

asio::awaitable<TableLookup> lookup_table(PgConn& c, const QualifiedName& name) {
  TableLookup out;
  PgParams args3{name.schema, name.name};
  PgResult r = co_await c.exec(
      "SELECT c.oid, n.nspname, c.relname, c.relnatts, "
      "EXISTS (SELECT 1 FROM shapesync.tracked t WHERE t.relid = c.oid), "
      "has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT') "
      "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')", args3);
  // A client learns nothing about tables that are not served: one message
  // for "no such table" and "not tracked" (the log says which).
  if (r.rows() == 0 || r.get(0, 4) != "t") {
    out.error = "Table " + quote_ident(name.schema) + "." + quote_ident(name.name) +
                " does not exist. If the table name contains capitals or special characters you must quote it.";
    out.reason = r.rows() == 0 ? "does not exist" : "exists but is not tracked (SELECT shapesync.track(...))";
    static LogLimit limit;  // the client is told less than the operator
    if (size_t more = 0; limit.allow(more))
      log_info("shape request for table ", quote_ident(name.schema), ".", quote_ident(name.name), ": ", out.reason,
               more ? " (" + std::to_string(more) + " more unknown-table requests not logged)" : std::string());
    co_return out;
  }
  if (r.get(0, 5) != "t") {
    // Tracked, so meant to be served: the sidecar's role lacks a grant.
    throw PgError("permission denied for table " + quote_ident(name.schema) + "." + quote_ident(name.name) +
                      " (the sidecar's role needs USAGE on its schema and SELECT on it)",
                  "42501", false);
  }
  auto t = std::make_shared<TableInfo>();
  t->relid = static_cast<uint32_t>(std::stoul(std::string(r.get(0, 0))));
  t->schema = std::string(r.get(0, 1));
  t->name = std::string(r.get(0, 2));
  t->natts = static_cast<int>(r.get_int(0, 3));
  PgParams args4{std::to_string(t->relid)};
  PgResult cols = co_await c.exec(
      "SELECT a.attnum, a.attname, a.attnotnull, a.atttypmod, a.attndims, t.typname, et.typname, "
      "coalesce((SELECT k.n FROM unnest(i.indkey) WITH ORDINALITY AS k(att, n) WHERE k.att = a.attnum), 0) "
      "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
      "LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A' AND t.typlen = -1 "
      "LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary "
      "WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", args4);
  std::vector<std::pair<int, size_t>> pk;
  for (int i = 0; i < cols.rows(); ++i) {
    ColumnInfo ci;
    ci.attnum = static_cast<int>(cols.get_int(i, 0));
    ci.name = std::string(cols.get(i, 1));
    ci.not_null = cols.get(i, 2) == "t";
    ci.typmod = static_cast<int>(cols.get_int(i, 3));
    ci.base_type = std::string(cols.get(i, 5));
    if (!cols.is_null(i, 6)) {
      ci.type = std::string(cols.get(i, 6));
      ci.dims = std::max<int>(1, static_cast<int>(cols.get_int(i, 4)));
    } else {
      ci.type = ci.base_type;
    }
    int pkpos = static_cast<int>(cols.get_int(i, 7));
    if (pkpos > 0) {
      ci.pk_index = pkpos - 1;
      pk.emplace_back(pkpos, t->columns.size());
    }
    t->columns.push_back(std::move(ci));
  }
  if (t->columns.empty() || pk.empty()) {
    // dropped (or its key removed) between the two statements
    out.error = "Table " + quote_ident(name.schema) + "." + quote_ident(name.name) +
                " does not exist. If the table name contains capitals or special characters you must quote it.";
    co_return out;
  }
  std::sort(pk.begin(), pk.end());
  for (auto& [pos, idx] : pk) t->pk.push_back(idx);
  out.table = std::move(t);
  co_return out;
}

}  // namespace shapesync
