// Routes, the shape endpoint, and the tick follower.
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
#include "http/pg_errors.hpp"
#include "http/subset.hpp"
#include "http/validate.hpp"
#include "util/log.hpp"
#include "db/text_array.hpp"

namespace shapesync {

namespace {

// The error text to log: a missing privilege also says which role and how to grant it.
std::string pg_why(const PgError& e) {
  return e.sqlstate == "42501" && !e.hint.empty() ? std::string(e.what()) + ": " + e.hint : std::string(e.what());
}

}  // namespace

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

App::App(asio::io_context& io, Config cfg)
    : io_(io),
      cfg_(std::move(cfg)),
      store_(cfg_.chunk_bytes_threshold),
      pool_(io.get_executor(), cfg_.database_url, static_cast<size_t>(cfg_.snapshot_pool_size)),
      reg_pool_(io.get_executor(), cfg_.database_url, static_cast<size_t>(cfg_.registration_pool_size),
                "SET statement_timeout = " + std::to_string(cfg_.registration_timeout_ms)) {}

void App::stop() {
  stopping_ = true;
  std::lock_guard lk(store_.mutex());
  store_.wake_all();
}

void App::common_headers(const Request& req, Response& res) const {
  res.set(http::field::server, "shapesyncd/" SHAPESYNC_VERSION);
  res.set("electric-server", "shapesync/" SHAPESYNC_VERSION);
  res.set("x-request-id", random_hex(16));
  auto origin = req.find(http::field::origin);
  res.set(http::field::access_control_allow_origin,
          origin != req.end() ? std::string(origin->value()) : std::string("*"));
  res.set(http::field::access_control_expose_headers, kExposeHeaders);
  res.set(http::field::access_control_allow_methods, "GET, POST, HEAD, DELETE, OPTIONS");
  if (origin != req.end()) res.set(http::field::vary, "Origin");
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

asio::awaitable<std::optional<Response>> App::handle(Request req, StreamWriter& out, Deferred& later) {
  std::string_view target = req.target();
  auto qpos = target.find('?');
  std::string path = url_decode(target.substr(0, qpos));
  std::string_view query = qpos == std::string_view::npos ? std::string_view() : target.substr(qpos + 1);
  // Path normalisation: collapse repeated slashes, drop a trailing slash.
  std::string norm;
  for (char c : path)
    if (!(c == '/' && !norm.empty() && norm.back() == '/')) norm += c;
  if (norm.size() > 1 && norm.back() == '/') norm.pop_back();

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
          for (auto h : {"if-none-match", "traceparent"})
            if (v.find(h) != std::string::npos) allowed += allowed.empty() ? h : std::string(",") + h;
        }
        if (!allowed.empty()) res.set(http::field::access_control_allow_headers, allowed);
        res.keep_alive(req.keep_alive());
        res.prepare_payload();
        co_return res;
      }
      if (!cfg_.secret.empty()) {
        QueryMap q = parse_query(query);
        auto it = q.find("secret");
        if (it == q.end()) it = q.find("api_secret");
        if (it == q.end() || it->second != cfg_.secret) {
          Response res = json_response(req, http::status::unauthorized,
                                       R"({"message":"Unauthorized - Invalid API secret"})");
          res.set(http::field::cache_control, "no-store");
          res.set("surrogate-control", "no-store");
          co_return res;
        }
      }
      if (req.method() == http::verb::get || req.method() == http::verb::head) {
        auto res = co_await handle_shape(req, query, out, later);
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
        co_return co_await handle_shape(req, merged_query, out, later);
      }
      if (req.method() == http::verb::delete_) {
        if (!cfg_.allow_shape_deletion)
          co_return json_response(req, http::status::method_not_allowed, R"({"message":"DELETE not allowed"})");
        co_return co_await delete_shape(req, query);
      }
      co_return json_response(req, http::status::method_not_allowed, R"({"message":"Method not allowed"})");
    }
    if (norm == "/v1/health") {
      bool ok = db_ready();
      Response res = json_response(req, ok ? http::status::ok : http::status::accepted,
                                   ok ? R"({"status":"active"})" : R"({"status":"waiting"})");
      res.set(http::field::cache_control, "no-cache, no-store, must-revalidate");
      co_return res;
    }
    if (norm == "/metrics") {
      if (!metrics_authorized(req, query)) co_return unauthorized_metrics(req);
      co_return metrics(req);
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
                                                           StreamWriter& out, Deferred& later) {
  QueryMap q = parse_query(query);
  // Nothing with a NUL byte or invalid UTF-8 goes further (libpq takes C strings).
  if (auto bad = check_param_text(q)) co_return error_400(req, *bad);
  auto parsed = parse_shape_params(q);
  if (auto* e = std::get_if<ValidationErrors>(&parsed)) co_return error_400(req, *e);
  ShapeParams p = std::get<ShapeParams>(std::move(parsed));
  // Admission control (Electric's ELECTRIC_MAX_CONCURRENT_REQUESTS).
  bool initial = p.offset.kind == RequestOffset::Kind::kBeforeAll;
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
  if (req.method() == http::verb::post || is_subset_request(q)) co_return co_await serve_subset(req, q, p);
  std::string def_key = definition_key(p);
  std::shared_ptr<const TableInfo> table;
  Response err;
  auto shape = co_await get_shape(p, def_key, table, err, req);
  if (!shape) co_return err;
  if (p.offset.kind == RequestOffset::Kind::kAt && *p.handle != shape->handle) co_return must_refetch(req, shape->handle);
  if (p.live_sse) {
    if (!co_await wait_servable(shape, p)) co_return co_await not_servable(req, p);
    auto res = co_await serve_sse(req, p, shape, out, later.sse);
    if (later.sse) release.c = nullptr;  // end_sse() releases it
    co_return res;
  }
  if (!co_await wait_servable(shape, p)) co_return co_await not_servable(req, p);
  LogRead unread;
  auto res = serve_shape(req, p, shape, later.wait, unread);
  if (later.wait) release.c = nullptr;  // answer_live() or abandon_live() releases it
  if (res || later.wait) co_return res;
  // The entries to send are in a segment file: read outside the lock (rebuilt
  // from the change log when the file is gone). It has data: never parks.
  int st = co_await fill_segment(shape, unread);
  if (st == 409) co_return must_refetch(req, "");
  if (st == 503)
    co_return error_503(req, R"({"message":"Cannot reach the database to rebuild this part of the shape log"})", 5);
  Response filled = shape_response(req, p, *shape, unread);
  if (req.method() == http::verb::head) {
    filled.body().clear();
    filled.prepare_payload();
  }
  co_return filled;
}

