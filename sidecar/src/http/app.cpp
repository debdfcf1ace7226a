// Routes, the shape endpoint, live answers (parked long-polls, SSE events).
#include "http/app.hpp"

#include <filesystem>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "db/changes.hpp"
#include "db/copy_text.hpp"
#include "db/errors.hpp"
#include "http/subset.hpp"
#include "http/validate.hpp"
#include "util/log.hpp"
#include "db/text_array.hpp"

namespace shapesync {

namespace {

constexpr std::string_view kExposeHeaders =
    "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,electric-up-to-date,"
    "electric-internal-known-error,retry-after";

std::string random_hex(size_t n) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(n, '0');
  for (auto& c : s) c = kHex[rng() & 15];
  return s;
}

int random_int(int lo, int hi) {
  thread_local std::mt19937 rng{std::random_device{}()};
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

long long unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Splits an If-None-Match header and tells whether etag is among its values.
bool etag_matches(std::string_view header, const std::string& etag) {
  size_t i = 0;
  while (i <= header.size()) {
    size_t c = header.find(',', i);
    if (c == std::string_view::npos) c = header.size();
    std::string_view v = header.substr(i, c - i);
    while (!v.empty() && (v.front() == ' ' || v.front() == '"')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '"')) v.remove_suffix(1);
    if (v.substr(0, 2) == "W/") v.remove_prefix(2);
    while (!v.empty() && v.front() == '"') v.remove_prefix(1);
    if (v == etag) return true;
    i = c + 1;
  }
  return false;
}

}  // namespace

std::string definition_key(const ShapeParams& p) {
  std::string k = quote_ident(p.table.schema) + "." + quote_ident(p.table.name);
  if (p.where) {
    k += "|where=";
    k += *p.where;
    for (auto& [n, v] : p.params) k += "|$" + std::to_string(n) + "=" + v;
  }
  k += "|columns=";
  if (p.columns)
    for (auto& c : *p.columns) k += quote_ident(c) + ",";
  k += p.replica == Replica::kFull ? "|replica=full" : "|replica=default";
  k += p.log == LogMode::kChangesOnly ? "|log=changes_only" : "|log=full";
  return k;
}

App::App(ShapeSource& shapes, std::shared_ptr<AuthGate> gate)
    : shapes_(shapes),
      store_(shapes.store()),
      cfg_(shapes.config()),
      gate_(std::move(gate)),
      auth_on_(gate_ && gate_->enabled()),
      pm_(metrics::process_metrics()) {}

Response App::auth_refusal(const Request& req, const AuthRefusal& r) const {
  Response res = json_response(req, static_cast<http::status>(r.status), r.body);
  if (!r.www_authenticate.empty()) res.set(http::field::www_authenticate, r.www_authenticate);
  res.set(http::field::cache_control, "no-store");
  res.set("surrogate-control", "no-store");
  return res;
}

std::string App::cache_control(const Shape& s, std::string value) const {
  // Another user's rows must never come out of a shared cache: with auth on,
  // every response varies by Authorization (common_headers), and those of a
  // shape under row-level security are private to the user's own cache.
  if (auth_on_ && s.def.policy_applied && value.compare(0, 6, "public") == 0) {
    value.replace(0, 6, "private");
    if (auto sm = value.find(", s-maxage="); sm != std::string::npos) {
      auto end = value.find(',', sm + 2);
      value.erase(sm, end == std::string::npos ? std::string::npos : end - sm);
    }
  }
  return value;
}

void App::stop() { shapes_.stop(); }

void App::common_headers(const Request& req, Response& res) const {
  res.set(http::field::server, "shapesyncd/" SHAPESYNC_VERSION);
  res.set("electric-server", "shapesync/" SHAPESYNC_VERSION);
  res.set("x-request-id", random_hex(16));
  auto origin = req.find(http::field::origin);
  res.set(http::field::access_control_allow_origin,
          origin != req.end() ? std::string(origin->value()) : std::string("*"));
  res.set(http::field::access_control_expose_headers, kExposeHeaders);
  res.set(http::field::access_control_allow_methods, "GET, POST, HEAD, DELETE, OPTIONS");
  if (origin != req.end()) res.set(http::field::vary, auth_on_ ? "Origin, Authorization" : "Origin");
  else if (auth_on_) res.set(http::field::vary, "Authorization");
}

Response App::json_response(const Request& req, http::status st, std::string body) const {
  Response res{st, req.version()};
  common_headers(req, res);
  res.set(http::field::content_type, "application/json; charset=utf-8");
  res.body() = std::move(body);
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  return res;
}

