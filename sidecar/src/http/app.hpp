// The application: routes HTTP requests to responses (no socket in sight),
// and follows the extension's ticks into the shape store.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <map>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>

#include "config.hpp"
#include "db/pool.hpp"
#include "http/params.hpp"
#include "shapes/store.hpp"

namespace shapesync {

namespace http = boost::beast::http;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// A streamed response (SSE): the session sends the head, then chunks. Returns
// false once the client is gone.
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  virtual asio::awaitable<bool> write_head(Response& head) = 0;
  virtual asio::awaitable<bool> write_chunk(std::string data) = 0;
  virtual asio::awaitable<void> finish() = 0;
};

// A long-poll (or a request for an offset not reached yet) that has nothing to
// answer yet. It keeps only what the answer needs: the request, its parameters
// and the coroutines that parsed it are gone while it waits (App::answer_live).
struct LiveWait {
  std::shared_ptr<Shape> shape;
  RequestOffset offset;
  std::chrono::steady_clock::time_point live_deadline, oob_deadline;
  std::chrono::steady_clock::time_point wake_at;  // set by answer_live: when to look again (its deadline)
  long long cursor = 0;
  std::string req_offset;     // the offset parameter as sent (for the etag)
  std::string origin;         // request header (when has_origin)
  std::string if_none_match;  // request header, empty when absent
  unsigned version = 11;
  bool keep_alive = true;
  bool live = false;
  bool head = false;
  bool has_origin = false;
};

// An SSE stream whose head is sent: what its events need (App::sse_next).
struct SseStream {
  std::shared_ptr<Shape> shape;
  RequestOffset at;
  std::chrono::steady_clock::time_point end_at, last_sent;
  std::chrono::steady_clock::time_point wake_at;  // set by sse_next: when to look again
};

// What an SSE stream does next.
struct SseStep {
  // kRead: the next events are in a segment file; the caller gets them from
  // App::sse_read (I/O, perhaps the database), sends them, then calls again.
  enum class Kind { kWait, kSend, kEnd, kRead } kind = Kind::kWait;
  // kSend: event text (or a keep-alive comment), shared by every client at the same offset
  std::shared_ptr<const std::string> text;
};

// What a request leaves to do once handle() has returned without a response.
struct Deferred {
  std::optional<LiveWait> wait;  // park it: App::answer_live answers it
  std::optional<SseStream> sse;  // send its events: App::sse_next
};

// The answer to a parked request: a Response or, in the common live case, a
// head that App serialized itself and the body every client of the change shares.
struct LiveAnswer {
  Response res;
  std::string head;  // non-empty: send head + body instead of res
  std::shared_ptr<const std::string> body;
  bool keep_alive = true;
};

class App {
 public:
  App(asio::io_context& io, Config cfg);

  // Answers one request. Never throws. Returns nullopt when it streamed the
  // response itself through `out`, or when the request must wait for changes
  // (`later.wait` set: the caller parks it, see answer_live), or when an SSE
  // stream's head is sent (`later.sse` set: the caller sends its events, see
  // sse_next, and nothing of the request stays alive while the stream lasts).
  asio::awaitable<std::optional<Response>> handle(Request req, StreamWriter& out, Deferred& later);
  // An SSE stream's next step: send text (then call again), end the stream, or
  // wait (`waiter` linked to the shape; call again when woken or at st.wake_at).
  // The caller sets st.last_sent after sending. Never throws.
  SseStep sse_next(SseStream& st, Waiter& waiter);
  // An SSE stream ended (or its client is gone): unlinks `waiter`, forgets it.
  void end_sse(Waiter& waiter);

  // An SSE stream whose next events are in a segment file (sse_next said
  // kRead): their event text, with st.at moved past them; nullopt when the
  // stream must end (the shape was retired meanwhile, or the database is
  // unreachable: the client reconnects and learns why). Never throws.
  asio::awaitable<std::optional<std::string>> sse_read(SseStream& st);