asio::awaitable<std::optional<std::string>> App::missing_table(const QualifiedName& name) {
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

asio::awaitable<Response> App::not_servable(const Request& req, const ShapeParams& p) {
  if (auto gone = co_await missing_table(p.table)) {
    ValidationErrors v;
    v.add("table", *gone);
    co_return error_400(req, v);
  }
  co_return error_503(req, R"({"message":"Failed to create shape, please retry"})", 1);
}

asio::awaitable<bool> App::wait_servable(const std::shared_ptr<Shape>& s, const ShapeParams& p) {
  // SSE serves the log: it waits for the shape to be ready
  auto servable = [&] { return s->ready || s->invalid || (!p.live_sse && ShapeStore::can_read(*s, p.offset)); };
  {
    std::lock_guard lk(store_.mutex());
    if (servable()) co_return true;  // the usual case: no waiter, no timer
  }
  auto ex = co_await asio::this_coro::executor;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (;;) {
    auto w = std::make_shared<TimerWaiter>(ex);
    {
      std::lock_guard lk(store_.mutex());
      if (servable()) co_return true;
      if (s->failed || stopping_ || std::chrono::steady_clock::now() >= deadline) co_return false;
      w->timer.expires_at(deadline);
      store_.add_waiter(*s, *w);
    }
    co_await w->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    std::lock_guard lk(store_.mutex());
    store_.remove_waiter(*w);
  }
}

asio::awaitable<std::shared_ptr<Shape>> App::get_shape(const ShapeParams& p, const std::string& def_key,
                                                       std::shared_ptr<const TableInfo>& table, Response& err,
                                                       const Request& req) {
  auto ex = co_await asio::this_coro::executor;
  std::string where_error;
  for (int attempt = 0; attempt < 5; ++attempt) {
    std::shared_ptr<Shape> s;
    {
      std::lock_guard lk(store_.mutex());
      if (auto a = aliases_.find(def_key); a != aliases_.end()) s = store_.active(a->second);
    }
    if (!s) {
      TableLookup lookup;
      try {
        auto lease = co_await pool_.acquire();
        lookup = co_await lookup_table(*lease, p.table);
      } catch (const PgError& e) {
        if (classify_pg_error(e) == PgFailure::kUnreachable) {
          log_warn("cannot verify shape: ", e.what());
          err = error_503(
              req, R"({"message":"Cannot connect to the database to verify the shape. Please try again later."})", 1);
        } else {
          err = pg_failure_response(req, e, "looking up the shape's table", "SELECT");
        }
        co_return nullptr;
      }
      if (!lookup.table) {
        ValidationErrors e;
        e.add("table", lookup.error);
        err = error_400(req, e);
        co_return nullptr;
      }
      ShapeDef def;
      def.table = lookup.table;
      def.replica = p.replica;
      def.log_mode = p.log;
      def.key = def_key;
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
        ValidationErrors e;
        if (!missing_cols.empty()) {
          std::string m = "The following columns are not found on the table: ";
          for (size_t i = 0; i < missing_cols.size(); ++i) m += (i ? ", " : "") + missing_cols[i];
          e.add("columns", m);
        }
        std::string missing_pk;
        for (size_t pk : t.pk)
          if (std::find(def.selected.begin(), def.selected.end(), pk) == def.selected.end())
            missing_pk += (missing_pk.empty() ? "" : ", ") + t.columns[pk].name;
        if (!missing_pk.empty())
          e.add("columns", "The list of columns must include all primary key columns, missing: " + missing_pk);
        if (!e.empty()) {
          err = error_400(req, e);
          co_return nullptr;
        }
        std::sort(def.selected.begin(), def.selected.end());
      } else {
        for (size_t i = 0; i < t.columns.size(); ++i) def.selected.push_back(i);
      }
      s = co_await register_shape(p, std::move(def), def_key, err, req);
      if (!s) co_return nullptr;
    }
    // Wait for a shape being created (by this or another request).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      auto w = std::make_shared<TimerWaiter>(ex);
      {
        std::lock_guard lk(store_.mutex());
        if (s->ready || s->failed || s->invalid || stopping_ || !s->snapshot_chunks.empty()) break;
        w->timer.expires_at(deadline);
        store_.add_waiter(*s, *w);
      }
      co_await w->timer.async_wait(asio::as_tuple(asio::use_awaitable));
      std::lock_guard lk(store_.mutex());
      store_.remove_waiter(*w);
      if (std::chrono::steady_clock::now() >= deadline) break;
    }
    {
      std::lock_guard lk(store_.mutex());
      // ready, or streaming its snapshot (served chunk by chunk while it is taken)
      if (!s->invalid && !s->failed && (s->ready || !s->snapshot_chunks.empty())) {
        table = s->def.table;
        co_return s;
      }
      if (!s->build_error.empty()) where_error = s->build_error;
      if (!s->config_error.empty()) {  // this sidecar cannot build it: say why
        err = error_503(req, s->config_error, kConfigurationRetryAfter);
        co_return nullptr;
      }
    }
    // Failed or rotated while being created: a table dropped meanwhile is
    // answered like any missing table (its DDL also rotated the shape).
    if (auto gone = co_await missing_table(p.table)) {
      ValidationErrors v;
      v.add("table", *gone);
      err = error_400(req, v);
      co_return nullptr;
    }
    if (!where_error.empty()) {
      ValidationErrors v;
      v.add("where", where_error);
      err = error_400(req, v);
      co_return nullptr;
    }
    // Rotated while it was being created (its catch-up met a TRUNCATE, DDL or
    // a filter error): the invalidation is on its way to the registry, which
    // would otherwise hand out the same handle again. Give it a moment.
    asio::steady_timer pause(ex, std::chrono::milliseconds(50 * (attempt + 1)));
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  Response last = co_await not_servable(req, p);
  err = std::move(last);
  co_return nullptr;
}