std::optional<Response> App::secret_refusal(const Request& req, std::string_view query) const {
  if (cfg_.secret.empty()) return std::nullopt;
  QueryMap q = parse_query(query);
  auto it = q.find("secret");
  if (it == q.end()) it = q.find("api_secret");
  if (it != q.end() && it->second == cfg_.secret) return std::nullopt;
  metrics::count_auth_failure(it == q.end() ? "secret_missing" : "secret_wrong");
  Response res =
      json_response(req, http::status::unauthorized, R"({"message":"Unauthorized - Invalid API secret"})");
  res.set(http::field::cache_control, "no-store");
  res.set("surrogate-control", "no-store");
  return res;
}

Response App::error_400(const Request& req, const ValidationErrors& e) const {
  Response res = json_response(req, http::status::bad_request, e.body());
  res.set(http::field::cache_control, "no-store");
  res.set("surrogate-control", "no-store");
  return res;
}

Response App::error_503(const Request& req, std::string body, int retry_after) const {
  Response res = json_response(req, http::status::service_unavailable, std::move(body));
  res.set(http::field::cache_control, "no-store");
  res.set("surrogate-control", "no-store");
  res.set(http::field::retry_after, std::to_string(retry_after));
  res.set("electric-internal-known-error", "true");
  return res;
}

Response App::must_refetch(const Request& req, const std::string& new_handle) const {
  Response res = json_response(req, http::status::conflict, std::string(kMustRefetchBody));
  if (!new_handle.empty()) {
    res.set("electric-handle", new_handle);
    res.set(http::field::cache_control, "public, max-age=60, must-revalidate");
  } else {
    res.set(http::field::cache_control, "public, max-age=1, must-revalidate");
  }
  return res;
}

Response App::error_response(const Request& req, const ShapeError& e) const {
  switch (e.kind) {
    case ShapeError::Kind::kInvalid:
    case ShapeError::Kind::kForbidden: {
      ValidationErrors v;
      for (auto& [field, msg] : e.fields) v.add(field, msg);
      if (e.kind == ShapeError::Kind::kInvalid) return error_400(req, v);
      Response res = json_response(req, http::status::forbidden, v.body());
      res.set(http::field::cache_control, "no-store");
      return res;
    }
    case ShapeError::Kind::kUnavailable:
      return error_503(req, e.body, e.retry_after);
    case ShapeError::Kind::kDatabase:
      break;
  }
  return pg_failure_response(req, *e.db, e.doing, e.privilege);
}

asio::awaitable<std::optional<Response>> App::handle(Request req, StreamWriter& out, Deferred& later) {
  std::optional<Response> res = co_await route(std::move(req), out, later);
  // A parked request is counted when it is answered (answer_live, answer_read).
  if (res)
    pm_.count_request(later.route, res->result_int(), later.mode);
  else if (!later.wait)
    pm_.count_request(later.route, 200, later.sse ? metrics::Mode::kLive : later.mode);  // SSE, streamed
  co_return res;
}