  // What a parked request does next.
  enum class LiveStep {
    kWait,    // `waiter` is linked to its shape and w.wake_at set: call again when woken or then
    kAnswer,  // `out` is the answer
    kRead,    // its answer is in a segment file: co_await answer_read(w, out)
  };
  // A parked request: answers it, or links `waiter` to its shape. Never throws.
  LiveStep answer_live(LiveWait& w, Waiter& waiter, LiveAnswer& out);
  // The answer of a parked request that answer_live() said kRead of, read
  // from its segment file (rebuilt from the change log when it is gone).
  // Never throws.
  asio::awaitable<void> answer_read(LiveWait& w, LiveAnswer& out);
  // A parked request whose client went away: unlinks it and forgets it.
  void abandon_live(LiveWait& w, Waiter& waiter);
  // Open client connections, for /metrics (set by the server's owner).
  void set_connection_gauge(std::function<size_t()> f) { connections_ = std::move(f); }

  // Follows ticks forever (LISTEN, safety-net polling, own ticking without the
  // extension's worker); reconnects after losing the database.
  asio::awaitable<void> run_ticker();

  // Reports the shapes' latest offsets to the database (shapesync.shapes) on its
  // own connection, at most once per second, in one statement for every shape
  // that grew since the last report; never on the tick follower's connection.
  asio::awaitable<void> run_reporter();

  bool db_ready() const { return db_ready_.load(); }
  // Shutdown: waiting live requests are answered now (up-to-date), no new waits.
  void stop();
  bool stopping() const { return stopping_.load(); }
  ShapeStore& store() { return store_; }
  const Config& config() const { return cfg_; }

 private:
  asio::awaitable<std::optional<Response>> handle_shape(const Request& req, std::string_view query,
                                                       StreamWriter& out, Deferred& later);
  // Answers at once, or sets `wait` and returns nullopt, or (when the entries
  // to send are in a segment file) sets `unread` and returns nullopt.
  std::optional<Response> serve_shape(const Request& req, const ShapeParams& p, std::shared_ptr<Shape> s,
                                      std::optional<LiveWait>& wait, LogRead& unread);
  // The answer to a parked request, built from what it kept.
  Response parked_response(const LiveWait& w, const LogRead& r, bool rotated, const std::shared_ptr<Shape>& next);
  // The head of a live 200 with data, serialized directly (what shape_headers
  // and shape_response would produce for it).
  std::string live_head(const LiveWait& w, const Shape& s, const LogRead& r, const std::string& etag,
                        size_t body_size) const;
  Response shape_response(const Request& req, const ShapeParams& p, const Shape& s, const LogRead& r) const;
  Response metrics(const Request& req);
  // Sends the head of an SSE stream and sets `sse`, or answers at once.
  // A subset snapshot (subset__* parameters or POST /v1/shape); in http/subset.cpp.
  asio::awaitable<Response> serve_subset(const Request& req, const QueryMap& q, const ShapeParams& p);
  // Waits while a shape is being created until `p` can be served (a snapshot
  // chunk already streamed, or the shape ready); false when it failed or timed out.
  asio::awaitable<bool> wait_servable(const std::shared_ptr<Shape>& s, const ShapeParams& p);
  asio::awaitable<std::optional<Response>> serve_sse(const Request& req, const ShapeParams& p,
                                                     std::shared_ptr<Shape> s, StreamWriter& out,
                                                     std::optional<SseStream>& sse);
  void shape_headers(const Request& req, const ShapeParams& p, const Shape& s, const LogRead& r, Response& res) const;
  // The 400 message for a table that does not exist (or is not tracked) now;
  // nullopt when it does, or when the database cannot tell.
  asio::awaitable<std::optional<std::string>> missing_table(const QualifiedName& name);
  // The answer when a shape could not be served: 400 for a table that is gone
  // (dropped while the shape was created), else a retryable 503.
  asio::awaitable<Response> not_servable(const Request& req, const ShapeParams& p);
  // Returns the ready active shape for the definition, creating it if needed;
  // null with `err` set on failure.
  asio::awaitable<std::shared_ptr<Shape>> get_shape(const ShapeParams& p, const std::string& def_key,
                                                    std::shared_ptr<const TableInfo>& table, Response& err,
                                                    const Request& req);
  // Registers the shape in the database (validating and canonicalising its
  // WHERE) and begins it in the store; null with `err` set on failure.
  asio::awaitable<std::shared_ptr<Shape>> register_shape(const ShapeParams& p, ShapeDef def, const std::string& raw_key,
                                                         Response& err, const Request& req);
  // Loads (or takes and stores) the shape's snapshot and catches the shape up.
  asio::awaitable<void> build_shape(std::shared_ptr<Shape> s);
  // build_shape in the background; on failure fails the shape (and retires it
  // in the database when nobody can ever serve it).
  asio::awaitable<void> build_and_settle(std::shared_ptr<Shape> s);
  struct SnapshotData {
    bool building = false;  // claimed by a builder, not stored yet (nothing else is set)
    PgSnapshot snap;
    std::string snap_text;
    uint64_t start_tick = 0;
    long long rows = 0;
    std::vector<std::shared_ptr<const std::string>> chunks;
  };
  // Takes the snapshot (caller holds the shape's build lock), publishing each
  // chunk to the store as soon as it is complete.
  asio::awaitable<SnapshotData> take_snapshot(PgConn& c, const std::shared_ptr<Shape>& s);
  asio::awaitable<void> store_snapshot(PgConn& c, const Shape& s, const SnapshotData& d);
  asio::awaitable<std::optional<SnapshotData>> load_snapshot(PgConn& c, const std::string& handle);
  asio::awaitable<Response> delete_shape(const Request& req, std::string_view query);
  // Applies every tick after the last one applied; `notified` is the newest
  // tick id a NOTIFY named (0: ask the database).
  asio::awaitable<void> process_new_ticks(PgConn& c, uint64_t notified = 0);
  asio::awaitable<void> record_invalidations(PgConn& c, const std::vector<std::pair<std::string, std::string>>& inv);
  asio::awaitable<void> poll_invalidations(PgConn& c);
  // One report; false when there was nothing to report.
  asio::awaitable<bool> report_progress(PgConn& c);
  // Tells the database how far this sidecar has read (it holds the change log
  // from there on); starts over when the log was truncated past it.
  asio::awaitable<void> report_consumer(PgConn& c);
  // Writes due segment files and drops their entries from memory; deletes the
  // segment directories of shapes that are gone.
  asio::awaitable<void> spill_segments();
  // Fills r.entries from r.segment's file, rebuilding a missing or damaged
  // file from the change log. 0 when done; 409 when the shape had to be
  // retired (the log no longer holds it); 503 when the database is unreachable.
  asio::awaitable<int> fill_segment(const std::shared_ptr<Shape>& s, LogRead& r);
  asio::awaitable<void> restart_after_truncation(PgConn& c, uint64_t horizon);