asio::awaitable<std::shared_ptr<Shape>> App::register_shape(const ShapeParams& p, ShapeDef def,
                                                            const std::string& raw_key, Response& err,
                                                            const Request& req) {
  const TableInfo& t = *def.table;
  std::vector<std::string> names;
  for (size_t idx : def.selected) names.push_back(t.columns[idx].name);
  std::string cols_array = text_array_literal(names);
  std::string options = std::string(def.replica == Replica::kFull ? "replica=full" : "replica=default") +
                        (def.log_mode == LogMode::kChangesOnly ? " log=changes_only" : " log=full");
  std::vector<std::string> param_values;
  for (auto& [n, v] : p.params) param_values.push_back(v);
  std::shared_ptr<Shape> s;
  std::optional<PgError> failed;
  try {
    auto lease = co_await reg_pool_.acquire();
    PgConn& c = *lease;
    auto field = [&](const PgResult& res, const char* name) -> std::optional<std::string> {
      int i = PQfnumber(res.raw(), name);
      if (i < 0 || res.is_null(0, i)) return std::nullopt;
      return std::string(res.get(0, i));
    };
    // What a request can get wrong is checked first by check_shape(), which
    // returns the error as data: a rejected WHERE writes nothing to the
    // server log (an ERROR would log the whole statement, every time).
    {
      PgParams args{std::to_string(t.relid), p.where ? *p.where : std::string(), text_array_literal(param_values)};
      std::optional<PgResult> chk;
      try {
        chk = co_await c.exec("SELECT * FROM shapesync.check_shape($1::oid::regclass, NULLIF($2, ''), $3::text[])",
                              args);
      } catch (const PgError& e) {
        if (e.sqlstate != "42883") throw;  // an extension older than 0.2.0: get_or_create_shape() checks
      }
      if (chk && chk->rows() == 1) {
        if (auto code = field(*chk, "error_code")) {
          std::string msg = field(*chk, "error_message").value_or("invalid shape");
          if (auto pos = field(*chk, "error_position")) msg = "At location " + *pos + ": " + msg;
          if (auto d = field(*chk, "error_detail")) msg += ". " + *d;
          if (*code == "SS002") {
            // row-level security applies to this sidecar's role: the
            // snapshot would be filtered and the live changes not
            log_warn("shape refused: ", msg);
            if (auto h = field(*chk, "error_hint")) msg += " " + *h;
            ValidationErrors v;
            v.add("table", msg);
            Response res = json_response(req, http::status::forbidden, v.body());
            res.set(http::field::cache_control, "no-store");
            err = std::move(res);
            co_return nullptr;
          }
          ValidationErrors v;
          v.add(field(*chk, "error_field").value_or("where"), msg);
          err = error_400(req, v);
          co_return nullptr;
        }
      }
    }
    auto reg = [&]() -> asio::awaitable<PgResult> {
      if (!p.where && param_values.empty()) {
        PgParams args{std::to_string(t.relid), cols_array, options};
        co_return co_await c.exec(
            "SELECT * FROM shapesync.get_or_create_shape($1::oid::regclass, NULL, $2::text[], $3)", args);
      }
      PgParams args{std::to_string(t.relid), p.where, cols_array, options, text_array_literal(param_values)};
      co_return co_await c.exec(
          "SELECT * FROM shapesync.get_or_create_shape($1::oid::regclass, $2, $3::text[], $4, $5::text[])", args);
    };
    PgResult r = co_await reg();
    std::string canonical = field(r, "canonical_where").value_or("");
    std::string canon_key = std::to_string(t.relid) + "|" + canonical + "|" + cols_array + "|" + options;
    def.key = canon_key;
    // one lock: concurrent registrations of one definition make one shape
    std::lock_guard lk(store_.mutex());
    aliases_[raw_key] = canon_key;
    if (auto existing = store_.active(canon_key)) co_return existing;
    s = store_.begin_create(std::move(def));
    s->handle = *field(r, "handle");
    s->shape_id = static_cast<int32_t>(std::stol(field(r, "shape_id").value_or("0")));
    s->where = canonical;
    s->filtered = !canonical.empty();
  } catch (const PgError& e) {
    failed = e;
  }
  if (failed) {
    const PgError& e = *failed;
    if (e.sqlstate == "57014" && p.where) {
      // statement_timeout: the WHERE is what takes long, a retry would too
      ValidationErrors v;
      v.add("where", "The WHERE clause took longer than the registration timeout (" +
                         std::to_string(cfg_.registration_timeout_ms) + " ms) to validate");
      err = error_400(req, v);
      co_return nullptr;
    }
    PgFailure kind = classify_pg_error(e);
    // Dropped (or untracked) since it was looked up: say so, as for any
    // missing table, not as a WHERE error or a retryable 503.
    if (kind != PgFailure::kUnreachable) {
      if (auto gone = co_await missing_table(p.table)) {
        ValidationErrors v;
        v.add("table", *gone);
        err = error_400(req, v);
        co_return nullptr;
      }
    }
    if (kind == PgFailure::kRequest) {
      ValidationErrors v;
      v.add(p.where ? "where" : "table", request_error_message(e));
      err = error_400(req, v);
    } else {
      err = pg_failure_response(req, e, "registering the shape", "EXECUTE");
    }
    co_return nullptr;
  }
  // Built in the background: the requests waiting on it (this one included)
  // are served its snapshot chunks as they are taken.
  auto ex = co_await asio::this_coro::executor;
  asio::co_spawn(ex, build_and_settle(s), asio::detached);
  co_return s;
}