asio::awaitable<std::optional<Response>> App::route(Request req, StreamWriter& out, Deferred& later) {
  std::string_view target = req.target();
  auto qpos = target.find('?');
  std::string path = url_decode(target.substr(0, qpos));
  std::string_view query = qpos == std::string_view::npos ? std::string_view() : target.substr(qpos + 1);
  // Path normalisation: collapse repeated slashes, drop a trailing slash.
  std::string norm;
  for (char c : path)
    if (!(c == '/' && !norm.empty() && norm.back() == '/')) norm += c;
  if (norm.size() > 1 && norm.back() == '/') norm.pop_back();
  later.route = norm == "/v1/shape"         ? metrics::Route::kShape
                : norm == "/v1/mutations"   ? metrics::Route::kMutations
                : norm == "/v1/health"      ? metrics::Route::kHealth
                : norm == "/metrics"        ? metrics::Route::kMetrics
                : norm == "/dashboard"      ? metrics::Route::kDashboard
                : norm == "/dashboard/data" ? metrics::Route::kDashboardData
                                            : metrics::Route::kOther;

  try {
    if (norm == "/v1/shape") {
      if (req.method() == http::verb::options) {
        Response res{http::status::no_content, req.version()};
        common_headers(req, res);
        res.set(http::field::access_control_max_age, "86400");
        std::string allowed;
        auto rh = req.find(http::field::access_control_request_headers);
        if (rh != req.end()) {
          std::string v(rh->value());
          for (auto h : {"if-none-match", "traceparent", "authorization", "content-type"})
            if (v.find(h) != std::string::npos) allowed += allowed.empty() ? h : std::string(",") + h;
        }
        if (!allowed.empty()) res.set(http::field::access_control_allow_headers, allowed);
        res.keep_alive(req.keep_alive());
        res.prepare_payload();
        co_return res;
      }
      if (auto refused = secret_refusal(req, query)) co_return std::move(*refused);
      // Who asks (docs/auth.md): a verified bearer token and the role it
      // selects, checked on every request, live ones and SSE included.
      static const AuthDecision kOwnRights;  // --insecure: the sidecar's own rights
      std::shared_ptr<const AuthDecision> decided;
      if (auth_on_) {
        decided = gate_->decide(req.base());
        if (decided->refusal) co_return auth_refusal(req, *decided->refusal);
      }
      const AuthDecision& who = decided ? *decided : kOwnRights;
      if (req.method() == http::verb::get || req.method() == http::verb::head) {
        auto res = co_await handle_shape(req, query, out, later, who);
        if (res && req.method() == http::verb::head) {
          res->body().clear();
          res->prepare_payload();
        }
        co_return res;
      }
      if (req.method() == http::verb::post) {  // subset snapshot, parameters in the JSON body
        auto merged = merge_post_body(parse_query(query), req.body());
        if (auto* e = std::get_if<BodyError>(&merged)) {
          Response res = json_response(req, static_cast<http::status>(e->status), e->body);
          res.set(http::field::cache_control, "no-store");
          co_return res;
        }
        std::string merged_query = encode_query(std::get<QueryMap>(merged));
        co_return co_await handle_shape(req, merged_query, out, later, who);
      }
      if (req.method() == http::verb::delete_) {
        if (!cfg_.allow_shape_deletion)
          co_return json_response(req, http::status::method_not_allowed, R"({"message":"DELETE not allowed"})");
        co_return co_await delete_shape(req, query, who);
      }
      co_return json_response(req, http::status::method_not_allowed, R"({"message":"Method not allowed"})");
    }
    if (norm == "/v1/mutations") co_return co_await handle_mutations(req, query);
    if (norm == "/v1/health") {
      bool ok = shapes_.db_ready();
      Response res = json_response(req, ok ? http::status::ok : http::status::accepted,
                                   ok ? R"({"status":"active"})" : R"({"status":"waiting"})");
      res.set(http::field::cache_control, "no-cache, no-store, must-revalidate");
      co_return res;
    }
    if (norm == "/metrics" || norm == "/dashboard" || norm == "/dashboard/data") {
      bool allowed = metrics_authorized(req, query);
      // With auth on and no token of its own, these take a valid JWT (any role).
      if (allowed && auth_on_ && cfg_.metrics_token.empty() && cfg_.secret.empty())
        allowed = gate_->has_valid_token(req.base());
      if (!allowed) {
        metrics::count_auth_failure("metrics_token");
        co_return unauthorized_metrics(req);
      }
      if (norm == "/metrics") co_return metrics(req);
      if (norm == "/dashboard") co_return dashboard(req);
      co_return co_await dashboard_data(req);
    }
    if (norm == "/" || norm.empty()) {
      Response res{http::status::ok, req.version()};
      common_headers(req, res);
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      co_return res;
    }
    Response res{http::status::not_found, req.version()};
    common_headers(req, res);
    res.set(http::field::content_type, "text/plain");
    res.body() = "Not found";
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    co_return res;
  } catch (const PgError& e) {
    co_return pg_failure_response(req, e, "serving a request", "");
  } catch (const std::exception& e) {
    log_error("internal error: ", e.what());
    co_return json_response(req, http::status::internal_server_error, R"({"error":"Internal server error"})");
  }
}