  // Hostile input and least privilege (http/app_guard.cpp).
  // The answer to a database error that is not the client's: 503 naming the
  // missing privilege for a configuration error (logged, rate-limited, with
  // the GRANT to run), 503 database_unreachable, or 503 "please retry".
  Response pg_failure_response(const Request& req, const PgError& e, std::string_view doing,
                               std::string_view privilege) const;
  static constexpr int kConfigurationRetryAfter = 30;
  void log_configuration_error(const PgError& e, std::string_view doing, std::string_view privilege) const;
  // /metrics: open, or only with --metrics-token (else --secret) as a Bearer
  // token or ?token= / ?secret=.
  bool metrics_authorized(const Request& req, std::string_view query) const;
  Response unauthorized_metrics(const Request& req) const;

  void common_headers(const Request& req, Response& res) const;
  Response json_response(const Request& req, http::status st, std::string body) const;
  Response error_400(const Request& req, const ValidationErrors& e) const;
  Response error_503(const Request& req, std::string body, int retry_after) const;
  Response must_refetch(const Request& req, const std::string& new_handle) const;

  asio::io_context& io_;
  Config cfg_;
  ShapeStore store_;
  PgPool pool_;
  PgPool reg_pool_;  // registrations, under --registration-timeout; several, so a slow one holds up no other
  std::map<std::string, std::string> aliases_;  // request definition → canonical key (under store mutex)
  std::string inval_cursor_;                    // invalidated_at of the last invalidation seen
  std::atomic<bool> db_ready_{false};
  std::atomic<bool> own_ticking_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<int> initial_requests_{0};
  std::atomic<bool> reporting_{true};  // the extension has report_shape()
  std::atomic<bool> consumer_reporting_{true};  // the extension has consumer_report()
  bool report_set_based_ = true;       // the extension has report_shapes() (only run_reporter uses it)
  std::atomic<int> existing_requests_{0};
  std::atomic<uint64_t> request_seq_{0};
  std::function<size_t()> connections_;
};

std::string definition_key(const ShapeParams& p);

}  // namespace shapesync