asio::awaitable<void> App::build_and_settle(std::shared_ptr<Shape> s) {
  std::optional<PgError> failed;
  std::string other_failure;
  try {
    co_await build_shape(s);
  } catch (const PgError& e) {
    failed = e;
  } catch (const std::exception& e) {
    other_failure = e.what();
  }
  if (!other_failure.empty()) {
    log_error("shape ", s->handle, " build failed: ", other_failure);
    std::lock_guard lk(store_.mutex());
    if (!s->ready) store_.fail_create(s);
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
  {
    // fail it here first: the retirement below reaches this store again
    // through poll_invalidations, and its waiters must learn why from this
    std::lock_guard lk(store_.mutex());
    if (bad_filter) s->build_error = e.what();
    if (config) s->config_error = configuration_error_body(e);
    if (!s->ready) store_.fail_create(s);
  }
  if (bad_filter || unservable) {
    std::string reason = bad_filter ? std::string("snapshot failed: ") + e.what()
                         : e.sqlstate == kLogTruncated ? std::string("change log retention: ") + e.what()
                                                       : std::string(e.what());
    try {
      auto lease = co_await pool_.acquire();
      PgParams args{s->handle, reason};
      co_await lease->exec("SELECT shapesync.invalidate_shape($1, $2)", args);
      log_info("shape ", s->handle, " retired: ", reason);
    } catch (const PgError& e2) {
      log_warn("cannot retire shape ", s->handle, ": ", e2.what());
    }
  }
}

// Takes the shape's snapshot (after every writer that could miss the shape has
// ended) and stores it for every sidecar. Caller holds the shape's build lock.
asio::awaitable<App::SnapshotData> App::take_snapshot(PgConn& c, const std::shared_ptr<Shape>& sp) {
  const Shape* s = sp.get();
  const TableInfo& t = *s->def.table;
  {
    PgParams args{std::to_string(t.relid)};
    try {
      co_await c.exec("SELECT shapesync.wait_for_writers($1::oid::regclass)", args);
    } catch (const PgError& e) {
      if (e.sqlstate != "42883") throw;  // older extension without it
    }
  }
  // Claim the handle before anything is served: a snapshot row without a
  // chunk count is one being built. Should this process die before storing
  // the chunks, the next sidecar finds it abandoned and retires the handle
  // (clients that saw part of it re-sync) instead of taking another snapshot
  // under the same handle.
  {
    PgParams args{s->handle};
    co_await c.exec(
        "INSERT INTO shapesync.shape_snapshots (handle, snap, start_tick, chunk_count, row_count) "
        "VALUES ($1, '1:1:', 0, NULL, NULL)",
        args);
  }
  auto t0 = std::chrono::steady_clock::now();
  co_await c.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  SnapshotData d;
  std::exception_ptr failure;
  std::vector<std::shared_ptr<const std::string>> chunks;
  std::string cur = "[";
  bool first = true;
  long long rows = 0;
  // A chunk is served as soon as it is complete, while the rows stream in
  // (COPY): PostgreSQL produces, this encodes, clients download, at once.
  auto publish = [&](std::string body) {
    auto chunk = std::make_shared<const std::string>(std::move(body));
    chunks.push_back(chunk);
    std::lock_guard lk(store_.mutex());
    store_.publish_snapshot_chunk(sp, std::move(chunk));
  };
  try {
    co_await c.exec("SET LOCAL statement_timeout = " + std::to_string(cfg_.snapshot_timeout_ms));
    PgResult snap = co_await c.exec(
        "SELECT pg_current_snapshot()::text, coalesce((SELECT max(tick_id) FROM shapesync.ticks), 0)");
    auto ps = PgSnapshot::parse(snap.get(0, 0));
    if (!ps) throw PgError("bad snapshot text", "", false);
    d.snap = *ps;
    d.snap_text = std::string(snap.get(0, 0));
    d.start_tick = std::stoull(std::string(snap.get(0, 1)));
    {
      std::lock_guard lk(store_.mutex());
      sp->snap = d.snap;
      sp->start_tick = d.start_tick;
    }
    if (s->def.log_mode == LogMode::kFull) {
      std::string sql = "COPY (SELECT ";
      for (size_t i = 0; i < s->def.selected.size(); ++i) {
        if (i) sql += ", ";
        sql += quote_ident(t.columns[s->def.selected[i]].name);
      }
      // ONLY: the rows of an inheritance child are not the tracked table's
      // (a child's changes fire none of its triggers)
      sql += " FROM ONLY " + quote_ident(t.schema) + "." + quote_ident(t.name);
      // The canonical WHERE is PostgreSQL's own deparse of the validated expression.
      if (!s->where.empty()) sql += " WHERE " + s->where;
      sql += ") TO STDOUT";
      RowValues row(t.columns.size());
      std::vector<std::optional<std::string>> fields;
      std::string value;
      co_await c.copy_out(sql, [&](std::string_view line) {
        if (!parse_copy_row(line, fields) || fields.size() != s->def.selected.size())
          throw PgError("unexpected COPY row from the snapshot query", "", false);
        for (size_t k = 0; k < fields.size(); ++k) row[s->def.selected[k]] = std::move(fields[k]);
        value.clear();
        append_value_object(value, t, row, s->def.selected);
        if (!first) cur += ',';
        first = false;
        cur += snapshot_row_message(row_key(s->key_prefix, t, row), value, s->relation);
        ++rows;
        if (cur.size() >= cfg_.chunk_bytes_threshold) {
          cur += ']';
          publish(std::move(cur));
          cur = "[";
          first = true;
        }
      });
    }
    co_await c.exec("COMMIT");
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    if (c.ok()) {
      if (PQtransactionStatus(c.raw()) != PQTRANS_IDLE) co_await c.exec("ROLLBACK");
      // Nothing served yet (rows stream before any chunk is complete only for
      // small shapes): forget the claim so the next attempt starts afresh.
      bool served;
      {
        std::lock_guard lk(store_.mutex());
        served = !sp->snapshot_chunks.empty();
      }
      if (!served) {
        PgParams args{s->handle};
        co_await c.exec("DELETE FROM shapesync.shape_snapshots WHERE handle = $1 AND chunk_count IS NULL", args);
      }
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
  log_info("shape ", s->handle, " snapshot: ", d.rows, " rows, ", d.chunks.size(), " chunk(s) streamed in ", ms(t0, t1),
           " ms");
  co_return d;
}

// Stores the chunks of a snapshot this sidecar took (the shape is already
// served from memory); from then on every sidecar serves these bytes.
asio::awaitable<void> App::store_snapshot(PgConn& c, const Shape& s, const SnapshotData& d) {
  auto t0 = std::chrono::steady_clock::now();
  co_await c.exec("BEGIN");
  std::exception_ptr failure;
  try {
    for (size_t i = 0; i < d.chunks.size(); ++i) {
      PgParams args{s.handle, std::to_string(i), *d.chunks[i]};
      co_await c.exec("INSERT INTO shapesync.shape_snapshot_chunks (handle, chunk_no, body) VALUES ($1, $2::int, $3)",
                      args);
    }
    // the claim becomes the stored snapshot in the same transaction as its chunks
    PgParams args{s.handle, std::to_string(d.chunks.size()), std::to_string(d.rows), d.snap_text,
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
    if (c.ok() && PQtransactionStatus(c.raw()) != PQTRANS_IDLE) co_await c.exec("ROLLBACK");
    std::rethrow_exception(failure);
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  log_info("shape ", s.handle, " snapshot stored: ", d.chunks.size(), " chunk(s) in ", ms, " ms");
}

asio::awaitable<std::optional<App::SnapshotData>> App::load_snapshot(PgConn& c, const std::string& handle) {
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

asio::awaitable<void> App::build_shape(std::shared_ptr<Shape> s) {
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
    std::string lock_args = "21320, " + std::to_string(s->shape_id);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    for (;;) {
      data = co_await load_snapshot(c, s->handle);
      if (data && !data->building) break;
      PgResult got = co_await c.exec("SELECT pg_try_advisory_lock(" + lock_args + ")");
      if (got.get(0, 0) == "t") {
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
          if (PQtransactionStatus(c.raw()) != PQTRANS_IDLE) co_await c.exec("ROLLBACK");
          co_await c.exec("SELECT pg_advisory_unlock(" + lock_args + ")");
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
    uint64_t start_tick = data->start_tick;
    {
      std::lock_guard lk(store_.mutex());
      s->snap = data->snap;
      s->start_tick = start_tick;
      s->snapshot_chunks = data->chunks;
    }
    // Catch up: batches after start_tick that the window no longer holds come
    // from the database.
    std::exception_ptr failure;
    try {
      for (int round = 0; round < 5; ++round) {
        uint64_t floor;
        {
          std::lock_guard lk(store_.mutex());
          floor = store_.window_floor();
          if (start_tick >= floor || store_.last_tick() <= start_tick) {
            store_.finish_create(s);
            break;
          }
        }
        std::vector<Batch> extra;
        for (uint64_t after = start_tick; after < floor;) {
          uint64_t upto = std::min(floor, after + 2000);
          auto part = co_await fetch_batches(c, after, upto);
          for (auto& b : part) extra.push_back(std::move(b));
          after = upto;
        }
        std::lock_guard lk(store_.mutex());
        if (store_.window_floor() <= floor) {
          store_.finish_create(s, std::move(extra), floor);
          break;
        }
      }
      if (own) co_await store_snapshot(c, *s, *data);
    } catch (...) {
      failure = std::current_exception();
    }
    if (own && c.ok()) co_await c.exec("SELECT pg_advisory_unlock(" + lock_args + ")");
    if (failure) std::rethrow_exception(failure);
    if (reporting_) {
      PgParams args{s->handle, std::to_string(data->rows)};
      try {
        co_await c.exec("SELECT shapesync.report_shape($1, $2::bigint, '0_inf')", args);
      } catch (const PgError& e) {
        if (e.sqlstate != "42883") throw;
        reporting_ = false;
      }
    }
    log_info("shape ", s->handle, " ready for ", quote_ident(t.schema), ".", quote_ident(t.name), ": ", data->rows,
             " rows, ", s->snapshot_chunks.size(), " chunk(s), from tick ", start_tick);
  }
  {
    std::lock_guard lk(store_.mutex());
    if (!s->ready && !s->invalid) store_.fail_create(s);
  }
}

std::optional<Response> App::serve_shape(const Request& req, const ShapeParams& p, std::shared_ptr<Shape> s,
                                         std::optional<LiveWait>& wait, LogRead& unread) {
  LogRead r;
  std::shared_ptr<Shape> next;
  bool rotated = false;
  {
    std::lock_guard lk(store_.mutex());
    if (s->invalid) {
      rotated = true;
      next = store_.active(s->def.key);
    } else {
      r = p.live ? store_.read_live(*s, p.offset) : store_.read(*s, p.offset);
    }
  }
  if (rotated) {
    // Rotated (TRUNCATE, DDL, DELETE, a filter error): point the client at the
    // replacement when one is ready; it re-syncs from offset -1 either way.
    return must_refetch(req, next && next->ready ? next->handle : "");
  }
  if (r.needs_segment()) {
    unread = std::move(r);
    return std::nullopt;
  }
  if ((r.out_of_bounds || (p.live && !r.has_data())) && !stopping_) {
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
  if (w.has_origin) h += "Vary: Origin\r\n";
  h += "Content-Type: application/json; charset=utf-8\r\nelectric-handle: ";
  h += s.handle;
  h += "\r\nelectric-offset: ";
  h += r.end.to_string();
  if (r.up_to_date) h += "\r\nelectric-up-to-date: ";
  h += "\r\nelectric-cursor: ";
  h += std::to_string(next_cursor(unix_now(), cfg_.long_poll_timeout_ms / 1000, w.cursor, random_int(1, 3600)));
  h += "\r\nelectric-has-data: true\r\nETag: \"";
  h += etag;
  h += "\"\r\nCache-Control: public, max-age=5, stale-while-revalidate=5\r\n";
  if (w.version == 10 && w.keep_alive) h += "Connection: keep-alive\r\n";
  if (w.version != 10 && !w.keep_alive) h += "Connection: close\r\n";
  h += "Content-Length: ";
  h += std::to_string(body_size);
  h += "\r\n\r\n";
  return h;
}

App::LiveStep App::answer_live(LiveWait& w, Waiter& waiter, LiveAnswer& out) {
  LogRead r;
  std::shared_ptr<Shape> next;
  bool rotated = false;
  {
    std::lock_guard lk(store_.mutex());
    store_.remove_waiter(waiter);  // still linked when its deadline woke it
    if (w.shape->invalid) {
      rotated = true;
      next = store_.active(w.shape->def.key);
    } else {
      r = w.live ? store_.read_live(*w.shape, w.offset) : store_.read(*w.shape, w.offset);
      // The change that woke it went past a chunk that is already in a
      // segment file (a transaction larger than a chunk): read it from there.
      if (r.needs_segment()) return LiveStep::kRead;
      // An offset beyond the log is reported after half the long-poll timeout
      // (live or not); a live request without news waits the whole timeout.
      w.wake_at = r.out_of_bounds ? std::min(w.oob_deadline, w.live_deadline) : w.live_deadline;
      bool timed_out = stopping_ || std::chrono::steady_clock::now() >= w.wake_at;
      if ((r.out_of_bounds || (w.live && !r.has_data())) && !timed_out) {
        store_.add_waiter(*w.shape, waiter);
        return LiveStep::kWait;
      }
    }
  }
  existing_requests_.fetch_sub(1);
  out.keep_alive = w.keep_alive;
  if (!rotated && w.live && !w.head && r.built && !stopping_) {
    // The hot path: a change for a waiting client. Its body is shared, its
    // head is written here in one string.
    std::string etag = w.shape->handle + ":" + url_decode(w.req_offset) + ":" + r.end.to_string();
    if (w.if_none_match.empty() || !etag_matches(w.if_none_match, etag)) {
      out.head = live_head(w, *w.shape, r, etag, r.built->size());
      out.body = r.built;
      return LiveStep::kAnswer;
    }
  }
  out.res = parked_response(w, r, rotated, next);
  return LiveStep::kAnswer;
}

asio::awaitable<void> App::answer_read(LiveWait& w, LiveAnswer& out) {
  LogRead r;
  std::shared_ptr<Shape> next;
  bool rotated = false;
  int status = 0;
  {
    std::lock_guard lk(store_.mutex());
    if (w.shape->invalid) {
      rotated = true;
      next = store_.active(w.shape->def.key);
    } else {
      r = store_.read(*w.shape, w.offset);
    }
  }
  if (r.needs_segment()) status = co_await fill_segment(w.shape, r);
  existing_requests_.fetch_sub(1);
  out.keep_alive = w.keep_alive;
  if (status == 409) {
    rotated = true;
  } else if (status == 503) {
    Request req{w.head ? http::verb::head : http::verb::get, "?offset=" + w.req_offset, w.version};
    if (w.has_origin) req.set(http::field::origin, w.origin);
    req.keep_alive(w.keep_alive);
    out.res = error_503(req, R"({"message":"Cannot reach the database to rebuild this part of the shape log"})", 5);
    co_return;
  }
  out.res = parked_response(w, r, rotated, next);
}

Response App::parked_response(const LiveWait& w, const LogRead& r, bool rotated, const std::shared_ptr<Shape>& next) {
  Response res;
  try {
    // The answer is built from a minimal request carrying what it reads.
    Request req{w.head ? http::verb::head : http::verb::get, "?offset=" + w.req_offset, w.version};
    if (w.has_origin) req.set(http::field::origin, w.origin);
    if (!w.if_none_match.empty()) req.set(http::field::if_none_match, w.if_none_match);
    req.keep_alive(w.keep_alive);
    if (rotated) {
      res = must_refetch(req, next && next->ready ? next->handle : "");
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
  {
    std::lock_guard lk(store_.mutex());
    store_.remove_waiter(waiter);
  }
  existing_requests_.fetch_sub(1);
  w.shape.reset();
}

Response App::metrics(const Request& req) {
  size_t shapes, waiting, log_bytes, window_bytes, window_batches;
  uint64_t last_tick, changes, entries;
  {
    std::lock_guard lk(store_.mutex());
    shapes = store_.shape_count();
    waiting = store_.waiting();
    log_bytes = store_.log_memory_bytes();
    window_bytes = store_.window_bytes();
    window_batches = store_.window_batches();
    last_tick = store_.last_tick();
    changes = store_.applied_changes();
    entries = store_.appended_entries();
  }
  std::string body;
  auto gauge = [&](const char* name, const char* help, double v) {
    body += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + " ";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    body += buf;
    body += '\n';
  };
  gauge("shapesync_shapes", "Shapes served by this sidecar.", static_cast<double>(shapes));
  gauge("shapesync_waiting_requests", "Requests waiting for a change of their shape (long-poll, SSE between events).",
        static_cast<double>(waiting));
  gauge("shapesync_initial_requests", "Initial-sync requests in progress (offset=-1).", initial_requests_.load());
  gauge("shapesync_existing_requests", "Other shape requests in progress, parked long-polls included.",
        existing_requests_.load());
  if (connections_) gauge("shapesync_open_connections", "Open client connections.", static_cast<double>(connections_()));
  gauge("shapesync_db_ready", "1 when the sidecar follows the database.", db_ready() ? 1 : 0);
  gauge("shapesync_last_tick", "The last tick applied to the shapes.", static_cast<double>(last_tick));
  gauge("shapesync_log_memory_bytes", "Shape log entries held in memory (older chunks are in segment files).",
        static_cast<double>(log_bytes));
  gauge("shapesync_window_bytes", "Recent decoded batches kept for new shapes to catch up from.",
        static_cast<double>(window_bytes));
  gauge("shapesync_window_batches", "Batches in that window.", static_cast<double>(window_batches));
  auto counter = [&](const char* name, const char* help, double v) {
    body += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " ";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    body += buf;
    body += '\n';
  };
  counter("shapesync_changes_applied_total", "Row changes read from the change log and applied.",
          static_cast<double>(changes));
  counter("shapesync_log_entries_total", "Messages appended to shape logs (a change in k shapes counts k).",
          static_cast<double>(entries));
  Response res{http::status::ok, req.version()};
  res.set(http::field::server, "shapesyncd/" SHAPESYNC_VERSION);
  res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  res.set(http::field::cache_control, "no-store");
  res.body() = std::move(body);
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  return res;
}

void App::shape_headers(const Request& req, const ShapeParams& p, const Shape& s, const LogRead& r,
                        Response& res) const {
  common_headers(req, res);
  res.set(http::field::content_type, "application/json; charset=utf-8");
  res.set("electric-handle", s.handle);
  res.set("electric-offset", r.end.to_string());
  if (!p.live) res.set("electric-schema", s.schema_header);
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
    res.set(http::field::cache_control, "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746");
  else if (p.live && p.live_sse)
    res.set(http::field::cache_control, "public, max-age=" + std::to_string(cfg_.sse_timeout_ms / 1000 - 1));
  else if (p.live)
    res.set(http::field::cache_control, "public, max-age=5, stale-while-revalidate=5");
  else
    res.set(http::field::cache_control, "public, max-age=" + std::to_string(cfg_.cache_max_age_s) +
                                            ", stale-while-revalidate=" + std::to_string(cfg_.cache_stale_age_s));
}

asio::awaitable<std::optional<Response>> App::serve_sse(const Request& req, const ShapeParams& p,
                                                        std::shared_ptr<Shape> s, StreamWriter& out,
                                                        std::optional<SseStream>& sse) {
  LogRead r;
  {
    std::lock_guard lk(store_.mutex());
    if (s->invalid) {
      auto a = store_.active(s->def.key);
      co_return must_refetch(req, a && a->ready ? a->handle : "");
    }
    r = store_.read(*s, p.offset);
  }
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
    LogRead r2;
    {
      std::lock_guard lk(store_.mutex());
      if (s->invalid || stopping_) break;
      r2 = store_.read(*s, at);
    }
    if (!r2.segment) break;
    if (co_await fill_segment(s, r2) != 0) break;  // the client reconnects and learns why
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
  std::lock_guard lk(store_.mutex());
  store_.remove_waiter(waiter);  // still linked when its deadline woke it
  Shape& s = *st.shape;
  if (s.invalid || stopping_) {  // the client reconnects and learns why
    step.kind = SseStep::Kind::kEnd;
    return step;
  }
  LogRead r = store_.read_events(s, st.at);
  if (r.needs_segment()) {  // a change larger than a chunk went to a segment file
    step.kind = SseStep::Kind::kRead;
    return step;
  }
  if (r.has_data()) {
    step.kind = SseStep::Kind::kSend;
    step.text = r.built ? r.built : std::make_shared<const std::string>(r.events());
    st.at = RequestOffset{RequestOffset::Kind::kAt, r.end};
    return step;
  }
  auto now = std::chrono::steady_clock::now();
  auto keep_alive_at = st.last_sent + std::chrono::milliseconds(cfg_.sse_keepalive_ms);
  if (now >= st.end_at) {
    step.kind = SseStep::Kind::kEnd;
  } else if (now >= keep_alive_at) {
    step.kind = SseStep::Kind::kSend;
    step.text = keep_alive;
  } else {
    st.wake_at = std::min(st.end_at, keep_alive_at);
    store_.add_waiter(s, waiter);
  }
  return step;
}

asio::awaitable<std::optional<std::string>> App::sse_read(SseStream& st) {
  LogRead r;
  {
    std::lock_guard lk(store_.mutex());
    if (st.shape->invalid || stopping_) co_return std::nullopt;
    r = store_.read(*st.shape, st.at);
  }
  if (r.needs_segment() && co_await fill_segment(st.shape, r) != 0) co_return std::nullopt;
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

void App::end_sse(Waiter& waiter) {
  {
    std::lock_guard lk(store_.mutex());
    store_.remove_waiter(waiter);
  }
  existing_requests_.fetch_sub(1);  // taken by handle_shape()
}

asio::awaitable<Response> App::delete_shape(const Request& req, std::string_view query) {
  QueryMap q = parse_query(query);
  std::shared_ptr<Shape> s;
  auto h = q.find("handle");
  {
    std::lock_guard lk(store_.mutex());
    if (h != q.end()) s = store_.by_handle(h->second);
    if (!s) {
      auto parsed = parse_shape_params(q.count("offset") ? q : [&] {
        QueryMap q2 = q;
        q2.emplace("offset", "-1");
        return q2;
      }());
      if (auto* p = std::get_if<ShapeParams>(&parsed))
        if (auto a = aliases_.find(definition_key(*p)); a != aliases_.end()) s = store_.active(a->second);
    }
    if (s) store_.invalidate(s, "deleted");
  }
  if (!s) co_return json_response(req, http::status::not_found, R"({"message":"No existing shape found"})");
  auto lease = co_await pool_.acquire();
  PgParams args{s->handle};
  co_await lease->exec("SELECT shapesync.invalidate_shape($1, 'deleted through DELETE /v1/shape')", args);
  Response res{http::status::accepted, req.version()};
  common_headers(req, res);
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  co_return res;
}

asio::awaitable<void> App::record_invalidations(PgConn& c,
                                                const std::vector<std::pair<std::string, std::string>>& inv) {
  for (auto& [h, reason] : inv) {
    PgParams args{h, reason};
    co_await c.exec("SELECT shapesync.invalidate_shape($1, $2)", args);
    log_info("shape ", h, " invalidated: ", reason);
  }
}

asio::awaitable<bool> App::report_progress(PgConn& c) {
  std::vector<std::pair<std::string, std::string>> progress;
  {
    std::lock_guard lk(store_.mutex());
    progress = store_.take_progress();
  }
  if (progress.empty() || !reporting_) co_return false;
  std::vector<std::string> handles, offsets;
  handles.reserve(progress.size());
  offsets.reserve(progress.size());
  for (auto& [h, o] : progress) {
    handles.push_back(h);
    offsets.push_back(o);
  }
  PgParams args{text_array_literal(handles), text_array_literal(offsets)};
  std::optional<PgError> failed;
  try {
    // One statement for all of them: the set-based function when the extension
    // has it, else report_shape() over the arrays (same result, row by row).
    if (report_set_based_)
      co_await c.exec("SELECT shapesync.report_shapes($1::text[], $2::text[])", args);
    else
      co_await c.exec(
          "SELECT shapesync.report_shape(h, NULL, o) FROM unnest($1::text[], $2::text[]) AS u(h, o)", args);
  } catch (const PgError& e) {
    failed = e;
  }
  if (failed && failed->sqlstate == "42883" && report_set_based_) {
    report_set_based_ = false;  // no report_shapes(): retry row by row
    failed.reset();
    try {
      co_await c.exec(
          "SELECT shapesync.report_shape(h, NULL, o) FROM unnest($1::text[], $2::text[]) AS u(h, o)", args);
    } catch (const PgError& e) {
      failed = e;
    }
  }
  if (failed) {
    if (failed->sqlstate == "42883") {
      reporting_ = false;  // extension without report_shape()
      co_return false;
    }
    std::lock_guard lk(store_.mutex());
    store_.restore_progress(progress);  // reported by the next round
    throw *failed;
  }
  co_return true;
}

asio::awaitable<void> App::run_reporter() {
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

asio::awaitable<void> App::report_consumer(PgConn& c) {
  if (!consumer_reporting_) co_return;
  uint64_t last;
  {
    std::lock_guard lk(store_.mutex());
    last = store_.last_tick();
  }
  PgParams args{cfg_.consumer_name, std::to_string(last)};
  std::optional<PgResult> r;
  try {
    r = co_await c.exec("SELECT shapesync.consumer_report($1, $2::bigint)", args);
  } catch (const PgError& e) {
    if (e.sqlstate != "42883") throw;
    consumer_reporting_ = false;  // extension without retention
    log_warn("the extension has no shapesync.consumer_report(): the change log is not held for this sidecar");
  }
  if (!r) co_return;
  uint64_t horizon = std::stoull(std::string(r->get(0, 0)));
  if (horizon > last) co_await restart_after_truncation(c, horizon);
}

asio::awaitable<void> App::restart_after_truncation(PgConn& c, uint64_t horizon) {
  PgResult r = co_await c.exec("SELECT coalesce(max(tick_id), 0) FROM shapesync.ticks");
  uint64_t now_tick = std::stoull(std::string(r.get(0, 0)));
  uint64_t was;
  {
    std::lock_guard lk(store_.mutex());
    was = store_.last_tick();
    store_.restart_from(now_tick, "this sidecar fell behind the change log");
  }
  log_error("this sidecar (consumer \"", cfg_.consumer_name, "\") had read up to tick ", was,
            " but the change log now starts after tick ", horizon,
            ": it was not seen for longer than shapesync.consumer_timeout and the log was truncated since. "
            "Every shape it held is dropped and rebuilt from PostgreSQL on its next request (its clients refetch); "
            "shapes older than shapesync.log_retention get new handles. Following ticks from ", now_tick);
  if (consumer_reporting_) {
    PgParams args{cfg_.consumer_name, std::to_string(now_tick)};
    co_await c.exec("SELECT shapesync.consumer_report($1, $2::bigint)", args);
  }
}

asio::awaitable<void> App::spill_segments() {
  std::vector<SpillJob> jobs;
  std::vector<std::string> dead;
  {
    std::lock_guard lk(store_.mutex());
    if (store_.spill_dir().empty()) co_return;
    jobs = store_.take_spills();
    dead = store_.take_dead_dirs();
  }
  std::error_code ec;
  for (auto& d : dead) std::filesystem::remove_all(d, ec);
  for (auto& j : jobs) {
    std::string err;
    std::filesystem::create_directories(std::filesystem::path(j.path).parent_path(), ec);
    if (!write_segment(j.path, j.entries, err)) {
      log_warn("shape ", j.shape->handle, ": keeping its log chunk in memory: ", err);
      continue;
    }
    bool kept;
    {
      std::lock_guard lk(store_.mutex());
      kept = store_.commit_spill(j);
    }
    if (!kept) std::filesystem::remove(j.path, ec);
  }
  co_return;
}

asio::awaitable<int> App::fill_segment(const std::shared_ptr<Shape>& s, LogRead& r) {
  SpilledChunk seg = *r.segment;
  std::vector<std::shared_ptr<const std::string>> got;
  if (read_segment(seg, r.segment_after, got)) {
    r.entries = std::move(got);
    r.segment.reset();
    co_return 0;
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
      co_return 503;
    }
    std::string reason = std::string("change log retention: ") + failed->what();
    try {
      auto lease = co_await pool_.acquire();
      PgParams args{s->handle, reason};
      co_await lease->exec("SELECT shapesync.invalidate_shape($1, $2)", args);
    } catch (const PgError& e2) {
      log_warn("cannot retire shape ", s->handle, ": ", e2.what());
    }
    std::lock_guard lk(store_.mutex());
    store_.invalidate(s, reason);
    co_return 409;
  }
  std::vector<LogEntry> entries;
  {
    std::lock_guard lk(store_.mutex());
    for (auto& e : store_.replay(*s, batches))
      if (!(e.offset < seg.first) && !(seg.last < e.offset)) entries.push_back(std::move(e));
  }
  std::string err;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(seg.path).parent_path(), ec);
  if (!write_segment(seg.path, entries, err)) log_warn("shape ", s->handle, ": ", err);
  got.clear();
  if (!read_segment(seg, r.segment_after, got)) {
    log_error("shape ", s->handle, ": rebuilt segment ", seg.path, " does not match the chunk (", entries.size(),
              " entries); serving it from the rebuild");
    for (auto& e : entries)
      if (r.segment_after < e.offset) got.push_back(e.json);
  }
  r.entries = std::move(got);
  r.segment.reset();
  co_return 0;
}

asio::awaitable<void> App::poll_invalidations(PgConn& c) {
  // Safety net for invalidations recorded in the database but not seen in the
  // stream (another sidecar's, an administrator's invalidate_shape(), DDL).
  if (inval_cursor_.empty()) {
    PgResult r = co_await c.exec("SELECT now()::text");
    inval_cursor_ = std::string(r.get(0, 0));
    co_return;
  }
  PgParams args{inval_cursor_};
  PgResult r = co_await c.exec(
      "SELECT handle, coalesce(reason, ''), invalidated_at::text FROM shapesync.shapes "
      "WHERE state <> 'active' AND invalidated_at > $1::timestamptz ORDER BY invalidated_at",
      args);
  std::lock_guard lk(store_.mutex());
  for (int i = 0; i < r.rows(); ++i) {
    inval_cursor_ = std::string(r.get(i, 2));
    if (auto s = store_.by_handle(std::string(r.get(i, 0)))) {
      store_.invalidate(s, std::string(r.get(i, 1)));
      log_info("shape ", s->handle, " invalidated in the database: ", r.get(i, 1));
    }
  }
}

asio::awaitable<void> App::process_new_ticks(PgConn& c, uint64_t notified) {
  for (;;) {
    uint64_t last;
    {
      std::lock_guard lk(store_.mutex());
      last = store_.last_tick();
    }
    uint64_t hi = notified;  // a NOTIFY names the newest tick: no need to ask
    notified = 0;
    if (hi <= last) {
      PgResult r = co_await c.exec("SELECT coalesce(max(tick_id), 0) FROM shapesync.ticks");
      hi = std::stoull(std::string(r.get(0, 0)));
    }
    if (hi <= last) co_return;
    uint64_t upto = std::min(hi, last + 500);
    std::vector<Batch> batches;
    std::optional<PgError> truncated;
    try {
      batches = co_await fetch_batches(c, last, upto);
    } catch (const PgError& e) {
      if (e.sqlstate != kLogTruncated) throw;
      truncated = e;
    }
    if (truncated) {
      PgResult h = co_await c.exec("SELECT horizon_tick FROM shapesync.log_state");
      co_await restart_after_truncation(c, std::stoull(std::string(h.get(0, 0))));
      continue;
    }
    std::vector<std::pair<std::string, std::string>> invalidated;
    {
      std::lock_guard lk(store_.mutex());
      for (auto& b : batches) {
        auto inv = store_.apply(std::move(b));
        invalidated.insert(invalidated.end(), inv.begin(), inv.end());
      }
      store_.advance(upto);
      store_.trim_window(static_cast<size_t>(cfg_.batch_window_ticks), cfg_.window_bytes);
    }
    if (!invalidated.empty()) co_await record_invalidations(c, invalidated);
    co_await spill_segments();
    if (upto == hi) co_return;
  }
}

asio::awaitable<void> App::run_ticker() {
  auto ex = co_await asio::this_coro::executor;
  PgConn c(ex);
  bool first = true;
  int backoff_ms = 100;
  for (;;) {
    try {
      co_await c.connect(cfg_.database_url);
      co_await c.exec(kSessionSetup);
      co_await c.exec("SET synchronous_commit = on");
      PgResult ver = co_await c.exec(
          "SELECT extversion FROM pg_extension WHERE extname = 'shapesync'");
      if (ver.rows() == 0)
        throw PgError("extension shapesync is not installed in this database (CREATE EXTENSION shapesync)", "",
                      false);
      co_await c.exec("LISTEN shapesync");
      if (first) {
        PgResult r = co_await c.exec("SELECT coalesce(max(tick_id), 0) FROM shapesync.ticks");
        std::lock_guard lk(store_.mutex());
        store_.set_last_tick(std::stoull(std::string(r.get(0, 0))));
        first = false;
      }
      // hold the change log from where this sidecar reads on (before reading)
      co_await report_consumer(c);
      auto check_worker = [&]() -> asio::awaitable<void> {
        PgResult w = co_await c.exec("SELECT shapesync.worker_pid()");
        bool own = w.is_null(0, 0);
        if (own != own_ticking_.load())
          log_info(own ? "the extension's ticker is not running (shapesync not in shared_preload_libraries?): "
                         "ticking every " + std::to_string(cfg_.tick_interval_ms) + " ms from the sidecar"
                       : "the extension's background worker ticks; following its notifications");
        own_ticking_ = own;
      };
      co_await check_worker();
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
        uint64_t notified = 0;
        for (auto& [channel, payload] : c.take_notifications()) {
          try {
            notified = std::max<uint64_t>(notified, std::stoull(payload));
          } catch (...) {
          }
        }
        if (own) {
          // Without the extension's worker, one sidecar at a time ticks: the one
          // holding this session lock (released if it dies, then another takes over).
          if (!ticker_lock_held) {
            PgResult got = co_await c.exec("SELECT pg_try_advisory_lock(21321, 0)");
            ticker_lock_held = got.get(0, 0) == "t";
            if (ticker_lock_held) log_info("this sidecar ticks for the database (no ticker worker)");
          }
          if (ticker_lock_held) {
            PgResult t = co_await c.exec(
                "SELECT t, pg_notify('shapesync', t::text) FROM shapesync.tick() t WHERE t IS NOT NULL");
            if (t.rows() > 0) notified = std::max<uint64_t>(notified, std::stoull(std::string(t.get(0, 0))));
            // and, as the worker would, keeps the change log bounded
            if (std::chrono::steady_clock::now() - last_maintenance > std::chrono::seconds(10)) {
              last_maintenance = std::chrono::steady_clock::now();
              std::string failed;
              try {
                co_await c.exec("SELECT * FROM shapesync.maintain()");
              } catch (const PgError& e) {
                if (e.connection_lost) throw;
                failed = e.sqlstate + " " + pg_why(e);
              }
              if (!failed.empty()) log_warn("shapesync.maintain() failed: ", failed);
            }
          }
        } else if (ticker_lock_held) {
          co_await c.exec("SELECT pg_advisory_unlock(21321, 0)");
          ticker_lock_held = false;
        }
        co_await process_new_ticks(c, notified);
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
