// The shapes this sidecar serves, kept in step with the database (see service.hpp).
#include "shapes/service.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>

#include <sys/mman.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "db/changes.hpp"
#include "db/follow.hpp"
#include "db/registry.hpp"
#include "db/snapshots.hpp"
#include "protocol/encode.hpp"
#include "util/log.hpp"
#include "util/log_limit.hpp"

namespace shapesync {

ShapeService::ShapeService(asio::io_context& io, const Config& cfg)
    : io_(io),
      cfg_(cfg),
      store_(cfg_.chunk_bytes_threshold),
      pool_(io.get_executor(), cfg_.database_url, static_cast<size_t>(cfg_.snapshot_pool_size)),
      build_queue_(static_cast<size_t>(cfg_.snapshot_batch)),
      // one registration statement per group at a time: the group's next ones gather behind it
      registrar_(io, static_cast<size_t>(cfg_.registration_batch), cfg_.registration_pool_size,
                 [this](const std::vector<const RegRequest*>& r, std::vector<RegOutcome>& o) {
                   return register_batch(r, o);
                 }),
      lookups_(io, static_cast<size_t>(cfg_.registration_batch), cfg_.snapshot_pool_size,
               [this](const std::vector<const QualifiedName*>& n, std::vector<LookupOutcome>& o) {
                 return lookup_batch(n, o);
               }),
      reg_pool_(io.get_executor(), cfg_.database_url, static_cast<size_t>(cfg_.registration_pool_size),
                "SET statement_timeout = " + std::to_string(cfg_.registration_timeout_ms)) {}

void ShapeService::stop() {
  stopping_ = true;
  store_.wake_all();
}

void ShapeService::log_configuration_error(const PgError& e, std::string_view doing, std::string_view privilege) const {
  static LogLimit limit;
  size_t suppressed = 0;
  if (!limit.allow(suppressed)) return;
  std::string role = conninfo_user(cfg_.database_url);
  std::string hint = grant_hint(e, privilege, role);
  std::string all = "SELECT shapesync.grant_sidecar('" + (role.empty() ? std::string("<the sidecar's role>") : role) +
                    "') grants everything shapesyncd needs";
  log_error("configuration: the sidecar's database role cannot go on ", doing, ": ", e.sqlstate, " ", e.what(),
            hint.empty() ? "; as an owner: " + all : "; run as an owner: " + hint + " (or " + all + ")",
            suppressed ? " (" + std::to_string(suppressed) + " more like it not logged)" : std::string(),
            ". Shared state (shapes other sidecars serve) is left alone.");
}

namespace {

// A snapshot chunk's buffer. Once a chunk outgrows 64 KiB (a quarter of the
// threshold when that is less: tiny --chunk-bytes settings in the tests
// cross this path too) it is reserved whole, the threshold and as much again
// for the row that crosses it: a large snapshot's chunks are then written
// once into pages touched once, instead of doubling (each step a copy into
// fresh pages) and a shrink (another copy) at the end. Small shapes never
// reserve more than they use. Only a shape built alone does this (a lone new
// shape, the large cold sync): a group's shapes build side by side.
constexpr size_t kChunkReserveFrom = 64 << 10;
constexpr size_t kChunkReserveMax = 256 << 20;

void grow_chunk(std::string& cur, size_t threshold) {
  size_t from = std::min(kChunkReserveFrom, std::max<size_t>(threshold / 4, 1));
  if (cur.size() < from) return;
  size_t want = std::min(threshold, kChunkReserveMax) + from;
  if (cur.capacity() < want && cur.size() < want) {
    cur.reserve(want);
    // the rest of the chunk's pages as huge pages where the kernel allows (THP "madvise")
    uintptr_t lo = (reinterpret_cast<uintptr_t>(cur.data()) + cur.size() + (2u << 20) - 1) & ~uintptr_t((2u << 20) - 1);
    uintptr_t hi = (reinterpret_cast<uintptr_t>(cur.data()) + cur.capacity()) & ~uintptr_t((2u << 20) - 1);
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
  }
}

// A sealed chunk is held for the shape's life: its spare capacity is given
// back when it is worth a copy (more than an eighth of the chunk).
void seal_chunk(std::string& body) {
  if (body.capacity() - body.size() > body.size() / 8) body.shrink_to_fit();
}

// A refusal of the extension's role-aware checks (docs/auth.md): the caller's
// role may not have this shape (403), as opposed to a malformed request (400).
bool forbidden_code(const std::string& sqlstate) {
  return sqlstate == "SS002" || sqlstate == "SS011" || sqlstate == "SS012" || sqlstate == "SS013";
}

}  // namespace

asio::awaitable<SubsetCheck> ShapeService::check_subset(const QualifiedName& table, const SubsetParams& sp,
                                                        const Caller& who) {
  SubsetCheck out;
  try {
    auto lease = co_await pool_.acquire();
    TableLookup lookup = co_await lookup_table(*lease, table);
    if (!lookup.table) {
      out.errors.emplace_back("table", lookup.error);
      co_return out;
    }
    std::string unknown;
    for (auto& o : sp.order_by) {
      bool found = std::any_of(lookup.table->columns.begin(), lookup.table->columns.end(),
                               [&](const ColumnInfo& c) { return c.name == o.column; });
      if (!found) unknown += (unknown.empty() ? "" : ", ") + o.column;
    }
    if (!unknown.empty()) out.errors.emplace_back("order_by", "Unknown column in ORDER BY: " + unknown);
    if (sp.where) {
      // check_shape() returns a rejected filter as data: nothing in the server log.
      // For a role, the canonical WHERE is the effective one (the role's
      // policies folded in) and its columns must be ones the role may read.
      // (no co_await inside ?: — GCC 12 mis-handles temporaries there)
      ShapeCheck chk;
      std::optional<std::vector<std::string>> all_permitted;
      if (who.role)
        chk = co_await check_shape_as(*lease, lookup.table->relid, sp.where, sp.params, *who.role, who.claims,
                                      all_permitted);
      else
        chk = co_await check_shape(*lease, lookup.table->relid, sp.where, sp.params);
      if (chk.rejection) {
        bool forbidden = forbidden_code(chk.rejection->code) || chk.rejection->field == "policy";
        (forbidden ? out.forbidden : out.errors).emplace_back("where", chk.rejection->message);
      }
      out.canonical_where = chk.canonical_where;
    }
    if (row_versions_.load()) out.versions = co_await can_read_versions(*lease, lookup.table->relid, who.role);
  } catch (const PgError& e) {
    out.failure = e;
  }
  co_return out;
}

asio::awaitable<std::optional<PgError>> ShapeService::run_subset(const std::string& sql, SubsetRows& out,
                                                                 const Caller& who) {
  std::optional<PgError> failed;
  try {
    auto lease = co_await pool_.acquire();
    out = co_await shapesync::run_subset(*lease, sql, who.role, who.claims);
  } catch (const PgError& e) {
    failed = e;
  }
  co_return failed;
}

asio::awaitable<bool> ShapeService::delete_shape(const std::optional<std::string>& handle,
                                                 const std::optional<std::string>& def_key) {
  std::shared_ptr<Shape> s;
  if (handle) s = store_.by_handle(*handle);
  if (!s && def_key) s = store_.resolve(*def_key);
  if (!s) co_return false;
  store_.invalidate(s, "deleted");
  auto lease = co_await pool_.acquire();
  co_await invalidate_shape(*lease, s->handle, "deleted through DELETE /v1/shape");
  co_return true;
}

asio::awaitable<std::optional<std::string>> ShapeService::missing_table(const QualifiedName& name) {
  std::optional<std::string> gone;
  try {
    auto lease = co_await pool_.acquire();
    TableLookup lookup = co_await lookup_table(*lease, name);
    if (!lookup.table) gone = lookup.error;
  } catch (const PgError& e) {
    log_warn("cannot verify table: ", e.what());
  }
  co_return gone;
}

asio::awaitable<bool> ShapeService::wait_servable(const std::shared_ptr<Shape>& s, const ShapeParams& p) {
  // SSE serves the log: it waits for the shape to be ready
  auto servable = [&](const Shape& sh) {
    return sh.ready || sh.invalid || (!p.live_sse && ShapeStore::can_read(sh, p.offset));
  };
  if (store_.holds(*s, servable)) co_return true;  // the usual case: no waiter, no timer
  auto ex = co_await asio::this_coro::executor;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  auto done = [&](const Shape& sh) {
    return servable(sh) || sh.failed || stopping_ || std::chrono::steady_clock::now() >= deadline;
  };
  for (;;) {
    auto w = std::make_shared<TimerWaiter>(ex);
    w->timer.expires_at(deadline);
    if (!store_.wait_unless(*s, *w, done)) co_return store_.holds(*s, servable);
    co_await w->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    store_.remove_waiter(*w);
  }
}

asio::awaitable<ShapeOutcome> ShapeService::get_shape(const ShapeParams& p, const std::string& def_key,
                                                      const Caller& who) {
  auto ex = co_await asio::this_coro::executor;
  std::string where_error;
  auto fail = [](ShapeError e) { return ShapeOutcome{nullptr, std::move(e)}; };
  for (int attempt = 0; attempt < 5; ++attempt) {
    std::shared_ptr<Shape> s = store_.resolve(def_key);
    if (!s) {
      LookupOutcome looked = co_await look_up(p.table);
      TableLookup lookup = std::move(looked.lookup);
      std::optional<PgError> failed = std::move(looked.failed);
      if (failed) {
        if (classify_pg_error(*failed) == PgFailure::kUnreachable) {
          log_warn("cannot verify shape: ", failed->what());
          co_return fail(ShapeError::unavailable(
              R"({"message":"Cannot connect to the database to verify the shape. Please try again later."})", 1));
        }
        co_return fail(ShapeError::database(*failed, "looking up the shape's table", "SELECT"));
      }
      if (!lookup.table) co_return fail(ShapeError::invalid("table", lookup.error));
      ShapeDef def;
      def.table = lookup.table;
      def.replica = p.replica;
      def.log_mode = p.log;
      def.key = def_key;
      def.role = who.role;
      def.claims = who.claims;
      const TableInfo& t = *lookup.table;
      if (p.columns) {
        std::vector<std::string> missing_cols;
        for (auto& name : *p.columns) {
          bool found = false;
          for (size_t i = 0; i < t.columns.size(); ++i)
            if (t.columns[i].name == name) {
              found = true;
              if (std::find(def.selected.begin(), def.selected.end(), i) == def.selected.end())
                def.selected.push_back(i);
            }
          if (!found) missing_cols.push_back(name);
        }
        ShapeError e;
        if (!missing_cols.empty()) {
          std::string m = "The following columns are not found on the table: ";
          for (size_t i = 0; i < missing_cols.size(); ++i) m += (i ? ", " : "") + missing_cols[i];
          e.fields.emplace_back("columns", m);
        }
        std::string missing_pk;
        for (size_t pk : t.pk)
          if (std::find(def.selected.begin(), def.selected.end(), pk) == def.selected.end())
            missing_pk += (missing_pk.empty() ? "" : ", ") + t.columns[pk].name;
        if (!missing_pk.empty())
          e.fields.emplace_back("columns", "The list of columns must include all primary key columns, missing: " +
                                               missing_pk);
        if (!e.fields.empty()) co_return fail(std::move(e));
        std::sort(def.selected.begin(), def.selected.end());
      } else {
        // for a role: replaced by the columns it may read, after registration
        for (size_t i = 0; i < t.columns.size(); ++i) def.selected.push_back(i);
      }
      ShapeOutcome reg = co_await register_shape(p, std::move(def), def_key);
      if (!reg.shape) co_return reg;
      s = std::move(reg.shape);
    }
    // Wait for a shape being created (by this or another request): ready, or
    // streaming its snapshot (served chunk by chunk while it is taken).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    auto settled = [this](const Shape& sh) {
      return sh.ready || sh.failed || sh.invalid || stopping_ || !sh.snapshot_chunks.empty();
    };
    for (;;) {
      auto w = std::make_shared<TimerWaiter>(ex);
      w->timer.expires_at(deadline);
      if (!store_.wait_unless(*s, *w, settled)) break;
      co_await w->timer.async_wait(asio::as_tuple(asio::use_awaitable));
      store_.remove_waiter(*w);
      if (std::chrono::steady_clock::now() >= deadline) break;
    }
    ShapeStatus st = store_.status(*s);
    if (!st.invalid && !st.failed && (st.ready || st.streaming)) co_return ShapeOutcome{s, {}};
    if (!st.build_error.empty()) where_error = st.build_error;
    if (st.config_failure)  // this sidecar cannot build it: say why
      co_return fail(ShapeError::database(*st.config_failure, "taking the shape's snapshot", "SELECT"));
    // Failed or rotated while being created: a table dropped meanwhile is
    // answered like any missing table (its DDL also rotated the shape).
    if (auto gone = co_await missing_table(p.table)) co_return fail(ShapeError::invalid("table", *gone));
    if (!where_error.empty()) co_return fail(ShapeError::invalid("where", where_error));
    // Rotated while it was being created (its catch-up met a TRUNCATE, DDL or
    // a filter error): the invalidation is on its way to the registry, which
    // would otherwise hand out the same handle again. Give it a moment.
    asio::steady_timer pause(ex, std::chrono::milliseconds(50 * (attempt + 1)));
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  co_return fail(co_await not_servable(p));
}

asio::awaitable<ShapeError> ShapeService::not_servable(const ShapeParams& p) {
  if (auto gone = co_await missing_table(p.table)) co_return ShapeError::invalid("table", *gone);
  co_return ShapeError::unavailable(R"({"message":"Failed to create shape, please retry"})", 1);
}

asio::awaitable<ShapeOutcome> ShapeService::register_shape(const ShapeParams& p, ShapeDef def,
                                                           const std::string& raw_key) {
  const TableInfo& t = *def.table;
  std::vector<std::string> names;
  for (size_t idx : def.selected) names.push_back(t.columns[idx].name);
  std::string options = std::string(def.replica == Replica::kFull ? "replica=full" : "replica=default") +
                        (def.log_mode == LogMode::kChangesOnly ? " log=changes_only" : " log=full");
  std::vector<std::string> param_values;
  for (auto& [n, v] : p.params) param_values.push_back(v);
  auto fail = [](ShapeError e) { return ShapeOutcome{nullptr, std::move(e)}; };
  RegRequest req;
  req.relid = t.relid;
  req.where = p.where;
  req.params = param_values;
  req.options = options;
  req.role = def.role;
  req.claims = def.claims;
  // on the caller's behalf: the effective filter and the columns the role
  // may read (columns omitted: the permitted ones)
  if (!def.role || p.columns) req.columns = names;
  RegOutcome got = co_await register_in_db(std::move(req));
  std::optional<RegisteredShape> reg = std::move(got.reg);
  std::optional<ShapeRejection> rejected = std::move(got.rejected);
  std::optional<PgError> failed = std::move(got.failed);
  if (rejected && def.role && (forbidden_code(rejected->code) || rejected->field == "policy")) {
    // the caller's role may not have this shape: say what (the role, a column, a policy)
    ShapeError e = ShapeError::invalid(rejected->field, rejected->message);
    e.kind = ShapeError::Kind::kForbidden;
    co_return fail(std::move(e));
  }
  if (failed && def.role && forbidden_code(failed->sqlstate)) {  // refused between the check and the registration
    ShapeError e = ShapeError::invalid(failed->sqlstate == "SS012" ? "role" : "table", failed->what());
    e.kind = ShapeError::Kind::kForbidden;
    co_return fail(std::move(e));
  }
  if (rejected) {
    if (rejected->code == "SS002") {
      // row-level security applies to this sidecar's role: the snapshot would
      // be filtered and the live changes not
      log_warn("shape refused: ", rejected->message);
      ShapeError e = ShapeError::invalid("table", rejected->message + (rejected->hint.empty() ? "" : " " + rejected->hint));
      e.kind = ShapeError::Kind::kForbidden;
      co_return fail(std::move(e));
    }
    co_return fail(ShapeError::invalid(rejected->field, rejected->message));
  }
  if (failed) {
    const PgError& e = *failed;
    if (e.sqlstate == "57014" && p.where)  // statement_timeout: the WHERE is what takes long, a retry would too
      co_return fail(ShapeError::invalid("where", "The WHERE clause took longer than the registration timeout (" +
                                                      std::to_string(cfg_.registration_timeout_ms) +
                                                      " ms) to validate"));
    PgFailure kind = classify_pg_error(e);
    // Dropped (or untracked) since it was looked up: say so, as for any
    // missing table, not as a WHERE error or a retryable 503.
    if (kind != PgFailure::kUnreachable)
      if (auto gone = co_await missing_table(p.table)) co_return fail(ShapeError::invalid("table", *gone));
    if (kind == PgFailure::kRequest) co_return fail(ShapeError::invalid(p.where ? "where" : "table", request_error_message(e)));
    co_return fail(ShapeError::database(e, "registering the shape", "EXECUTE"));
  }
  if (def.role) {
    def.policy_applied = reg->policy_applied;
    if (reg->shape_columns) {  // the columns the role may read (in the table's order)
      def.selected.clear();
      for (size_t i = 0; i < t.columns.size(); ++i)
        if (std::find(reg->shape_columns->begin(), reg->shape_columns->end(), t.columns[i].name) !=
            reg->shape_columns->end())
          def.selected.push_back(i);
      names.clear();
      for (size_t idx : def.selected) names.push_back(t.columns[idx].name);
    }
  }
  std::string cols_key;
  for (auto& n : names) cols_key += quote_ident(n) + ",";
  def.key = std::to_string(t.relid) + "|" + reg->canonical_where + "|" + cols_key + "|" + options;
  bool created = false;
  auto s = store_.begin_create(std::move(def), raw_key, reg->handle, reg->shape_id, reg->canonical_where, created);
  // Built in the background: the requests waiting on it (this one included)
  // are served its snapshot chunks as they are taken.
  if (created) enqueue_build(s);
  co_return ShapeOutcome{s, {}};
}

asio::awaitable<ShapeService::RegOutcome> ShapeService::register_alone(PgConn& c, const RegRequest& req) {
  RegOutcome out;
  try {
    // What a request can get wrong is checked first by check_shape(), which
    // returns the error as data: a rejected WHERE writes nothing to the
    // server log (an ERROR would log the whole statement, every time).
    if (req.role) {
      out.rejected =
          (co_await check_shape_as(c, req.relid, req.where, req.params, *req.role, req.claims, req.columns)).rejection;
      if (!out.rejected)
        out.reg = co_await get_or_create_shape_as(c, req.relid, req.where, req.columns, req.options, req.params,
                                                  *req.role, req.claims);
    } else {
      out.rejected = (co_await check_shape(c, req.relid, req.where, req.params)).rejection;
      if (!out.rejected) {
        std::vector<std::string> names = req.columns.value_or(std::vector<std::string>{});
        out.reg = co_await get_or_create_shape(c, req.relid, req.where, names, req.options, req.params);
      }
    }
  } catch (const PgError& e) {
    out.failed = e;
  }
  co_return out;
}

namespace {

// Registrations one statement can make together: one table, role, claims,
// column list and options.
std::string registration_group_key(uint32_t relid, const std::optional<std::string>& role, const std::string& claims,
                                   const std::optional<std::vector<std::string>>& columns, const std::string& options) {
  std::string k = std::to_string(relid);
  k += '\x1f';
  k += role ? "r" + *role : std::string("-");
  k += '\x1f';
  k += claims;
  k += '\x1f';
  k += options;
  k += '\x1f';
  if (columns) {
    k += "c";
    for (auto& c : *columns) k += quote_ident(c) + ",";
  }
  return k;
}

}  // namespace

asio::awaitable<ShapeService::RegOutcome> ShapeService::register_in_db(RegRequest req) {
  // With params (rare) or an empty filter text: alone, as before.
  bool batched = req.params.empty() && !(req.where && req.where->empty()) && cfg_.registration_batch > 1;
  if (batched) {
    std::string key = registration_group_key(req.relid, req.role, req.claims, req.columns, req.options);
    RegOutcome late;
    late.failed = PgError("the shape's registration did not finish in time", "57014", false);
    std::chrono::steady_clock::duration timeout =
        std::chrono::milliseconds(cfg_.registration_timeout_ms) + std::chrono::seconds(60);
    RegRequest copy = req;
    RegOutcome out = co_await registrar_.submit(std::move(key), std::move(copy), timeout, std::move(late));
    if (!out.retry_alone) co_return out;
    // Its batch failed (one filter of it raised or took too long): alone now,
    // in parallel with the others of the batch, each on a connection of its own.
  }
  std::optional<PgError> failed;
  RegOutcome out;
  try {
    auto lease = co_await reg_pool_.acquire();
    out = co_await register_alone(*lease, req);
  } catch (const PgError& e) {
    failed = e;
  }
  if (failed) out.failed = std::move(failed);
  co_return out;
}

asio::awaitable<void> ShapeService::register_batch(const std::vector<const RegRequest*>& reqs,
                                                   std::vector<RegOutcome>& outs) {
  std::optional<PgError> lease_failed;
  try {
    auto lease = co_await reg_pool_.acquire();
    PgConn& c = *lease;
    const RegRequest& first = *reqs.front();
    std::vector<BatchRegistration> regs(reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) regs[i].where = reqs[i]->where;
    std::optional<PgError> batch_failed;
    try {
      co_await check_and_register_many(c, first.relid, regs, first.columns, first.options, first.role, first.claims);
    } catch (const PgError& e) {
      batch_failed = e;
    }
    if (batch_failed && reqs.size() == 1 && (batch_failed->sqlstate == "57014" || batch_failed->connection_lost)) {
      outs[0].failed = std::move(batch_failed);  // its own verdict (a second try would take as long)
    } else if (batch_failed) {
      // One of them raised, took too long, or the connection went: each
      // requester registers alone (in parallel, on the pool) and learns its own verdict.
      // (an extension older than 0.2.0 lacks check_shape(): the lone path knows what to do)
      if (reqs.size() > 1)
        log_info("registration batch of ", reqs.size(), " shapes failed (", batch_failed->sqlstate, " ",
                 batch_failed->what(), "); registering them one at a time");
      for (auto& o : outs) o.retry_alone = true;
    } else {
      if (reqs.size() > 1) log_info(reqs.size(), " shapes checked and registered in one statement");
      for (size_t i = 0; i < reqs.size(); ++i) {
        outs[i].rejected = std::move(regs[i].rejection);
        outs[i].reg = std::move(regs[i].shape);
      }
    }
  } catch (const PgError& e) {
    lease_failed = e;
  }
  if (lease_failed)
    for (auto& o : outs) {
      o = RegOutcome{};
      o.failed = *lease_failed;
    }
}

asio::awaitable<ShapeService::LookupOutcome> ShapeService::look_up(const QualifiedName& name) {
  if (cfg_.registration_batch <= 1) {  // one at a time, as before
    LookupOutcome out;
    try {
      auto lease = co_await pool_.acquire();
      out.lookup = co_await lookup_table(*lease, name);
    } catch (const PgError& e) {
      out.failed = e;
    }
    co_return out;
  }
  LookupOutcome late;
  late.failed = PgError("the table look-up did not finish in time", "57014", false);
  std::string key = name.schema + '\x1f' + name.name;
  std::chrono::steady_clock::duration timeout = std::chrono::seconds(60);
  co_return co_await lookups_.submit(std::move(key), name, timeout, std::move(late));
}

asio::awaitable<void> ShapeService::lookup_batch(const std::vector<const QualifiedName*>& names,
                                                 std::vector<LookupOutcome>& outs) {
  // one key, one table: every request of the batch asked for it before this look-up started
  LookupOutcome one;
  try {
    auto lease = co_await pool_.acquire();
    one.lookup = co_await lookup_table(*lease, *names.front());
  } catch (const PgError& e) {
    one.failed = e;
  }
  for (auto& o : outs) o = one;
}

asio::awaitable<void> ShapeService::build_and_settle(std::shared_ptr<Shape> s) {
  std::exception_ptr failure;
  try {
    co_await build_shape(s);
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) co_await settle_failure(s, failure);
}

asio::awaitable<void> ShapeService::settle_failure(const std::shared_ptr<Shape>& s, std::exception_ptr failure) {
  std::optional<PgError> failed;
  std::string other_failure;
  try {
    std::rethrow_exception(failure);
  } catch (const PgError& e) {
    failed = e;
  } catch (const std::exception& e) {
    other_failure = e.what();
  } catch (...) {
    other_failure = "unknown error";
  }
  if (!other_failure.empty()) {
    log_error("shape ", s->handle, " build failed: ", other_failure);
    store_.fail_create(s);
    co_return;
  }
  if (!failed) co_return;
  const PgError& e = *failed;
  log_warn("shape ", s->handle, " snapshot failed: ", e.sqlstate, " ", e.what());
  // The filter raises for a row of the table (division by zero, a failed
  // cast, ...): the client's request is what is wrong. The changes since the
  // shape's snapshot are no longer all in the change log, or its snapshot was
  // abandoned by a sidecar that died: nobody can serve it. Either way retire
  // the shape, so writers stop evaluating it and the next request starts anew.
  // Only an error about the shape itself retires it (http/pg_errors.cpp): a
  // grant this sidecar lacks, or its connection, is this sidecar's problem,
  // and other sidecars may be serving the shape.
  bool retire = retires_shape(e);
  bool unservable = e.sqlstate == kLogTruncated || e.sqlstate == kSnapshotAbandoned;
  bool bad_filter = retire && !unservable;
  bool config = classify_pg_error(e) == PgFailure::kConfiguration;
  if (config) log_configuration_error(e, "taking or storing the shape's snapshot", "SELECT, INSERT, UPDATE, DELETE");
  // A bad filter fails here first: the retirement below reaches this store
  // again through poll_invalidations, and its waiters must learn why from
  // this. An unservable shape is retired first: its waiters, woken by the
  // failure, look again and must find the registry handing out a new handle
  // (a request with the old handle gets 409 at once, not 503 "retry").
  auto fail_it = [&] {
    store_.fail_create(s, bad_filter ? std::string(e.what()) : std::string(),
                       config ? std::make_shared<const PgError>(e) : nullptr);
  };
  if (!unservable) fail_it();
  if (bad_filter || unservable) {
    std::string reason = bad_filter ? std::string("snapshot failed: ") + e.what()
                         : e.sqlstate == kLogTruncated ? std::string("change log retention: ") + e.what()
                                                       : std::string(e.what());
    try {
      auto lease = co_await pool_.acquire();
      co_await invalidate_shape(*lease, s->handle, reason);
      log_info("shape ", s->handle, " retired: ", reason);
    } catch (const PgError& e2) {
      log_warn("cannot retire shape ", s->handle, ": ", e2.what());
    }
  }
  if (unservable) fail_it();
}

namespace {

// Shapes whose snapshots one query can take together: one table, one role
// with the same claims (the transaction runs as them), one column list, one
// log mode.
std::string build_group_key(const Shape& s) {
  std::string k = std::to_string(s.def.table->relid);
  k += '\x1f';
  k += s.def.log_mode == LogMode::kChangesOnly ? "c" : "f";
  k += s.def.role ? "r" + *s.def.role : std::string("-");
  k += '\x1f';
  k += s.def.claims;
  k += '\x1f';
  for (size_t i : s.def.selected) k += std::to_string(i) + ",";
  return k;
}

}  // namespace

void ShapeService::enqueue_build(std::shared_ptr<Shape> s) {
  std::string key = build_group_key(*s);
  build_queue_.push(key, std::move(s));
  if (builders_.fetch_add(1) < cfg_.snapshot_pool_size)
    asio::co_spawn(io_, run_builder(), asio::detached);
  else
    builders_.fetch_sub(1);
}

asio::awaitable<void> ShapeService::run_builder() {
  for (;;) {
    std::vector<std::shared_ptr<Shape>> group = build_queue_.take();
    if (group.empty()) {
      // Leaving; but a shape pushed while this builder was counted, when every
      // builder was busy, must not be left without one.
      builders_.fetch_sub(1);
      if (build_queue_.size() == 0) co_return;
      if (builders_.fetch_add(1) >= cfg_.snapshot_pool_size) {
        builders_.fetch_sub(1);
        co_return;
      }
      continue;
    }
    co_await build_group(std::move(group));
  }
}

asio::awaitable<void> ShapeService::build_group(std::vector<std::shared_ptr<Shape>> group) {
  if (group.size() == 1) {  // alone, as always: its snapshot chunks are served while they stream
    co_await build_and_settle(group.front());
    co_return;
  }
  const size_t n = group.size();
  std::vector<std::shared_ptr<Shape>> alone;  // to build one at a time
  std::vector<std::optional<SnapshotData>> data(n);
  std::vector<size_t> own;       // indexes of the shapes this builder takes the snapshot of
  std::vector<int32_t> own_ids;  // their build locks, held
  std::vector<int32_t> holding;  // every build lock this session holds now (released on failure)
  std::vector<bool> built(n, false);
  std::exception_ptr failure;
  {
    std::optional<PgPool::Lease> lease;
    try {
      auto got = co_await pool_.acquire();
      lease.emplace(std::move(got));
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure) {
      for (auto& s : group) co_await settle_failure(s, failure);
      co_return;
    }
    PgConn& c = **lease;
    try {
      std::vector<std::string> handles;
      for (auto& s : group) handles.push_back(s->handle);
      auto stored = co_await load_snapshots(c, handles);
      std::vector<size_t> need;
      for (size_t i = 0; i < n; ++i) {
        if (!stored[i]) need.push_back(i);
        else if (stored[i]->building) alone.push_back(group[i]);  // another sidecar's, or abandoned: wait or retire alone
        else data[i] = std::move(stored[i]);
      }
      std::vector<int32_t> need_ids;
      for (size_t i : need) need_ids.push_back(group[i]->shape_id);
      std::vector<bool> locked = co_await try_build_locks(c, need_ids);
      std::vector<size_t> held;
      std::vector<std::string> held_handles;
      for (size_t k = 0; k < need.size(); ++k) {
        if (locked[k]) {
          holding.push_back(need_ids[k]);
          held.push_back(need[k]);
          held_handles.push_back(group[need[k]]->handle);
        } else {
          alone.push_back(group[need[k]]);  // another sidecar is taking it: the lone path waits for it
        }
      }
      // Under the lock, look again: stored meanwhile (load it), or claimed by a
      // builder that is gone (the lone path retires it).
      auto again = co_await load_snapshots(c, held_handles);
      std::vector<int32_t> release;
      for (size_t k = 0; k < held.size(); ++k) {
        size_t i = held[k];
        if (!again[k]) {
          own.push_back(i);
          own_ids.push_back(group[i]->shape_id);
          continue;
        }
        release.push_back(group[i]->shape_id);
        if (again[k]->building) alone.push_back(group[i]);
        else data[i] = std::move(again[k]);
      }
      co_await build_unlock_all(c, release);
      holding = own_ids;
      if (!own.empty()) {
        std::vector<std::shared_ptr<Shape>> own_shapes;
        for (size_t i : own) own_shapes.push_back(group[i]);
        std::vector<SnapshotData> taken;
        std::exception_ptr snap_failure;
        try {
          co_await take_group_snapshot(c, own_shapes, taken);
        } catch (...) {
          snap_failure = std::current_exception();
        }
        if (snap_failure) {
          // Nothing of it was served: each shape goes on alone, so that one
          // shape's failing filter fails only that shape.
          std::string why = "unknown error";
          try {
            std::rethrow_exception(snap_failure);
          } catch (const std::exception& e) {
            why = e.what();
          } catch (...) {
          }
          log_warn("group snapshot of ", own_shapes.size(), " shapes failed (", why, "); taking them one at a time");
          if (c.ok()) co_await build_unlock_all(c, own_ids);
          for (auto& s : own_shapes) alone.push_back(s);
          own.clear();
          own_ids.clear();
          holding.clear();
        } else {
          for (size_t k = 0; k < own.size(); ++k) data[own[k]] = std::move(taken[k]);
        }
      }
      // Catch up every shape with a snapshot. The batches the window no longer
      // holds are read once for the group, from its oldest start tick to its
      // newest floor; each shape applies those after its own start tick.
      std::vector<std::string> done_handles;
      std::vector<long long> done_rows;
      std::vector<size_t> pending;
      std::vector<uint64_t> from(n, 0);  // where each shape's catch-up starts
      for (size_t i = 0; i < n; ++i) {
        if (!data[i]) continue;
        store_.set_snapshot(*group[i], data[i]->snap, data[i]->start_tick, &data[i]->chunks);
        // an evicted shape (--max-memory) comes back with its segment files
        // and catches up from where it left off, as build_shape does
        from[i] = std::max(data[i]->start_tick, store_.restore_evicted(group[i]));
        pending.push_back(i);
        built[i] = true;
        done_handles.push_back(group[i]->handle);
        done_rows.push_back(data[i]->rows);
      }
      for (int round = 0; round < 5 && !pending.empty(); ++round) {
        std::vector<std::shared_ptr<Shape>> need;
        uint64_t lo = UINT64_MAX, hi = 0;
        std::vector<size_t> again;
        for (size_t i : pending) {
          auto floor_or_done = store_.finish_or_floor(group[i], from[i]);
          if (!floor_or_done) continue;  // the window reaches back to where it is: done
          need.push_back(group[i]);
          again.push_back(i);
          lo = std::min(lo, from[i]);
          hi = std::max(hi, *floor_or_done);
        }
        pending.clear();
        if (need.empty()) break;
        // one read for the group, a part at a time; each shape takes the
        // batches after its own position (no copies)
        co_await catch_up_parts(c, need, lo, hi);
        for (size_t i : again) {
          from[i] = std::max(from[i], hi);
          pending.push_back(i);  // finished by the next round's finish_or_floor (or stopped: no-op)
        }
      }
      for (size_t i : pending) store_.finish_or_floor(group[i], from[i]);  // after the last round
      if (store_.over_budget()) co_await spill_segments();
      if (!own.empty()) {
        std::vector<std::string> own_handles;
        std::vector<const SnapshotData*> own_data;
        for (size_t i : own) {
          own_handles.push_back(group[i]->handle);
          own_data.push_back(&*data[i]);
        }
        auto t0 = std::chrono::steady_clock::now();
        co_await store_snapshots(c, own_handles, own_data);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
        log_info(own.size(), " shape snapshots stored in one transaction in ", ms, " ms");
        co_await build_unlock_all(c, own_ids);
        own_ids.clear();
        holding.clear();
      }
      co_await report_shapes_built(c, done_handles, done_rows);
      const TableInfo& t = *group.front()->def.table;
      log_info(done_handles.size(), " shapes ready for ", quote_ident(t.schema), ".", quote_ident(t.name), " (",
               own.size(), " snapshots taken together, ", done_handles.size() - own.size(), " loaded)");
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure && c.ok()) {
      co_await c.rollback_if_open();
      co_await build_unlock_all(c, holding);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (failure && data[i]) co_await settle_failure(group[i], failure);
    else if (built[i]) store_.fail_create(group[i]);  // no-op once ready
  }
  // Not reached by the failure: never given a snapshot here (the failure came first).
  if (failure)
    for (size_t i = 0; i < n; ++i)
      if (!data[i] && std::find(alone.begin(), alone.end(), group[i]) == alone.end())
        co_await settle_failure(group[i], failure);
  for (auto& s : alone) asio::co_spawn(io_, build_and_settle(s), asio::detached);
}

asio::awaitable<void> ShapeService::take_group_snapshot(PgConn& c, const std::vector<std::shared_ptr<Shape>>& own,
                                                        std::vector<SnapshotData>& data) {
  const ShapeDef& def = own.front()->def;
  const TableInfo& t = *def.table;
  // Once for the group: every shape in it was registered before this call.
  co_await wait_for_writers(c, t.relid);
  std::vector<std::string> handles;
  std::vector<std::string> wheres;
  for (auto& s : own) {
    handles.push_back(s->handle);
    wheres.push_back(s->where);
  }
  co_await claim_snapshots(c, handles);
  auto t0 = std::chrono::steady_clock::now();
  struct Out {
    std::string cur = "[";
    bool first = true;
    long long rows = 0;
    std::vector<std::shared_ptr<const std::string>> chunks;
  };
  std::vector<Out> out(own.size());
  SnapshotData d;
  std::exception_ptr failure;
  try {
    d = co_await begin_snapshot(c, cfg_.snapshot_timeout_ms, def.role, def.claims);
    for (auto& s : own) store_.set_snapshot(*s, d.snap, d.start_tick);
    if (def.log_mode == LogMode::kFull) {
      auto on_row = [&](size_t i, const SnapshotRow& row) {
        Out& o = out[i];
        if (!o.first) o.cur += ',';
        o.first = false;
        row.append_message(o.cur);
        ++o.rows;
        // no grow_chunk: a group's shapes all build at once, and a whole
        // chunk reserved (with huge pages) for each could hold far more
        // memory than their rows while the COPY runs
        if (o.cur.size() >= cfg_.chunk_bytes_threshold) {
          o.cur += ']';
          seal_chunk(o.cur);
          o.chunks.push_back(std::make_shared<const std::string>(std::move(o.cur)));
          o.cur = "[";
          o.first = true;
        }
      };
      bool versions = row_versions_.load() && co_await can_read_versions(c, t.relid, def.role);
      std::optional<uint64_t> versions_at;
      if (versions) versions_at = d.snap.xmax;
      co_await copy_snapshot_rows_many(c, t, def.selected, wheres, versions_at, on_row);
    }
    co_await c.exec("COMMIT");
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    if (c.ok()) {
      co_await c.rollback_if_open();
      co_await forget_claims(c, handles);  // nothing was served: the next attempt starts afresh
    }
    std::rethrow_exception(failure);
  }
  auto t1 = std::chrono::steady_clock::now();
  data.clear();
  for (size_t i = 0; i < own.size(); ++i) {
    Out& o = out[i];
    if (!o.first) o.cur += ',';
    o.cur += snapshot_end_message(d.snap.xmin_s, d.snap.xmax_s, d.snap.xip_s);
    o.cur += ']';
    seal_chunk(o.cur);
    o.chunks.push_back(std::make_shared<const std::string>(std::move(o.cur)));
    for (auto& ch : o.chunks) store_.publish_snapshot_chunk(own[i], ch);
    SnapshotData sd;
    sd.snap = d.snap;
    sd.snap_text = d.snap_text;
    sd.start_tick = d.start_tick;
    sd.rows = o.rows;
    sd.chunks = std::move(o.chunks);
    data.push_back(std::move(sd));
    if (events_.snapshot_taken) events_.snapshot_taken(std::chrono::duration<double>(t1 - t0).count());
  }
  log_info(own.size(), " shape snapshots taken together in ",
           std::chrono::duration_cast<std::chrono::milliseconds>(t1 - t0).count(), " ms");
}

// Takes the shape's snapshot (after every writer that could miss the shape has
// ended) and stores it for every sidecar. Caller holds the shape's build lock.
asio::awaitable<SnapshotData> ShapeService::take_snapshot(PgConn& c, const std::shared_ptr<Shape>& sp) {
  const Shape* s = sp.get();
  const TableInfo& t = *s->def.table;
  co_await wait_for_writers(c, t.relid);
  // Claim the handle before anything is served: a snapshot row without a
  // chunk count is one being built. Should this process die before storing
  // the chunks, the next sidecar finds it abandoned and retires the handle
  // (clients that saw part of it re-sync) instead of taking another snapshot
  // under the same handle.
  co_await claim_snapshot(c, s->handle);
  auto t0 = std::chrono::steady_clock::now();
  SnapshotData d;
  std::exception_ptr failure;
  std::vector<std::shared_ptr<const std::string>> chunks;
  std::string cur = "[";
  bool first = true;
  long long rows = 0;
  // A chunk is served as soon as it is complete, while the rows stream in
  // (COPY): PostgreSQL produces, this encodes, clients download, at once.
  auto publish = [&](std::string body) {
    seal_chunk(body);
    auto chunk = std::make_shared<const std::string>(std::move(body));
    chunks.push_back(chunk);
    store_.publish_snapshot_chunk(sp, std::move(chunk));
  };
  try {
    // as the role the shape was registered for, with its claims: PostgreSQL
    // applies its row-level security and column grants to the rows copied
    d = co_await begin_snapshot(c, cfg_.snapshot_timeout_ms, s->def.role, s->def.claims);
    store_.set_snapshot(*sp, d.snap, d.start_tick);
    if (s->def.log_mode == LogMode::kFull) {
      auto on_row = [&](const SnapshotRow& row) {
        if (!first) cur += ',';
        first = false;
        row.append_message(cur);
        ++rows;
        grow_chunk(cur, cfg_.chunk_bytes_threshold);
        if (cur.size() >= cfg_.chunk_bytes_threshold) {
          cur += ']';
          publish(std::move(cur));
          cur = "[";
          first = true;
        }
      };
      // versions only where the role may read them (column grants without xmin: none)
      bool versions = row_versions_.load() && co_await can_read_versions(c, t.relid, s->def.role);
      std::optional<uint64_t> versions_at;
      if (versions) versions_at = d.snap.xmax;
      co_await copy_snapshot_rows(c, t, s->def.selected, s->where, versions_at, on_row);
    }
    co_await c.exec("COMMIT");
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    if (c.ok()) {
      co_await c.rollback_if_open();
      // Nothing served yet (rows stream before any chunk is complete only for
      // small shapes): forget the claim so the next attempt starts afresh.
      if (!store_.status(*sp).streaming) co_await forget_claim(c, s->handle);
    }
    std::rethrow_exception(failure);
  }
  auto t1 = std::chrono::steady_clock::now();
  if (!first) cur += ',';
  cur += snapshot_end_message(d.snap.xmin_s, d.snap.xmax_s, d.snap.xip_s);
  cur += ']';
  publish(std::move(cur));
  d.rows = rows;
  d.chunks = std::move(chunks);
  auto ms = [](auto a, auto b) { return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count(); };
  if (events_.snapshot_taken) events_.snapshot_taken(std::chrono::duration<double>(t1 - t0).count());
  log_info("shape ", s->handle, " snapshot: ", d.rows, " rows, ", d.chunks.size(), " chunk(s) streamed in ", ms(t0, t1),
           " ms");
  co_return d;
}

asio::awaitable<void> ShapeService::build_shape(std::shared_ptr<Shape> s) {
  auto ex = co_await asio::this_coro::executor;
  {
    auto lease = co_await pool_.acquire();
    PgConn& c = *lease;
    const TableInfo& t = *s->def.table;
    // The first sidecar to hold the shape's build lock takes the snapshot,
    // serves it while it streams, and stores it; everyone else (and this one
    // after a restart) loads the stored one.
    std::optional<SnapshotData> data;
    bool own = false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    for (;;) {
      data = co_await load_snapshot(c, s->handle);
      if (data && !data->building) break;
      if (co_await try_build_lock(c, s->shape_id)) {
        std::exception_ptr failure;
        bool abandoned = false;
        try {
          data = co_await load_snapshot(c, s->handle);
          if (data && data->building) {
            abandoned = true;  // we hold the lock: its builder is gone
          } else if (!data) {
            own = true;
            data = co_await take_snapshot(c, s);
          }
        } catch (...) {
          failure = std::current_exception();
        }
        if (c.ok() && (failure || !own || abandoned)) {
          co_await c.rollback_if_open();
          co_await build_unlock(c, s->shape_id);
        }
        if (failure) std::rethrow_exception(failure);
        if (abandoned)
          throw PgError("the snapshot of shape " + s->handle +
                            " was abandoned by the sidecar that took it before it was stored",
                        kSnapshotAbandoned, false);
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) throw PgError("timed out waiting for another sidecar's snapshot", "", false);
      asio::steady_timer pause(ex, std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    store_.set_snapshot(*s, data->snap, data->start_tick, &data->chunks);
    // A shape evicted from memory (--max-memory) comes back with its segment
    // files and catches up from where it left off; otherwise from its snapshot.
    uint64_t start_tick = std::max(data->start_tick, store_.restore_evicted(s));
    // Catch up: batches after start_tick that the window no longer holds come
    // from the database, a part at a time (catch_up_parts).
    std::exception_ptr failure;
    try {
      for (int round = 0; round < 5; ++round) {
        auto floor_or_done = store_.finish_or_floor(s, start_tick);
        if (!floor_or_done) break;
        uint64_t floor = *floor_or_done;
        std::vector<std::shared_ptr<Shape>> one{s};
        if (!co_await catch_up_parts(c, one, start_tick, floor)) break;
        start_tick = floor;
        // the last round's catch-up is finished here (or the shape fails below)
        if (round == 4) store_.finish_or_floor(s, start_tick);
      }
      if (store_.over_budget()) co_await spill_segments();
      if (own) {
        auto t0 = std::chrono::steady_clock::now();
        co_await store_snapshot(c, s->handle, *data);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
        log_info("shape ", s->handle, " snapshot stored: ", data->chunks.size(), " chunk(s) in ", ms, " ms");
      }
    } catch (...) {
      failure = std::current_exception();
    }
    if (own && c.ok()) co_await build_unlock(c, s->shape_id);
    if (failure) std::rethrow_exception(failure);
    co_await report_shape_built(c, s->handle, data->rows);
    log_info("shape ", s->handle, " ready for ", quote_ident(t.schema), ".", quote_ident(t.name), ": ", data->rows,
             " rows, ", data->chunks.size(), " chunk(s), from tick ", start_tick);
  }
  store_.fail_create(s);  // no-op once ready
}

asio::awaitable<bool> ShapeService::catch_up_parts(PgConn& c, const std::vector<std::shared_ptr<Shape>>& shapes,
                                                   uint64_t after, uint64_t upto) {
  FetchPacer pacer(2000);
  std::vector<std::shared_ptr<Shape>> going = shapes;
  while (after < upto && !going.empty()) {
    uint64_t to = std::min(upto, after + pacer.span());
    auto part = co_await fetch_batches(c, after, to);
    size_t bytes = 0;
    for (auto& b : part) bytes += ShapeStore::batch_cost(b);
    pacer.observe(to - after, bytes, store_.budget().fetch_bytes(false));
    std::vector<std::shared_ptr<Shape>> still;
    for (auto& s : going)
      if (store_.catch_up(s, part, after, to)) still.push_back(s);
    going.swap(still);
    after = to;
  }
  co_return after >= upto;
}

asio::awaitable<void> ShapeService::record_invalidations(PgConn& c,
                                                const std::vector<std::pair<std::string, std::string>>& inv) {
  for (auto& [h, reason] : inv) {
    co_await invalidate_shape(c, h, reason);
    log_info("shape ", h, " invalidated: ", reason);
  }
}

asio::awaitable<bool> ShapeService::report_progress(PgConn& c) {
  std::vector<std::pair<std::string, std::string>> progress = store_.take_progress();
  if (progress.empty()) co_return false;
  std::vector<std::string> handles, offsets;
  handles.reserve(progress.size());
  offsets.reserve(progress.size());
  for (auto& [h, o] : progress) {
    handles.push_back(h);
    offsets.push_back(o);
  }
  std::optional<PgError> failed;
  try {
    co_await report_shapes(c, handles, offsets);  // one statement for all of them
  } catch (const PgError& e) {
    failed = e;
  }
  if (failed) {
    store_.restore_progress(progress);  // reported by the next round
    throw *failed;
  }
  co_return true;
}

asio::awaitable<void> ShapeService::run_reporter() {
  auto ex = co_await asio::this_coro::executor;
  PgConn c(ex);
  asio::steady_timer pause(ex);
  auto interval = std::chrono::milliseconds(1000);
  int backoff_ms = 1000;
  for (;;) {
    try {
      co_await c.connect(cfg_.database_url);
      co_await c.exec(kSessionSetup);
      backoff_ms = 1000;
      for (;;) {
        pause.expires_after(interval);
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
        if (stopping_) co_return;
        if (!c.healthy()) throw PgError("reporting connection lost", "", true);
        auto started = std::chrono::steady_clock::now();
        bool reported = co_await report_progress(c);
        // At most once per second, and with many shapes the database spends at
        // most about a tenth of a backend's time on reports (report_shape() costs
        // ~60 µs a shape: 5 000 shapes that all changed take ~0.3 s), which on a
        // small machine is CPU taken from delivering changes.
        auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
        interval = std::max(std::chrono::milliseconds(1000), reported ? 10 * took : std::chrono::milliseconds(0));
      }
    } catch (const PgError& e) {
      if (db_ready_) log_warn("progress reports: ", pg_why(e));
    }
    c.close();
    if (stopping_) co_return;
    pause.expires_after(std::chrono::milliseconds(backoff_ms));
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    backoff_ms = std::min(backoff_ms * 2, 10000);
  }
}

asio::awaitable<void> ShapeService::report_consumer(PgConn& c) {
  uint64_t last = store_.last_tick();
  uint64_t horizon = co_await consumer_report(c, cfg_.consumer_name, last);
  if (horizon > last) co_await restart_after_truncation(c, horizon);
}

asio::awaitable<void> ShapeService::restart_after_truncation(PgConn& c, uint64_t horizon) {
  uint64_t now_tick = co_await newest_tick(c);
  uint64_t was = store_.restart_from(now_tick, "this sidecar fell behind the change log");
  log_error("this sidecar (consumer \"", cfg_.consumer_name, "\") had read up to tick ", was,
            " but the change log now starts after tick ", horizon,
            ": it was not seen for longer than shapesync.consumer_timeout and the log was truncated since. "
            "Every shape it held is dropped and rebuilt from PostgreSQL on its next request (its clients refetch); "
            "shapes older than shapesync.log_retention get new handles. Following ticks from ", now_tick);
  co_await consumer_report(c, cfg_.consumer_name, now_tick);
}

asio::awaitable<void> ShapeService::spill_segments() {
  if (store_.spill_dir().empty()) co_return;
  std::lock_guard lk(spill_mu_);  // (no co_await below: a plain mutex)
  std::vector<SpillJob> jobs = store_.take_spills();
  std::vector<std::string> dead = store_.take_dead_dirs();
  std::error_code ec;
  for (auto& d : dead) std::filesystem::remove_all(d, ec);
  store_.write_spills(jobs);
  co_return;
}

asio::awaitable<FillResult> ShapeService::fill_segment(const std::shared_ptr<Shape>& s, LogRead& r) {
  SegmentFile seg = *r.segment;
  std::vector<std::shared_ptr<const std::string>> got;
  if (read_segment(seg, r.segment_after, got)) {
    r.entries = std::move(got);
    r.segment.reset();
    co_return FillResult::kFilled;
  }
  // Missing or damaged: the disk is a cache; rebuild the chunk from the change log.
  log_warn("shape ", s->handle, ": segment ", seg.path, " is missing or damaged; rebuilding it from the change log");
  uint64_t from_tick = seg.first.tx >> 32, to_tick = seg.last.tx >> 32;
  std::vector<Batch> batches;
  std::optional<PgError> failed;
  try {
    auto lease = co_await pool_.acquire();
    for (uint64_t after = from_tick - 1; after < to_tick;) {
      uint64_t upto = std::min(to_tick, after + 2000);
      auto part = co_await fetch_batches(*lease, after, upto);
      for (auto& b : part) batches.push_back(std::move(b));
      after = upto;
    }
  } catch (const PgError& e) {
    failed = e;
  }
  if (failed) {
    if (failed->sqlstate != kLogTruncated) {
      log_warn("shape ", s->handle, ": cannot rebuild ", seg.path, ": ", failed->what());
      co_return FillResult::kUnreachable;
    }
    std::string reason = std::string("change log retention: ") + failed->what();
    try {
      auto lease = co_await pool_.acquire();
      co_await invalidate_shape(*lease, s->handle, reason);
    } catch (const PgError& e2) {
      log_warn("cannot retire shape ", s->handle, ": ", e2.what());
    }
    store_.invalidate(s, reason);
    co_return FillResult::kRetired;
  }
  std::vector<LogEntry> entries;
  for (auto& e : store_.replay(*s, batches))
    if (!(e.offset < seg.first) && !(seg.last < e.offset)) entries.push_back(std::move(e));
  std::string err;
  std::error_code ec;
  // A record in a pack file is not rewritten in place (the other shapes'
  // records around it are fine): the rebuild goes to a file of the shape's
  // own, which later reads use once it reads back right.
  SegmentFile file = seg;
  if (seg.pack) {
    file.pack = 0;
    file.offset = 0;
    file.path = store_.segment_path(*s, seg.end_index);
  }
  std::filesystem::create_directories(std::filesystem::path(file.path).parent_path(), ec);
  if (!write_segment(file.path, entries, err)) log_warn("shape ", s->handle, ": ", err);
  got.clear();
  if (!read_segment(file, r.segment_after, got)) {
    log_error("shape ", s->handle, ": rebuilt segment ", file.path, " does not match the chunk (", entries.size(),
              " entries); serving it from the rebuild");
    for (auto& e : entries)
      if (r.segment_after < e.offset) got.push_back(e.json);
  } else if (seg.pack) {
    // (not repointed: the shape went, or another read did it first; the file is its own anyway)
    auto size = std::filesystem::file_size(file.path, ec);
    if (!ec) store_.repoint_chunk(*s, seg, static_cast<size_t>(size));
  }
  r.entries = std::move(got);
  r.segment.reset();
  co_return FillResult::kFilled;
}

asio::awaitable<void> ShapeService::poll_invalidations(PgConn& c) {
  // Safety net for invalidations recorded in the database but not seen in the
  // stream (another sidecar's, an administrator's invalidate_shape(), DDL).
  if (inval_cursor_.empty()) {
    inval_cursor_ = co_await database_now(c);
    co_return;
  }
  for (auto& inv : co_await invalidations_since(c, inval_cursor_)) {
    inval_cursor_ = inv.at;
    if (auto s = store_.by_handle(inv.handle)) {
      store_.invalidate(s, inv.reason);
      log_info("shape ", s->handle, " invalidated in the database: ", inv.reason);
    } else {
      store_.drop_evicted(inv.handle);  // evicted from memory: its stub and files go
    }
  }
}

namespace {
// The newest tick the notifications received so far name (0: none).
uint64_t newest_notified(PgConn& c) {
  uint64_t newest = 0;
  for (auto& [channel, payload] : c.take_notifications()) {
    try {
      newest = std::max<uint64_t>(newest, std::stoull(payload));
    } catch (...) {
    }
  }
  return newest;
}
}  // namespace

asio::awaitable<ShapeService::TickRead> ShapeService::read_ticks(PgConn& c, uint64_t after, uint64_t upto) {
  TickRead r;
  r.after = after;
  r.upto = upto;
  try {
    r.batches = co_await fetch_batches(c, after, upto);
  } catch (const PgError& e) {
    if (e.sqlstate != kLogTruncated) throw;
    r.truncated = true;
  }
  for (auto& b : r.batches) r.bytes += b.cost = ShapeStore::batch_cost(b);
  co_return r;
}

asio::awaitable<std::vector<std::pair<std::string, std::string>>> ShapeService::apply_read(std::vector<Batch> batches,
                                                                                        uint64_t upto) {
  // the window is part of the memory budget: at most a quarter of it (the
  // store keeps it smaller while it is under pressure: ShapeStore::apply_all)
  size_t window_cap = cfg_.max_memory ? std::min(cfg_.window_bytes, cfg_.max_memory / 4) : cfg_.window_bytes;
  co_return store_.apply_all(std::move(batches), upto, static_cast<size_t>(cfg_.batch_window_ticks), window_cap);
}

asio::awaitable<void> ShapeService::process_new_ticks(PgConn& c, uint64_t notified) {
  // Reads and applies ticks in order, every one. While one read is applied
  // the next is already being read (and decoded) when the notifications say
  // there is more: a sidecar behind a heavy write load spends its time
  // applying, not waiting for the database and then the database for it.
  // Back-pressure: the span of ticks read at once follows the bytes they
  // decode to (shapes/fetch_pacer.hpp), smaller while the store is over its
  // budget; two reads may be in flight, so each may decode to half of what
  // the budget allows one (MemoryBudget::fetch_bytes).
  auto span_from = [&](uint64_t after, uint64_t hi) { return std::min(hi, after + follow_pacer_.span()); };
  uint64_t last = store_.last_tick();
  uint64_t hi = std::max(notified, newest_notified(c));  // a NOTIFY names the newest tick: no need to ask
  if (hi <= last) hi = co_await newest_tick(c);
  if (hi <= last) co_return;
  TickRead cur = co_await read_ticks(c, last, span_from(last, hi));
  for (;;) {
    if (cur.truncated) {
      co_await restart_after_truncation(c, co_await log_horizon(c));
      last = store_.last_tick();
      hi = co_await newest_tick(c);
      if (hi <= last) co_return;
      cur = co_await read_ticks(c, last, span_from(last, hi));
      continue;
    }
    uint64_t shrinks = follow_pacer_.shrunk();
    size_t cap = std::max<size_t>(1, store_.budget().fetch_bytes(store_.over_budget()) / 2);
    follow_pacer_.observe(cur.upto - cur.after, cur.bytes, cap);
    store_.set_inflight(cur.bytes, follow_pacer_.span(), follow_pacer_.shrunk() != shrinks);  // charged until applied
    hi = std::max(hi, newest_notified(c));
    std::vector<std::pair<std::string, std::string>> invalidated;
    std::optional<TickRead> next;
    if (cur.upto >= hi) {
      invalidated = co_await apply_read(std::move(cur.batches), cur.upto);
    } else {
      auto ex = co_await asio::this_coro::executor;
      auto [order, apply_failed, inv, read_failed, got] =
          co_await asio::experimental::make_parallel_group(
              asio::co_spawn(ex, apply_read(std::move(cur.batches), cur.upto), asio::deferred),
              asio::co_spawn(ex, read_ticks(c, cur.upto, span_from(cur.upto, hi)), asio::deferred))
              .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
      (void)order;
      if (apply_failed) std::rethrow_exception(apply_failed);
      invalidated = std::move(inv);
      if (read_failed) std::rethrow_exception(read_failed);
      next = std::move(got);
    }
    store_.set_inflight(0);
    if (!invalidated.empty()) co_await record_invalidations(c, invalidated);
    co_await spill_segments();
    if (!next) co_return;
    cur = std::move(*next);
  }
}

asio::awaitable<void> ShapeService::run_ticker() {
  auto ex = co_await asio::this_coro::executor;
  PgConn c(ex);
  bool first = true;
  bool connected_before = false;
  int backoff_ms = 100;
  for (;;) {
    try {
      co_await c.connect(cfg_.database_url);
      co_await c.exec(kSessionSetup);
      std::string version = co_await start_following(c);
      // 0.1.0 has no shapesync.row_version(): its rows go out without versions
      row_versions_ = version != "0.1.0";
      if (version != kCurrentExtension)
        log_warn("the shapesync extension is at version ", version, "; this shapesyncd is built for ",
                 kCurrentExtension, ": as its owner, run ALTER EXTENSION shapesync UPDATE (in place, under live "
                 "clients; nothing is lost)");
      if (first) {
        store_.set_last_tick(co_await newest_tick(c));
        first = false;
      }
      // hold the change log from where this sidecar reads on (before reading)
      co_await report_consumer(c);
      auto check_worker = [&]() -> asio::awaitable<void> {
        bool own = !co_await worker_running(c);
        if (own != own_ticking_.load())
          log_info(own ? "the extension's ticker is not running (shapesync not in shared_preload_libraries?): "
                         "ticking every " + std::to_string(cfg_.tick_interval_ms) + " ms from the sidecar"
                       : "the extension's background worker ticks; following its notifications");
        own_ticking_ = own;
      };
      co_await check_worker();
      if (connected_before && events_.reconnected) events_.reconnected();
      connected_before = true;
      db_ready_ = true;
      backoff_ms = 100;
      log_info("connected to the database; following ticks from ", store_.last_tick());
      co_await process_new_ticks(c);
      bool ticker_lock_held = false;
      auto last_worker_check = std::chrono::steady_clock::now();
      auto last_maintenance = last_worker_check - std::chrono::seconds(10);
      auto last_inval_check = last_worker_check;
      co_await poll_invalidations(c);
      for (;;) {
        bool own = own_ticking_.load();
        co_await c.wait_input(std::chrono::milliseconds(own ? cfg_.tick_interval_ms : cfg_.poll_interval_ms));
        uint64_t notified = newest_notified(c);
        if (own) {
          // Without the extension's worker, one sidecar at a time ticks: the one
          // holding this session lock (released if it dies, then another takes over).
          if (!ticker_lock_held) {
            ticker_lock_held = co_await try_ticker_lock(c);
            if (ticker_lock_held) log_info("this sidecar ticks for the database (no ticker worker)");
          }
          if (ticker_lock_held) {
            if (auto t = co_await tick_and_notify(c)) notified = std::max(notified, *t);
            // and, as the worker would, keeps the change log bounded
            if (std::chrono::steady_clock::now() - last_maintenance > std::chrono::seconds(10)) {
              last_maintenance = std::chrono::steady_clock::now();
              std::string failed;
              try {
                co_await maintain(c);
              } catch (const PgError& e) {
                if (e.connection_lost) throw;
                failed = e.sqlstate + " " + pg_why(e);
              }
              if (!failed.empty()) log_warn("shapesync.maintain() failed: ", failed);
            }
          }
        } else if (ticker_lock_held) {
          co_await ticker_unlock(c);
          ticker_lock_held = false;
        }
        co_await process_new_ticks(c, notified);
        co_await spill_segments();  // also when no tick came: the budget, idle shapes to evict
        if (std::chrono::steady_clock::now() - last_inval_check > std::chrono::milliseconds(cfg_.poll_interval_ms)) {
          co_await poll_invalidations(c);
          co_await report_consumer(c);
          last_inval_check = std::chrono::steady_clock::now();
        }
        if (std::chrono::steady_clock::now() - last_worker_check > std::chrono::seconds(5)) {
          co_await check_worker();
          last_worker_check = std::chrono::steady_clock::now();
        }
      }
    } catch (const PgError& e) {
      if (db_ready_) log_warn("lost the database: ", pg_why(e));
      else log_warn("cannot reach the database: ", pg_why(e));
      db_ready_ = false;
    }
    c.close();
    asio::steady_timer t(ex, std::chrono::milliseconds(backoff_ms));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    backoff_ms = std::min(backoff_ms * 2, 5000);
  }
}

}  // namespace shapesync
