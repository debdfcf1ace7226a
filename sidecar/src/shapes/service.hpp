// The shapes this sidecar serves, kept in step with the database: creating a
// shape (registration, snapshot, catch-up), following ticks into the store,
// segment files, and reporting progress and retention state. Everything the
// HTTP layer needs from "shapes" goes through this object; it speaks SQL only
// through db/.
//
// Error convention of the layer: operations a request asks for return a
// ShapeError value (what went wrong, in terms the HTTP layer can answer: an
// invalid request, a forbidden table, the database's own failure); db/ below
// throws PgError, and nothing above sees an exception from here.
#pragma once
#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "config.hpp"
#include "db/errors.hpp"
#include "db/pool.hpp"
#include "db/registry.hpp"
#include "db/snapshots.hpp"
#include "db/subset.hpp"
#include "model/caller.hpp"
#include "model/shape_request.hpp"
#include "db/changes.hpp"
#include "shapes/batcher.hpp"
#include "shapes/coalescer.hpp"
#include "shapes/fetch_pacer.hpp"
#include "shapes/store.hpp"

namespace shapesync {

// Why a shape could not be had.
struct ShapeError {
  enum class Kind {
    kInvalid,      // the request is wrong: `fields` say where (400)
    kForbidden,    // the table, a column, a policy or the caller's role may not be served: `fields` (403)
    kUnavailable,  // try again later: `body` (a JSON object) and `retry_after` (503)
    kDatabase,     // the database failed in a way that is not the client's: `db`, while `doing`
  } kind = Kind::kInvalid;
  std::vector<std::pair<std::string, std::string>> fields;  // (parameter, message)
  std::string body;
  int retry_after = 1;
  std::optional<PgError> db;
  std::string doing;      // "registering the shape"
  std::string privilege;  // what the failed statement needed ("SELECT"), for the GRANT hint

  static ShapeError invalid(std::string field, std::string message) {
    ShapeError e;
    e.fields.emplace_back(std::move(field), std::move(message));
    return e;
  }
  static ShapeError unavailable(std::string body, int retry_after) {
    ShapeError e;
    e.kind = Kind::kUnavailable;
    e.body = std::move(body);
    e.retry_after = retry_after;
    return e;
  }
  static ShapeError database(const PgError& pg, std::string doing, std::string privilege) {
    ShapeError e;
    e.kind = Kind::kDatabase;
    e.db = pg;
    e.doing = std::move(doing);
    e.privilege = std::move(privilege);
    return e;
  }
};

// A shape, or why there is none.
struct ShapeOutcome {
  std::shared_ptr<Shape> shape;
  ShapeError error;  // when shape is null
};

// What fill_segment() did.
enum class FillResult {
  kFilled,       // r.entries hold the segment's entries
  kRetired,      // the change log no longer holds them: the shape was retired (clients refetch)
  kUnreachable,  // the database could not be reached to rebuild the file
};

// What checking a subset found: errors by parameter ("table", or a subset
// field: "order_by", "where"), the canonical subset WHERE, or the database's failure.
struct SubsetCheck {
  std::vector<std::pair<std::string, std::string>> errors;
  std::vector<std::pair<std::string, std::string>> forbidden;  // the caller's role may not (403): ("where", message)
  std::string canonical_where;
  bool versions = false;  // rows may carry their version (the extension has them, the role may read them)
  std::optional<PgError> failure;
};

// What the HTTP layer needs from the shapes layer. ShapeService is the real
// one; the HTTP layer's unit tests use a fake over a real ShapeStore.
class ShapeSource {
 public:
  virtual ~ShapeSource() = default;
  virtual ShapeStore& store() = 0;
  virtual const Config& config() const = 0;
  virtual bool db_ready() const = 0;
  virtual bool stopping() const = 0;
  // Shutdown: waiters are woken (live requests answer at once), no new waits.
  virtual void stop() = 0;
  // The ready (or snapshot-streaming) active shape for a request on behalf of
  // `who`, created when needed. `def_key` is definition_key(p) + who.key.
  // With who.role, registration is the extension's role-aware one (the
  // effective filter and columns) and the snapshot runs as the role.
  virtual asio::awaitable<ShapeOutcome> get_shape(const ShapeParams& p, const std::string& def_key,
                                                  const Caller& who) = 0;
  // Waits while a shape is being created until `p` can be served (a snapshot
  // chunk already streamed, or the shape ready); false when it failed or timed out.
  virtual asio::awaitable<bool> wait_servable(const std::shared_ptr<Shape>& s, const ShapeParams& p) = 0;
  // Why a shape that could not be served cannot be: the table is gone (400),
  // or nothing better than "retry" (503).
  virtual asio::awaitable<ShapeError> not_servable(const ShapeParams& p) = 0;
  // Fills r.entries from r.segment's file, rebuilding a missing or damaged
  // file from the change log.
  virtual asio::awaitable<FillResult> fill_segment(const std::shared_ptr<Shape>& s, LogRead& r) = 0;
  // Retires a shape (DELETE /v1/shape): by handle, or the active shape of a
  // request definition. False when there is no such shape.
  virtual asio::awaitable<bool> delete_shape(const std::optional<std::string>& handle,
                                             const std::optional<std::string>& def_key) = 0;
  // Checks a subset request against its table (columns, the subset WHERE).
  // With who.role, the subset WHERE is checked for the role (its columns, its policies).
  virtual asio::awaitable<SubsetCheck> check_subset(const QualifiedName& table, const SubsetParams& sp,
                                                    const Caller& who) = 0;
  // Runs a subset query as who.role with its claims; the database's failure, if any.
  virtual asio::awaitable<std::optional<PgError>> run_subset(const std::string& sql, SubsetRows& out,
                                                             const Caller& who) = 0;
  // Logs a configuration error (a grant this sidecar's role lacks) with the
  // GRANT that fixes it, at most once per 10 s.
  virtual void log_configuration_error(const PgError& e, std::string_view doing, std::string_view privilege) const = 0;
};

class ShapeService : public ShapeSource {
 public:
  ShapeService(asio::io_context& io, const Config& cfg);