asio::awaitable<std::optional<Response>> App::handle_shape(const Request& req, std::string_view query,
                                                           StreamWriter& out, Deferred& later,
                                                           const AuthDecision& who) {
  QueryMap q = parse_query(query);
  // Nothing with a NUL byte or invalid UTF-8 goes further (libpq takes C strings).
  if (auto bad = check_param_text(q)) co_return error_400(req, *bad);
  auto parsed = parse_shape_params(q);
  if (auto* e = std::get_if<ValidationErrors>(&parsed)) co_return error_400(req, *e);
  ShapeParams p = std::get<ShapeParams>(std::move(parsed));
  // A shape-scoped token serves exactly its shape (subsets of it included).
  if (who.shape_claim)
    if (std::string why = shape_claim_mismatch(*who.shape_claim, p); !why.empty())
      co_return auth_refusal(req, AuthRefusal{403, "", nlohmann::json({{"message", "Forbidden"},
                                                                        {"errors", {{"shape", {why}}}}})
                                                           .dump(-1, ' ', false,
                                                                 nlohmann::json::error_handler_t::replace)});
  // Admission control (Electric's ELECTRIC_MAX_CONCURRENT_REQUESTS).
  bool initial = p.offset.kind == RequestOffset::Kind::kBeforeAll;
  later.mode = initial ? metrics::Mode::kInitial
               : (p.live || p.live_sse) ? metrics::Mode::kLive
                                        : metrics::Mode::kCatchup;
  auto& counter = initial ? initial_requests_ : existing_requests_;
  int limit = initial ? cfg_.max_initial_requests : cfg_.max_existing_requests;
  if (counter.fetch_add(1) >= limit) {
    counter.fetch_sub(1);
    Response res = error_503(req,
                             std::string(R"({"code":"concurrent_request_limit_exceeded","message":"Concurrent )") +
                                 (initial ? "initial" : "existing") + " request limit exceeded (limit: " +
                                 std::to_string(limit) + R"(), please retry"})",
                             random_int(5, 10));
    co_return res;
  }
  struct Release {
    std::atomic<int>* c;
    ~Release() {
      if (c) c->fetch_sub(1);
    }
  } release{&counter};
  if (req.method() == http::verb::post || is_subset_request(q)) co_return co_await serve_subset(req, q, p, who.caller);
  std::string def_key = definition_key(p) + who.caller.key;
  std::shared_ptr<Shape> shape;
  // A shape handed out while its rebuild was under way (its stored snapshot
  // is served meanwhile) may then fail to build: retired (its changes are no
  // longer in the change log) or rotated. Its definition is looked up again,
  // so a request with its handle gets 409 and the new handle, not 503.
  for (int attempt = 0;; ++attempt) {
    ShapeOutcome got = co_await shapes_.get_shape(p, def_key, who.caller);
    if (!got.shape) co_return error_response(req, got.error);
    shape = std::move(got.shape);
    shape->requests.fetch_add(1, std::memory_order_relaxed);
    shape->last_used_us.store(metrics::unix_now_us(), std::memory_order_relaxed);
    if (p.offset.kind == RequestOffset::Kind::kAt && *p.handle != shape->handle)
      co_return must_refetch(req, shape->handle);
    if (co_await shapes_.wait_servable(shape, p)) break;
    ShapeStatus st = store_.status(*shape);
    if (attempt == 2 || !(st.failed || st.invalid)) co_return error_response(req, co_await shapes_.not_servable(p));
  }
  if (p.live_sse) {
    auto res = co_await serve_sse(req, p, shape, out, later.sse);
    if (later.sse) {
      release.c = nullptr;  // end_sse() releases it
      live_begin(*later.sse->shape, metrics::LiveKind::kSse);
    }
    co_return res;
  }
  LogRead unread;
  auto res = serve_shape(req, p, shape, later.wait, unread, later.commit_us);
  if (later.wait) {
    release.c = nullptr;  // answer_live() or abandon_live() releases it
    live_begin(*later.wait->shape, metrics::LiveKind::kLongPoll);
  }
  // changes for a live request, answered at once: a live delivery
  if (res && p.live && res->result() == http::status::ok && req.method() != http::verb::head) later.delivery = true;
  if (res || later.wait) co_return res;
  // The entries to send are in a segment file: read outside the lock (rebuilt
  // from the change log when the file is gone). It has data: never parks.
  FillResult st = co_await shapes_.fill_segment(shape, unread);
  if (st == FillResult::kRetired) co_return must_refetch(req, "");
  if (st == FillResult::kUnreachable)
    co_return error_503(req, R"({"message":"Cannot reach the database to rebuild this part of the shape log"})", 5);
  if (p.live && req.method() != http::verb::head) {
    later.delivery = true;
    later.commit_us = store_.commit_time_us(unread.first);
  }
  Response filled = shape_response(req, p, *shape, unread);
  if (req.method() == http::verb::head) {
    filled.body().clear();
    filled.prepare_payload();
  }
  co_return filled;
}

