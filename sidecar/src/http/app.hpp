// The application: routes HTTP requests to responses (no socket in sight).
// Shapes come from a ShapeSource (shapes/service.hpp), which also follows the
// extension's ticks; the session code in net/ parks what handle() defers.
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
#include "http/auth_gate.hpp"
#include "http/params.hpp"
#include "metrics/sidecar.hpp"
#include "shapes/service.hpp"
#include "writes/service.hpp"

namespace shapesync {

namespace metrics {
class Monitor;
}

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
  // kSend of changes (not a keep-alive): a live delivery; the tick time of its
  // oldest change (metrics::ProcessMetrics::delivered, once written)
  bool delivery = false;
  int64_t commit_us = 0;
};

// What a request leaves to do once handle() has returned without a response.
struct Deferred {
  std::optional<LiveWait> wait;  // park it: App::answer_live answers it
  std::optional<SseStream> sse;  // send its events: App::sse_next
  // The response is a live delivery (changes for a live request answered at
  // once): once written, metrics::ProcessMetrics::delivered(commit_us).
  bool delivery = false;
  int64_t commit_us = 0;
  // For shapesync_http_requests_total (set by App::handle).
  metrics::Route route = metrics::Route::kOther;
  metrics::Mode mode = metrics::Mode::kNone;
};

// The answer to a parked request: a Response or, in the common live case, a
// head that App serialized itself and the body every client of the change shares.
struct LiveAnswer {
  Response res;
  std::string head;  // non-empty: send head + body instead of res
  std::shared_ptr<const std::string> body;
  bool keep_alive = true;
  // A live delivery: once written, metrics::ProcessMetrics::delivered(commit_us).
  bool delivery = false;
  int64_t commit_us = 0;
  size_t body_bytes = 0;  // of `body` (head + body are sent), for shapesync_sent_bytes_total
};

class App {
 public:
  // `gate`: the auth gate (null, or one without keys: every request has the
  // sidecar's own rights).
  explicit App(ShapeSource& shapes, std::shared_ptr<AuthGate> gate = nullptr);

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
  void end_sse(SseStream& st, Waiter& waiter);

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
  // Reports and dashboard data (GET /dashboard/data answers 503 without one).
  void set_monitor(metrics::Monitor* m) { monitor_ = m; }
  // Where POST /v1/mutations writes (none: the endpoint answers 404).
  void set_writer(MutationSink* w) { writer_ = w; }

  // Shutdown: waiting live requests are answered now (up-to-date), no new waits.
  void stop();
  const Config& config() const { return cfg_; }

 private:
  // handle() without the request counting.
  asio::awaitable<std::optional<Response>> route(Request req, StreamWriter& out, Deferred& later);
  asio::awaitable<std::optional<Response>> handle_shape(const Request& req, std::string_view query,
                                                       StreamWriter& out, Deferred& later, const AuthDecision& who);
  // The answer to a request the auth gate stopped (401 or 403).
  Response auth_refusal(const Request& req, const AuthRefusal& r) const;
  // Cache-Control for a shape response: "public, …", or "private, …" when auth
  // is on and row-level security applied to the shape (its rows are per user).
  std::string cache_control(const Shape& s, std::string value) const;
  // Answers at once, or sets `wait` and returns nullopt, or (when the entries
  // to send are in a segment file) sets `unread` and returns nullopt.
  std::optional<Response> serve_shape(const Request& req, const ShapeParams& p, std::shared_ptr<Shape> s,
                                      std::optional<LiveWait>& wait, LogRead& unread, int64_t& commit_us);
  // The answer to a parked request, built from what it kept.
  Response parked_response(const LiveWait& w, const ShapeRead& sr);
  // The answer to a shape that could not be had.
  Response error_response(const Request& req, const ShapeError& e) const;
  // The head of a live 200 with data, serialized directly (what shape_headers
  // and shape_response would produce for it).
  std::string live_head(const LiveWait& w, const Shape& s, const LogRead& r, const std::string& etag,
                        size_t body_size) const;
  Response shape_response(const Request& req, const ShapeParams& p, const Shape& s, const LogRead& r) const;
  Response metrics(const Request& req);
  // POST /v1/mutations (and its CORS preflight); in http/mutations.cpp.
  asio::awaitable<Response> handle_mutations(const Request& req, std::string_view query);
  // The 401 of a request without the right --secret (nullopt: none is set, or it matches).
  std::optional<Response> secret_refusal(const Request& req, std::string_view query) const;
  // GET /dashboard, /dashboard/data (http/monitoring.cpp).
  Response dashboard(const Request& req) const;
  asio::awaitable<Response> dashboard_data(const Request& req);
  // A parked request or SSE stream begins or ends waiting on `s`.
  void live_begin(Shape& s, metrics::LiveKind k);
  void live_end(Shape& s, metrics::LiveKind k);
  // A subset snapshot (subset__* parameters or POST /v1/shape); in http/subset_serve.cpp.
  asio::awaitable<Response> serve_subset(const Request& req, const QueryMap& q, const ShapeParams& p,
                                         const Caller& who);
  // Sends the head of an SSE stream and sets `sse` (after sending what is in
  // segment files), or answers at once (409, 400), or nullopt when the client is gone.
  asio::awaitable<std::optional<Response>> serve_sse(const Request& req, const ShapeParams& p,
                                                     std::shared_ptr<Shape> s, StreamWriter& out,
                                                     std::optional<SseStream>& sse);
  void shape_headers(const Request& req, const ShapeParams& p, const Shape& s, const LogRead& r, Response& res) const;
  // DELETE /v1/shape (--allow-shape-deletion): by handle, or the shape a request definition names.
  asio::awaitable<Response> delete_shape(const Request& req, std::string_view query, const AuthDecision& who);

  // Hostile input and least privilege (http/app_guard.cpp).
  // The answer to a database error that is not the client's: 503 naming the
  // missing privilege for a configuration error (logged, rate-limited, with
  // the GRANT to run), 503 database_unreachable, or 503 "please retry".
  Response pg_failure_response(const Request& req, const PgError& e, std::string_view doing,
                               std::string_view privilege) const;
  static constexpr int kConfigurationRetryAfter = 30;
  // /metrics: open, or only with --metrics-token (else --secret) as a Bearer
  // token or ?token= / ?secret=.
  bool metrics_authorized(const Request& req, std::string_view query) const;
  Response unauthorized_metrics(const Request& req) const;

  void common_headers(const Request& req, Response& res) const;
  Response json_response(const Request& req, http::status st, std::string body) const;
  Response error_400(const Request& req, const ValidationErrors& e) const;
  Response error_503(const Request& req, std::string body, int retry_after) const;
  Response must_refetch(const Request& req, const std::string& new_handle) const;

  ShapeSource& shapes_;
  ShapeStore& store_;
  const Config& cfg_;
  std::shared_ptr<AuthGate> gate_;
  bool auth_on_ = false;  // gate_ has keys: responses vary by Authorization
  std::atomic<int> initial_requests_{0};
  std::atomic<int> existing_requests_{0};
  std::atomic<uint64_t> request_seq_{0};
  std::function<size_t()> connections_;
  metrics::ProcessMetrics& pm_;
  metrics::Monitor* monitor_ = nullptr;
  MutationSink* writer_ = nullptr;
};

std::string definition_key(const ShapeParams& p);

}  // namespace shapesync