  ShapeStore& store() override { return store_; }
  const Config& config() const override { return cfg_; }
  bool db_ready() const override { return db_ready_.load(); }
  bool stopping() const override { return stopping_.load(); }
  void stop() override;

  asio::awaitable<ShapeOutcome> get_shape(const ShapeParams& p, const std::string& def_key,
                                          const Caller& who) override;
  asio::awaitable<bool> wait_servable(const std::shared_ptr<Shape>& s, const ShapeParams& p) override;
  asio::awaitable<ShapeError> not_servable(const ShapeParams& p) override;
  asio::awaitable<FillResult> fill_segment(const std::shared_ptr<Shape>& s, LogRead& r) override;
  asio::awaitable<bool> delete_shape(const std::optional<std::string>& handle,
                                     const std::optional<std::string>& def_key) override;
  asio::awaitable<SubsetCheck> check_subset(const QualifiedName& table, const SubsetParams& sp,
                                            const Caller& who) override;
  asio::awaitable<std::optional<PgError>> run_subset(const std::string& sql, SubsetRows& out,
                                                     const Caller& who) override;
  void log_configuration_error(const PgError& e, std::string_view doing, std::string_view privilege) const override;

  // What monitoring wants to hear of (metrics/ sits above this layer: it
  // installs these before run_ticker). Called on the service's threads.
  struct Events {
    std::function<void(double seconds)> snapshot_taken;  // a snapshot was taken (its duration)
    std::function<void()> reconnected;                   // the follower reached the database again
  };
  void set_events(Events e) { events_ = std::move(e); }

  // Follows ticks forever (LISTEN, safety-net polling, own ticking without the
  // extension's worker); reconnects after losing the database.
  asio::awaitable<void> run_ticker();
  // Reports the shapes' latest offsets to the database (shapesync.shapes) on its
  // own connection, at most once per second, in one statement for every shape
  // that grew since the last report; never on the tick follower's connection.
  asio::awaitable<void> run_reporter();