std::optional<Response> App::serve_shape(const Request& req, const ShapeParams& p, std::shared_ptr<Shape> s,
                                         std::optional<LiveWait>& wait, LogRead& unread, int64_t& commit_us) {
  ShapeRead sr = store_.read_request(s, p.offset, p.live);
  // Rotated (TRUNCATE, DDL, DELETE, a filter error): point the client at the
  // replacement when one is ready; it re-syncs from offset -1 either way.
  if (sr.rotated) return must_refetch(req, sr.next_handle);
  LogRead& r = sr.r;
  if (r.needs_segment()) {
    unread = std::move(r);
    return std::nullopt;
  }
  if ((r.out_of_bounds || (p.live && !r.has_data())) && !shapes_.stopping()) {
    // Nothing to say yet: keep what the answer needs, let go of the rest.
    auto now = std::chrono::steady_clock::now();
    LiveWait& w = wait.emplace();
    w.shape = std::move(s);
    w.offset = p.offset;
    w.live_deadline = now + std::chrono::milliseconds(cfg_.long_poll_timeout_ms);
    w.oob_deadline = now + std::chrono::milliseconds(cfg_.long_poll_timeout_ms / 2);
    w.cursor = p.cursor;
    if (auto it = req.target().find("offset="); it != std::string_view::npos) {
      auto v = req.target().substr(it + 7);
      w.req_offset = std::string(v.substr(0, v.find('&')));
    }
    if (auto o = req.find(http::field::origin); o != req.end()) {
      w.origin = std::string(o->value());
      w.has_origin = true;
    }
    if (auto inm = req.find(http::field::if_none_match); inm != req.end()) w.if_none_match = std::string(inm->value());
    w.version = req.version();
    w.keep_alive = req.keep_alive();
    w.live = p.live;
    w.head = req.method() == http::verb::head;
    return std::nullopt;
  }
  if (r.out_of_bounds) {
    ValidationErrors e;
    e.add("offset", "out of bounds for this shape");
    return error_400(req, e);
  }
  commit_us = r.commit_us;
  return shape_response(req, p, *s, r);
}

Response App::shape_response(const Request& req, const ShapeParams& p, const Shape& s, const LogRead& r) const {
  Response res{http::status::ok, req.version()};
  shape_headers(req, p, s, r, res);
  std::string etag(res[http::field::etag]);
  etag = etag.substr(1, etag.size() - 2);
  res.keep_alive(req.keep_alive());
  auto inm = req.find(http::field::if_none_match);
  if (inm != req.end() && etag_matches(inm->value(), etag)) {
    res.result(http::status::not_modified);
    res.erase("electric-schema");
    res.body().clear();
    res.prepare_payload();
    return res;
  }
  res.body() = r.body();
  res.prepare_payload();
  return res;
}

std::string App::live_head(const LiveWait& w, const Shape& s, const LogRead& r, const std::string& etag,
                           size_t body_size) const {
  std::string h;
  h.reserve(640 + s.handle.size() + etag.size() + w.origin.size());
  h += w.version == 10 ? "HTTP/1.0 200 OK\r\n" : "HTTP/1.1 200 OK\r\n";
  h += "Server: shapesyncd/" SHAPESYNC_VERSION "\r\nelectric-server: shapesync/" SHAPESYNC_VERSION "\r\nx-request-id: ";
  h += random_hex(16);
  h += "\r\nAccess-Control-Allow-Origin: ";
  h += w.has_origin ? std::string_view(w.origin) : std::string_view("*");
  h += "\r\nAccess-Control-Expose-Headers: ";
  h += kExposeHeaders;
  h += "\r\nAccess-Control-Allow-Methods: GET, POST, HEAD, DELETE, OPTIONS\r\n";
  if (w.has_origin) h += auth_on_ ? "Vary: Origin, Authorization\r\n" : "Vary: Origin\r\n";
  else if (auth_on_) h += "Vary: Authorization\r\n";
  h += "Content-Type: application/json; charset=utf-8\r\nelectric-handle: ";
  h += s.handle;
  h += "\r\nelectric-offset: ";
  h += r.end.to_string();
  if (r.up_to_date) h += "\r\nelectric-up-to-date: ";
  h += "\r\nelectric-cursor: ";
  h += std::to_string(next_cursor(unix_now(), cfg_.long_poll_timeout_ms / 1000, w.cursor, random_int(1, 3600)));
  h += "\r\nelectric-has-data: true\r\nETag: \"";
  h += etag;
  h += "\"\r\nCache-Control: ";
  h += auth_on_ && s.def.policy_applied ? "private" : "public";
  h += ", max-age=5, stale-while-revalidate=5\r\n";
  if (w.version == 10 && w.keep_alive) h += "Connection: keep-alive\r\n";
  if (w.version != 10 && !w.keep_alive) h += "Connection: close\r\n";
  h += "Content-Length: ";
  h += std::to_string(body_size);
  h += "\r\n\r\n";
  return h;
}

App::LiveStep App::answer_live(LiveWait& w, Waiter& waiter, LiveAnswer& out) {
  // An offset beyond the log is reported after half the long-poll timeout
  // (live or not); a live request without news waits the whole timeout.
  bool stopping = shapes_.stopping();
  auto keep_waiting = [&](const LogRead& r) {
    w.wake_at = r.out_of_bounds ? std::min(w.oob_deadline, w.live_deadline) : w.live_deadline;
    bool timed_out = stopping || std::chrono::steady_clock::now() >= w.wake_at;
    return (r.out_of_bounds || (w.live && !r.has_data())) && !timed_out;
  };
  std::optional<ShapeRead> sr = store_.read_or_wait(w.shape, w.offset, w.live, waiter, keep_waiting);
  if (!sr) return LiveStep::kWait;
  // The change that woke it went past a chunk that is already in a segment
  // file (a transaction larger than a chunk): read it from there.
  live_end(*w.shape, metrics::LiveKind::kLongPoll);
  if (!sr->rotated && sr->r.needs_segment()) return LiveStep::kRead;
  existing_requests_.fetch_sub(1);
  out.keep_alive = w.keep_alive;
  const LogRead& r = sr->r;
  auto mode = w.live ? metrics::Mode::kLive : metrics::Mode::kCatchup;
  if (!sr->rotated && w.live && !w.head && r.built && !stopping) {
    // The hot path: a change for a waiting client. Its body is shared, its
    // head is written here in one string.
    std::string etag = w.shape->handle + ":" + url_decode(w.req_offset) + ":" + r.end.to_string();
    if (w.if_none_match.empty() || !etag_matches(w.if_none_match, etag)) {
      out.head = live_head(w, *w.shape, r, etag, r.built->size());
      out.body = r.built;
      out.body_bytes = r.built->size();
      out.delivery = true;
      out.commit_us = r.commit_us;
      pm_.count_request(metrics::Route::kShape, 200, mode);
      return LiveStep::kAnswer;
    }
  }
  out.res = parked_response(w, *sr);
  if (w.live && !w.head && !sr->rotated && r.has_data() && out.res.result() == http::status::ok) {
    out.delivery = true;
    out.commit_us = r.commit_us;
  }
  pm_.count_request(metrics::Route::kShape, out.res.result_int(), mode);
  return LiveStep::kAnswer;
}

asio::awaitable<void> App::answer_read(LiveWait& w, LiveAnswer& out) {
  ShapeRead sr = store_.read_request(w.shape, w.offset, false);
  FillResult filled = FillResult::kFilled;
  if (!sr.rotated && sr.r.needs_segment()) filled = co_await shapes_.fill_segment(w.shape, sr.r);
  existing_requests_.fetch_sub(1);
  out.keep_alive = w.keep_alive;
  if (filled == FillResult::kRetired) {
    sr = ShapeRead{};
    sr.rotated = true;
  } else if (filled == FillResult::kUnreachable) {
    Request req{w.head ? http::verb::head : http::verb::get, "?offset=" + w.req_offset, w.version};
    if (w.has_origin) req.set(http::field::origin, w.origin);
    req.keep_alive(w.keep_alive);
    out.res = error_503(req, R"({"message":"Cannot reach the database to rebuild this part of the shape log"})", 5);
    pm_.count_request(metrics::Route::kShape, out.res.result_int(), w.live ? metrics::Mode::kLive : metrics::Mode::kCatchup);
    co_return;
  }
  out.res = parked_response(w, sr);
  if (w.live && !w.head && !sr.rotated && out.res.result() == http::status::ok) {
    out.delivery = true;
    out.commit_us = store_.commit_time_us(sr.r.first);
  }
  pm_.count_request(metrics::Route::kShape, out.res.result_int(), w.live ? metrics::Mode::kLive : metrics::Mode::kCatchup);
}

Response App::parked_response(const LiveWait& w, const ShapeRead& sr) {
  Response res;
  const LogRead& r = sr.r;
  try {
    // The answer is built from a minimal request carrying what it reads.
    Request req{w.head ? http::verb::head : http::verb::get, "?offset=" + w.req_offset, w.version};
    if (w.has_origin) req.set(http::field::origin, w.origin);
    if (!w.if_none_match.empty()) req.set(http::field::if_none_match, w.if_none_match);
    req.keep_alive(w.keep_alive);
    if (sr.rotated) {
      res = must_refetch(req, sr.next_handle);
    } else if (r.out_of_bounds) {
      ValidationErrors e;
      e.add("offset", "out of bounds for this shape");
      res = error_400(req, e);
    } else {
      ShapeParams p;
      p.offset = w.offset;
      p.live = w.live;
      p.cursor = w.cursor;
      res = shape_response(req, p, *w.shape, r);
    }
    if (w.head) {
      res.body().clear();
      res.prepare_payload();
    }
  } catch (const std::exception& e) {
    log_error("internal error: ", e.what());
    res = Response{http::status::internal_server_error, w.version};
    res.set(http::field::content_type, "application/json; charset=utf-8");
    res.body() = R"({"error":"Internal server error"})";
    res.keep_alive(false);
    res.prepare_payload();
  }
  return res;
}