 private:
  // What the database said of a registration.
  struct RegOutcome {
    std::optional<RegisteredShape> reg;
    std::optional<ShapeRejection> rejected;
    std::optional<PgError> failed;
    bool retry_alone = false;  // its batch failed: register it alone to learn its own verdict
  };
  // A registration: what register_shape() asks the database.
  struct RegRequest {
    uint32_t relid = 0;
    std::optional<std::string> where;
    std::vector<std::string> params;
    std::optional<std::vector<std::string>> columns;  // the names (nullopt with a role: the permitted ones)
    std::string options;
    std::optional<std::string> role;
    std::string claims;
  };
  // Checks and registers: alone (params, or a batch of one), or in one
  // statement with the registrations of its group that waited meanwhile.
  asio::awaitable<RegOutcome> register_in_db(RegRequest req);
  asio::awaitable<RegOutcome> register_alone(PgConn& c, const RegRequest& req);
  // A registration batch (one table, role, claims, columns, options): one
  // statement; each alone when it fails.
  asio::awaitable<void> register_batch(const std::vector<const RegRequest*>& reqs, std::vector<RegOutcome>& outs);
  // The table a request names, looked up once for the requests for it that
  // waited while the previous look-up of it ran.
  struct LookupOutcome {
    TableLookup lookup;
    std::optional<PgError> failed;
  };
  asio::awaitable<LookupOutcome> look_up(const QualifiedName& name);
  asio::awaitable<void> lookup_batch(const std::vector<const QualifiedName*>& names, std::vector<LookupOutcome>& outs);
  // Registers the shape in the database (validating and canonicalising its
  // WHERE) and begins it in the store.
  asio::awaitable<ShapeOutcome> register_shape(const ShapeParams& p, ShapeDef def, const std::string& raw_key);
  // The 400 message for a table that does not exist (or is not tracked) now;
  // nullopt when it does, or when the database cannot tell.
  asio::awaitable<std::optional<std::string>> missing_table(const QualifiedName& name);
  // Loads (or takes and stores) the shape's snapshot and catches the shape up.
  asio::awaitable<void> build_shape(std::shared_ptr<Shape> s);
  // build_shape in the background; on failure fails the shape (and retires it
  // in the database when nobody can ever serve it).
  asio::awaitable<void> build_and_settle(std::shared_ptr<Shape> s);
  // What a failed build leaves: the shape failed, retired when nobody can serve it.
  asio::awaitable<void> settle_failure(const std::shared_ptr<Shape>& s, std::exception_ptr failure);
  // A new shape waits for a builder with the others of its group (same table,
  // role, claims, columns and log mode: one snapshot query serves them all).
  void enqueue_build(std::shared_ptr<Shape> s);
  // Takes groups from the queue until it is empty; at most snapshot_pool_size run.
  asio::awaitable<void> run_builder();
  // Builds a group: loads the stored snapshots, or takes one snapshot for all
  // the shapes this sidecar may build (one wait for writers, one REPEATABLE
  // READ transaction, one COPY), catches them up from shared batch reads and
  // stores them, each step one round trip for the whole group. Shapes another
  // sidecar is building, and any the group snapshot failed for, go on alone
  // (build_and_settle). A group of one is built alone (its chunks stream).
  asio::awaitable<void> build_group(std::vector<std::shared_ptr<Shape>> group);
  // The group snapshot of `own` (caller holds their build locks): sets data[i]
  // of each. Nothing is published before it commits.
  asio::awaitable<void> take_group_snapshot(PgConn& c, const std::vector<std::shared_ptr<Shape>>& own,
                                            std::vector<SnapshotData>& data);
  // Takes the snapshot (caller holds the shape's build lock), publishing each
  // chunk to the store as soon as it is complete.
  asio::awaitable<SnapshotData> take_snapshot(PgConn& c, const std::shared_ptr<Shape>& s);
  // Applies every tick after the last one applied; `notified` is the newest
  // tick id a NOTIFY named (0: ask the database).
  asio::awaitable<void> process_new_ticks(PgConn& c, uint64_t notified = 0);
  // One read of the change log, (after, upto]: its batches (costs set) and
  // their bytes, or truncated when the log no longer holds the range.
  struct TickRead {
    uint64_t after = 0, upto = 0;
    std::vector<Batch> batches;
    size_t bytes = 0;
    bool truncated = false;
  };
  asio::awaitable<TickRead> read_ticks(PgConn& c, uint64_t after, uint64_t upto);
  // Applies a read to the store (ShapeStore::apply_all); returns the invalidations.
  asio::awaitable<std::vector<std::pair<std::string, std::string>>> apply_read(std::vector<Batch> batches,
                                                                             uint64_t upto);
  // Catches shapes being created up over (after, upto] of the change log
  // (every shape's position >= after): read a part at a time, each part paced
  // by its decoded bytes (FetchPacer, the budget's fetch_bytes) and applied to
  // every shape (ShapeStore::catch_up) before the next is read, so memory is
  // one part, not the whole range. False when no shape can go on.
  asio::awaitable<bool> catch_up_parts(PgConn& c, const std::vector<std::shared_ptr<Shape>>& shapes, uint64_t after,
                                       uint64_t upto);
  asio::awaitable<void> record_invalidations(PgConn& c, const std::vector<std::pair<std::string, std::string>>& inv);
  asio::awaitable<void> poll_invalidations(PgConn& c);
  // One report; false when there was nothing to report.
  asio::awaitable<bool> report_progress(PgConn& c);
  // Tells the database how far this sidecar has read (it holds the change log
  // from there on); starts over when the log was truncated past it.
  asio::awaitable<void> report_consumer(PgConn& c);
  // Writes due segment files and drops their entries from memory; deletes the
  // segment directories of shapes that are gone. The ticker runs it after
  // every round of ticks; a build runs it too when it leaves the store over
  // its budget (a rebuilt shape's log can be large, and it could not be
  // spilled while it was being built). One pass at a time (spill_mu_).
  asio::awaitable<void> spill_segments();
  std::mutex spill_mu_;
  asio::awaitable<void> restart_after_truncation(PgConn& c, uint64_t horizon);

  asio::io_context& io_;
  const Config& cfg_;
  ShapeStore store_;
  PgPool pool_;
  Coalescer<std::shared_ptr<Shape>> build_queue_;
  Batcher<RegRequest, RegOutcome> registrar_;
  Batcher<QualifiedName, LookupOutcome> lookups_;
  std::atomic<int> builders_{0};
  PgPool reg_pool_;  // registrations, under --registration-timeout; several, so a slow one holds up no other
  std::string inval_cursor_;  // invalidated_at of the last invalidation seen
  std::atomic<bool> db_ready_{false};
  std::atomic<bool> own_ticking_{false};
  std::atomic<bool> row_versions_{false};  // set by the follower from the extension's version
  std::atomic<bool> stopping_{false};
  FetchPacer follow_pacer_;  // the tick follower's span (run_ticker's coroutine only)
  Events events_;
};

}  // namespace shapesync