void App::abandon_live(LiveWait& w, Waiter& waiter) {
  store_.remove_waiter(waiter);
  live_end(*w.shape, metrics::LiveKind::kLongPoll);
  existing_requests_.fetch_sub(1);
  w.shape.reset();
}

void App::shape_headers(const Request& req, const ShapeParams& p, const Shape& s, const LogRead& r,
                        Response& res) const {
  common_headers(req, res);
  res.set(http::field::content_type, "application/json; charset=utf-8");
  res.set("electric-handle", s.handle);
  res.set("electric-offset", r.end.to_string());
  if (!p.live) res.set("electric-schema", *s.schema_header);
  if (r.up_to_date) res.set("electric-up-to-date", "");
  if (p.live)
    res.set("electric-cursor",
            std::to_string(next_cursor(unix_now(), cfg_.long_poll_timeout_ms / 1000, p.cursor, random_int(1, 3600))));
  res.set("electric-has-data", r.has_data() ? "true" : "false");
  std::string req_offset;
  if (auto it = req.target().find("offset="); it != std::string_view::npos) {
    auto v = req.target().substr(it + 7);
    req_offset = url_decode(v.substr(0, v.find('&')));
  }
  std::string etag = s.handle + ":" + req_offset + ":" + r.end.to_string();
  // Only "nothing new" answers that must never be taken for one another get a
  // unique etag: a live long-poll that timed out and offset=now. Any other
  // read of (handle, offset) is the same answer as long as its end is the same,
  // so a cache in front revalidates it (304) instead of fetching it again.
  bool no_news = (p.live && !r.has_data()) || p.offset.kind == RequestOffset::Kind::kNow;
  if (no_news) etag += ":" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  res.set(http::field::etag, "\"" + etag + "\"");
  if (p.offset.kind == RequestOffset::Kind::kBeforeAll)
    res.set(http::field::cache_control,
            cache_control(s, "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"));
  else if (p.live && p.live_sse)
    res.set(http::field::cache_control,
            cache_control(s, "public, max-age=" + std::to_string(cfg_.sse_timeout_ms / 1000 - 1)));
  else if (p.live)
    res.set(http::field::cache_control, cache_control(s, "public, max-age=5, stale-while-revalidate=5"));
  else
    res.set(http::field::cache_control,
            cache_control(s, "public, max-age=" + std::to_string(cfg_.cache_max_age_s) +
                                 ", stale-while-revalidate=" + std::to_string(cfg_.cache_stale_age_s)));
}

asio::awaitable<std::optional<Response>> App::serve_sse(const Request& req, const ShapeParams& p,
                                                        std::shared_ptr<Shape> s, StreamWriter& out,
                                                        std::optional<SseStream>& sse) {
  ShapeRead sr = store_.read_request(s, p.offset, false);
  if (sr.rotated) co_return must_refetch(req, sr.next_handle);
  const LogRead& r = sr.r;
  if (r.out_of_bounds) {
    ValidationErrors e;
    e.add("offset", "out of bounds for this shape");
    co_return error_400(req, e);
  }
  Response head{http::status::ok, req.version()};
  shape_headers(req, p, *s, r, head);
  head.set(http::field::content_type, "text/event-stream");
  head.set(http::field::connection, "keep-alive");
  head.erase("electric-up-to-date");
  if (!co_await out.write_head(head)) co_return std::nullopt;
  auto start = std::chrono::steady_clock::now();
  // Catch up through the part of the log in segment files before parking:
  // those reads need I/O (and perhaps the database), which sse_next cannot do.
  RequestOffset at = p.offset;
  for (;;) {
    if (shapes_.stopping()) break;
    ShapeRead next = store_.read_request(s, at, false);
    if (next.rotated || !next.r.needs_segment()) break;
    LogRead& r2 = next.r;
    if (co_await shapes_.fill_segment(s, r2) != FillResult::kFilled) break;  // the client reconnects and learns why
    if (!co_await out.write_chunk(r2.events())) co_return std::nullopt;
    at = RequestOffset{RequestOffset::Kind::kAt, r2.end};
  }
  SseStream& st = sse.emplace();
  st.shape = std::move(s);
  st.at = at;
  st.end_at = start + std::chrono::milliseconds(cfg_.sse_timeout_ms);
  st.last_sent = start;
  co_return std::nullopt;
}

SseStep App::sse_next(SseStream& st, Waiter& waiter) {
  static const auto keep_alive = std::make_shared<const std::string>(": keep-alive\n\n");
  SseStep step;
  auto now = std::chrono::steady_clock::now();
  auto keep_alive_at = st.last_sent + std::chrono::milliseconds(cfg_.sse_keepalive_ms);
  bool stopping = shapes_.stopping();
  auto keep_waiting = [&](const LogRead& r) {
    if (r.has_data() || stopping || now >= st.end_at || now >= keep_alive_at) return false;
    st.wake_at = std::min(st.end_at, keep_alive_at);
    return true;
  };
  std::optional<ShapeRead> sr = store_.read_events_or_wait(st.shape, st.at, waiter, keep_waiting);
  if (!sr) return step;  // kWait: linked to the shape
  if (sr->rotated || stopping) {  // the client reconnects and learns why
    step.kind = SseStep::Kind::kEnd;
    return step;
  }
  const LogRead& r = sr->r;
  if (r.needs_segment()) {  // a change larger than a chunk went to a segment file
    step.kind = SseStep::Kind::kRead;
    return step;
  }
  if (r.has_data()) {
    step.kind = SseStep::Kind::kSend;
    step.text = r.built ? r.built : std::make_shared<const std::string>(r.events());
    step.delivery = true;
    step.commit_us = r.commit_us;
    st.at = RequestOffset{RequestOffset::Kind::kAt, r.end};
    return step;
  }
  if (now >= st.end_at) {
    step.kind = SseStep::Kind::kEnd;
  } else {
    step.kind = SseStep::Kind::kSend;
    step.text = keep_alive;
  }
  return step;
}

asio::awaitable<std::optional<std::string>> App::sse_read(SseStream& st) {
  if (shapes_.stopping()) co_return std::nullopt;
  ShapeRead sr = store_.read_request(st.shape, st.at, false);
  if (sr.rotated) co_return std::nullopt;
  LogRead& r = sr.r;
  if (r.needs_segment() && co_await shapes_.fill_segment(st.shape, r) != FillResult::kFilled) co_return std::nullopt;
  std::string text;
  try {
    text = r.events();
  } catch (const std::exception& e) {
    log_error("internal error: ", e.what());
    co_return std::nullopt;
  }
  if (r.has_data()) st.at = RequestOffset{RequestOffset::Kind::kAt, r.end};
  co_return text;
}

void App::end_sse(SseStream& st, Waiter& waiter) {
  store_.remove_waiter(waiter);
  if (st.shape) live_end(*st.shape, metrics::LiveKind::kSse);
  existing_requests_.fetch_sub(1);  // taken by handle_shape()
}

asio::awaitable<Response> App::delete_shape(const Request& req, std::string_view query, const AuthDecision& who) {
  QueryMap q = parse_query(query);
  std::optional<std::string> handle, def_key;
  if (auto h = q.find("handle"); h != q.end()) handle = h->second;
  if (!q.count("offset")) q.emplace("offset", "-1");
  auto parsed = parse_shape_params(q);
  if (auto* p = std::get_if<ShapeParams>(&parsed)) {
    if (who.shape_claim && !shape_claim_mismatch(*who.shape_claim, *p).empty())
      co_return auth_refusal(req, AuthRefusal{403, "", R"({"message":"Forbidden","errors":{"shape":["the request differs from the token's shape"]}})"});
    def_key = definition_key(*p) + who.caller.key;
  } else if (who.shape_claim) {
    co_return auth_refusal(req, AuthRefusal{403, "", R"({"message":"Forbidden","errors":{"shape":["the request differs from the token's shape"]}})"});
  }
  // With auth on, a caller retires only a shape it asked for itself (its own
  // request key), never one named by a handle alone.
  if (auth_on_) {
    if (!def_key)
      co_return auth_refusal(req, AuthRefusal{403, "", R"({"message":"Forbidden","errors":{"table":["with authorization on, DELETE names the shape (table, where, columns) it retires"]}})"});
    handle.reset();
  }
  if (!co_await shapes_.delete_shape(handle, def_key))
    co_return json_response(req, http::status::not_found, R"({"message":"No existing shape found"})");
  Response res{http::status::accepted, req.version()};
  common_headers(req, res);
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  co_return res;
}

}  // namespace shapesync
