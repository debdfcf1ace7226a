// The HTTP layer without a database: App::handle (and the parked-request path,
// App::answer_live / answer_read) against a fake ShapeSource over a real
// ShapeStore. The request -> response matrix of PROTOCOL.md §2.3, §3, §3.2,
// §5.2 and §6.4.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <thread>

#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "fake_shape_source.hpp"
#include "http/app.hpp"

using namespace shapesync;
using shapesync::testing::FakeShapeSource;
using json = nlohmann::json;

namespace {

constexpr const char* kSnapshotEnd =
    R"([{"headers":{"control":"snapshot-end","xmin":"100","xmax":"100","xip_list":[]}}])";

// Records what a streamed (SSE) response sent.
struct RecordingWriter : StreamWriter {
  std::optional<Response> head;
  std::vector<std::string> chunks;
  asio::awaitable<bool> write_head(Response& h) override {
    head = h;
    co_return true;
  }
  asio::awaitable<bool> write_chunk(std::string data) override {
    chunks.push_back(std::move(data));
    co_return true;
  }
};

// A parked request's waiter: counts its wake-ups.
struct CountingWaiter : Waiter {
  int woken = 0;
  void wake() override { ++woken; }
};

RowValues row(std::string id, std::string title, std::string done = "f") {
  return {std::move(id), std::move(title), std::move(done)};
}
Tx insert_tx(uint64_t xid, uint64_t tick, uint32_t rank, std::vector<RowValues> rows) {
  Tx t{xid, make_position(tick, rank), {}};
  for (auto& r : rows) t.changes.push_back({42, 'I', false, std::move(r), std::nullopt, {}, {}});
  return t;
}

std::string header(const Response& r, std::string_view name) { return std::string(r[name]); }
bool has(const Response& r, std::string_view name) { return r.find(name) != r.end(); }

struct Http : ::testing::Test {
  Config cfg = [] {
    Config c;
    c.cache_max_age_s = 61;
    c.cache_stale_age_s = 301;
    c.sse_timeout_ms = 30000;
    return c;
  }();
  std::unique_ptr<FakeShapeSource> src;
  std::unique_ptr<App> app;

  // The source and the app, made on first use (tests change cfg before).
  App& the_app() {
    if (!app) {
      src = std::make_unique<FakeShapeSource>(cfg);
      app = std::make_unique<App>(*src);
    }
    return *app;
  }
  FakeShapeSource& source() {
    the_app();
    return *src;
  }

  Request get(std::string target, http::verb verb = http::verb::get) {
    Request req{verb, target, 11};
    req.keep_alive(true);
    return req;
  }
  // Runs App::handle to its end on an io_context of its own.
  std::optional<Response> handle(Request req, Deferred& later, RecordingWriter& out) {
    App& a = the_app();
    asio::io_context io;
    std::optional<Response> res;
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          res = co_await a.handle(std::move(req), out, later);
          done = true;
        },
        [](std::exception_ptr e) {
          if (e) std::rethrow_exception(e);
        });
    io.run();
    EXPECT_TRUE(done) << "App::handle did not finish";
    return res;
  }
  Response request(Request req) {
    Deferred later;
    RecordingWriter out;
    auto res = handle(std::move(req), later, out);
    EXPECT_FALSE(later.wait) << "parked unexpectedly";
    EXPECT_FALSE(later.sse) << "streamed unexpectedly";
    if (!res) return Response{http::status::internal_server_error, 11};
    return *res;
  }
  Response request(std::string target) { return request(get(std::move(target))); }

  // The handle of the items shape after a first request.
  std::string handle_of_items() {
    Response r = request("/v1/shape?table=items&offset=-1");
    EXPECT_EQ(r.result(), http::status::ok);
    return header(r, "electric-handle");
  }
  std::shared_ptr<Shape> items_shape() { return source().store().by_handle(handle_of_items()); }
  void apply(uint64_t tick, std::vector<Tx> txs) { source().store().apply(Batch{tick, std::move(txs)}); }
  json body(const Response& r) { return json::parse(r.body()); }
  json errors(const Response& r) { return body(r)["errors"]; }
};

// --- 400: parameter validation, before any shape is looked up ---------------

TEST_F(Http, MissingTableIs400WithNoStore) {
  Response r = request("/v1/shape?offset=-1");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_EQ(body(r)["message"], "Invalid request");
  EXPECT_EQ(errors(r)["table"], json::array({"can't be blank"}));
  EXPECT_EQ(header(r, "cache-control"), "no-store");
  EXPECT_EQ(header(r, "surrogate-control"), "no-store");
  EXPECT_EQ(source().get_shape_calls, 0);
}

TEST_F(Http, BadOffsetsAre400) {
  for (const char* off : {"10", "1_2_3", "0_-1", "x"}) {
    Response r = request(std::string("/v1/shape?table=items&offset=") + off);
    EXPECT_EQ(r.result(), http::status::bad_request) << off;
    EXPECT_EQ(errors(r)["offset"], json::array({"has invalid format"})) << off;
  }
  Response r = request("/v1/shape?table=items");
  EXPECT_EQ(errors(r)["offset"], json::array({"can't be blank"}));
  EXPECT_EQ(source().get_shape_calls, 0);
}

TEST_F(Http, HandleRequiredPastMinusOneAndLiveNeedsAnOffset) {
  Response r = request("/v1/shape?table=items&offset=0_0");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_EQ(errors(r)["handle"], json::array({"can't be blank when offset != -1"}));
  r = request("/v1/shape?table=items&offset=0_0&live=true");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_TRUE(errors(r).contains("handle"));
  r = request("/v1/shape?table=items&offset=-1&live=true");
  EXPECT_EQ(errors(r)["live"], json::array({"can't be true when offset == -1"}));
  r = request("/v1/shape?table=items&offset=now&live=true");
  EXPECT_EQ(errors(r)["live"], json::array({"can't be true when offset is 'now'"}));
  r = request("/v1/shape?table=items&offset=-1&live_sse=true");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_TRUE(errors(r).contains("live_sse"));
  EXPECT_EQ(source().get_shape_calls, 0);
}

TEST_F(Http, BadColumnsReplicaParamsAre400) {
  Response r = request("/v1/shape?table=items&offset=-1&replica=half");
  EXPECT_EQ(errors(r)["replica"], json::array({"is invalid"}));
  r = request("/v1/shape?table=items&offset=-1&columns=id,%22%22");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_TRUE(errors(r).contains("columns"));
  r = request("/v1/shape?table=items&offset=-1&where=id=$1&params[a]=1");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_EQ(errors(r)["params"], json::array({"Parameters can only use numbers as keys"}));
  r = request("/v1/shape?table=items&offset=-1&where=id=$1&params[2]=1");
  EXPECT_EQ(errors(r)["params"], json::array({"Parameters must be numbered sequentially, starting from 1"}));
  r = request("/v1/shape?table=a.b.c&offset=-1");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_TRUE(errors(r).contains("table"));
  EXPECT_EQ(source().get_shape_calls, 0);
}

TEST_F(Http, NulAndInvalidUtf8NeverReachTheSource) {
  Response r = request("/v1/shape?table=items&offset=-1&where=a%00b");
  EXPECT_EQ(r.result(), http::status::bad_request);
  ASSERT_TRUE(errors(r).contains("where"));
  EXPECT_NE(errors(r)["where"][0].get<std::string>().find("NUL"), std::string::npos);
  r = request("/v1/shape?table=it%FFems&offset=-1");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_TRUE(errors(r).contains("table"));
  EXPECT_EQ(source().get_shape_calls, 0);
}

// --- errors from the source -------------------------------------------------

TEST_F(Http, ShapeErrorsMapToTheirStatus) {
  auto& s = source();
  s.next_error = ShapeError::invalid("where", "At location 3: syntax error");
  Response r = request("/v1/shape?table=items&offset=-1");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_EQ(errors(r)["where"], json::array({"At location 3: syntax error"}));
  EXPECT_EQ(header(r, "cache-control"), "no-store");

  ShapeError forbidden = ShapeError::invalid("table", "row-level security applies");
  forbidden.kind = ShapeError::Kind::kForbidden;
  s.next_error = forbidden;
  r = request("/v1/shape?table=items&offset=-1");
  EXPECT_EQ(r.result(), http::status::forbidden);
  EXPECT_EQ(errors(r)["table"], json::array({"row-level security applies"}));

  s.next_error = ShapeError::unavailable(R"({"message":"Failed to create shape, please retry"})", 3);
  r = request("/v1/shape?table=items&offset=-1");
  EXPECT_EQ(r.result(), http::status::service_unavailable);
  EXPECT_EQ(body(r)["message"], "Failed to create shape, please retry");
  EXPECT_EQ(header(r, "retry-after"), "3");
  EXPECT_EQ(header(r, "cache-control"), "no-store");
  EXPECT_EQ(header(r, "surrogate-control"), "no-store");

  s.next_error = ShapeError::database(PgError("connection lost", "08006", true), "registering the shape", "");
  r = request("/v1/shape?table=items&offset=-1");
  EXPECT_EQ(r.result(), http::status::service_unavailable);
  EXPECT_EQ(body(r)["code"], "database_unreachable");
  EXPECT_EQ(header(r, "retry-after"), "10");
  EXPECT_EQ(s.config_errors_logged, 0);

  s.next_error = ShapeError::database(PgError("permission denied for table shape_snapshots", "42501", false),
                                      "storing the snapshot", "INSERT");
  r = request("/v1/shape?table=items&offset=-1");
  EXPECT_EQ(r.result(), http::status::service_unavailable);
  EXPECT_EQ(body(r)["code"], "insufficient_privilege");
  EXPECT_EQ(header(r, "retry-after"), "30");
  EXPECT_EQ(s.config_errors_logged, 1);
}

TEST_F(Http, UnknownTableIs400FromTheSource) {
  Response r = request("/v1/shape?table=nonexistent&offset=-1");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_NE(errors(r)["table"][0].get<std::string>().find("does not exist"), std::string::npos);
  EXPECT_EQ(source().get_shape_calls, 1);
}

TEST_F(Http, ShapeNotServableAsksWhy) {
  source().servable = false;
  Response r = request("/v1/shape?table=items&offset=-1");
  EXPECT_EQ(r.result(), http::status::service_unavailable);
  EXPECT_EQ(header(r, "retry-after"), "7");
  EXPECT_EQ(body(r)["message"], "not servable");
}

// --- 200: headers, up-to-date, cache-control ---------------------------------

TEST_F(Http, InitialRequestIsTheFirstSnapshotChunkNeverUpToDate) {
  Response r = request("/v1/shape?table=items&offset=-1");
  ASSERT_EQ(r.result(), http::status::ok);
  EXPECT_EQ(r.body(), kSnapshotEnd);
  EXPECT_EQ(header(r, "electric-offset"), "0_0");
  EXPECT_FALSE(header(r, "electric-handle").empty());
  EXPECT_FALSE(has(r, "electric-up-to-date"));
  EXPECT_FALSE(has(r, "electric-cursor"));
  EXPECT_EQ(header(r, "electric-has-data"), "true");
  EXPECT_EQ(header(r, "content-type"), "application/json; charset=utf-8");
  EXPECT_EQ(header(r, "cache-control"), "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746");
  json schema = json::parse(header(r, "electric-schema"));
  EXPECT_EQ(schema["id"]["type"], "int4");
  EXPECT_EQ(schema["id"]["pk_index"], 0);
  EXPECT_TRUE(schema.contains("title"));
  EXPECT_EQ(header(r, "etag"), "\"" + header(r, "electric-handle") + ":-1:0_0\"");
  EXPECT_FALSE(header(r, "electric-server").empty());
  EXPECT_FALSE(header(r, "x-request-id").empty());
}

TEST_F(Http, EndOfSnapshotIsUpToDateAtSnapshotEnd) {
  std::string h = handle_of_items();
  Response r = request("/v1/shape?table=items&offset=0_0&handle=" + h);
  ASSERT_EQ(r.result(), http::status::ok);
  EXPECT_EQ(header(r, "electric-offset"), "0_inf");
  EXPECT_TRUE(has(r, "electric-up-to-date"));
  json b = body(r);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0]["headers"]["control"], "up-to-date");
  EXPECT_EQ(header(r, "electric-has-data"), "false");
  EXPECT_EQ(header(r, "cache-control"), "public, max-age=61, stale-while-revalidate=301");
  EXPECT_TRUE(has(r, "electric-schema"));
}

TEST_F(Http, SnapshotChunksAreServedInTurn) {
  source().snapshot_chunks = {R"([{"value":{"id":"1"}}])", kSnapshotEnd};
  Response first = request("/v1/shape?table=items&offset=-1");
  std::string h = header(first, "electric-handle");
  EXPECT_EQ(first.body(), R"([{"value":{"id":"1"}}])");
  EXPECT_FALSE(has(first, "electric-up-to-date"));
  Response second = request("/v1/shape?table=items&offset=0_0&handle=" + h);
  EXPECT_EQ(second.body(), kSnapshotEnd);
  EXPECT_EQ(header(second, "electric-offset"), "0_1");
  EXPECT_FALSE(has(second, "electric-up-to-date"));
  Response third = request("/v1/shape?table=items&offset=0_1&handle=" + h);
  EXPECT_EQ(header(third, "electric-offset"), "0_inf");
  EXPECT_TRUE(has(third, "electric-up-to-date"));
}

TEST_F(Http, ChangesAreServedFromTheLog) {
  auto s = items_shape();
  apply(2, {insert_tx(200, 2, 1, {row("1", "a"), row("2", "b")})});
  Response r = request("/v1/shape?table=items&offset=0_inf&handle=" + s->handle);
  ASSERT_EQ(r.result(), http::status::ok);
  json b = body(r);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0]["headers"]["operation"], "insert");
  EXPECT_EQ(b[1]["value"]["title"], "b");
  EXPECT_EQ(b[2]["headers"]["control"], "up-to-date");
  std::string end = LogOffset{make_position(2, 1), 2}.to_string();
  EXPECT_EQ(header(r, "electric-offset"), end);
  EXPECT_TRUE(has(r, "electric-up-to-date"));
  EXPECT_EQ(header(r, "electric-has-data"), "true");
  EXPECT_EQ(header(r, "etag"), "\"" + s->handle + ":0_inf:" + end + "\"");
}

TEST_F(Http, OffsetNowIsUpToDateWithATimeSaltedEtag) {
  std::string h = handle_of_items();
  Response a = request("/v1/shape?table=items&offset=now&handle=" + h);
  ASSERT_EQ(a.result(), http::status::ok);
  EXPECT_TRUE(has(a, "electric-up-to-date"));
  EXPECT_EQ(header(a, "electric-has-data"), "false");
  EXPECT_EQ(header(a, "cache-control"), "public, max-age=61, stale-while-revalidate=301");
  std::string etag = header(a, "etag");
  // "<handle>:now:<end>:<time>": four parts, never the same twice
  EXPECT_EQ(std::count(etag.begin(), etag.end(), ':'), 3) << etag;
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Request again = get("/v1/shape?table=items&offset=now&handle=" + h);
  again.set(http::field::if_none_match, etag);
  Response b = request(std::move(again));
  EXPECT_EQ(b.result(), http::status::ok);
  EXPECT_NE(header(b, "etag"), etag);
}

// --- 304: conditional requests ------------------------------------------------

TEST_F(Http, IfNoneMatchAtASnapshotChunkIs304) {
  Response a = request("/v1/shape?table=items&offset=-1");
  std::string etag = header(a, "etag");
  Request again = get("/v1/shape?table=items&offset=-1");
  again.set(http::field::if_none_match, "\"other\", " + etag);
  Response b = request(std::move(again));
  EXPECT_EQ(b.result(), http::status::not_modified);
  EXPECT_TRUE(b.body().empty());
  EXPECT_FALSE(has(b, "electric-schema"));
  EXPECT_EQ(header(b, "etag"), etag);
  EXPECT_EQ(header(b, "electric-handle"), header(a, "electric-handle"));
  EXPECT_EQ(header(b, "cache-control"), header(a, "cache-control"));
  // the etag of offset=-1 does not move with new changes (PROTOCOL.md §3.2)
  apply(2, {insert_tx(200, 2, 1, {row("1", "a")})});
  EXPECT_EQ(header(request("/v1/shape?table=items&offset=-1"), "etag"), etag);
}

TEST_F(Http, IfNoneMatchAtALogOffsetIs304UntilTheLogGrows) {
  auto s = items_shape();
  apply(2, {insert_tx(200, 2, 1, {row("1", "a")})});
  apply(3, {insert_tx(201, 3, 1, {row("2", "b")})});
  std::string at = LogOffset{make_position(2, 1), 0}.to_string();
  std::string target = "/v1/shape?table=items&handle=" + s->handle + "&offset=" + at;
  Response a = request(target);
  ASSERT_EQ(a.result(), http::status::ok);
  std::string etag = header(a, "etag");
  Request again = get(target);
  again.set(http::field::if_none_match, etag);
  EXPECT_EQ(request(std::move(again)).result(), http::status::not_modified);
  // a weak validator matches too
  Request weak = get(target);
  weak.set(http::field::if_none_match, "W/" + etag);
  EXPECT_EQ(request(std::move(weak)).result(), http::status::not_modified);
  // the end moves with the log, and so does the etag: 200 again
  apply(4, {insert_tx(202, 4, 1, {row("3", "c")})});
  Request later = get(target);
  later.set(http::field::if_none_match, etag);
  Response c = request(std::move(later));
  EXPECT_EQ(c.result(), http::status::ok);
  EXPECT_NE(header(c, "etag"), etag);
}

// --- 409: must-refetch ------------------------------------------------------

TEST_F(Http, HandleMismatchIs409WithTheCurrentHandle) {
  std::string h = handle_of_items();
  Response r = request("/v1/shape?table=items&offset=0_0&handle=not-" + h);
  EXPECT_EQ(r.result(), http::status::conflict);
  EXPECT_EQ(body(r), json::parse(R"([{"headers":{"control":"must-refetch"}}])"));
  EXPECT_EQ(header(r, "electric-handle"), h);
  EXPECT_EQ(header(r, "cache-control"), "public, max-age=60, must-revalidate");
  EXPECT_FALSE(has(r, "surrogate-control"));
}

TEST_F(Http, RotatedShapeIs409WithItsReplacement) {
  auto old = items_shape();
  source().store().invalidate(old, "truncated");
  Response r = request("/v1/shape?table=items&offset=0_inf&handle=" + old->handle);
  EXPECT_EQ(r.result(), http::status::conflict);
  std::string replacement = header(r, "electric-handle");
  EXPECT_FALSE(replacement.empty());
  EXPECT_NE(replacement, old->handle);
  // the handle offset -1 gives from now on is the replacement, never the old one
  Request fresh = get("/v1/shape?table=items&offset=-1&handle=" + old->handle);
  EXPECT_EQ(header(request(std::move(fresh)), "electric-handle"), replacement);
}

TEST_F(Http, SegmentRetiredIs409WithoutHandleAndUnreachableIs503) {
  cfg.chunk_bytes_threshold = 64;
  auto dir = std::filesystem::temp_directory_path() / ("http-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto& s = source();
  s.store().set_spill(dir.string(), 1);
  auto shape = items_shape();
  for (uint64_t t = 2; t < 6; ++t)
    apply(t, {insert_tx(200 + t, t, 1, {row(std::to_string(t), std::string(80, 'x'))})});
  for (auto& job : s.store().take_spills()) {
    std::string err;
    std::filesystem::create_directories(std::filesystem::path(job.path).parent_path());
    ASSERT_TRUE(write_segment(job.path, job.entries, err)) << err;
    ASSERT_TRUE(s.store().commit_spill(job));
  }
  ASSERT_FALSE(shape->spilled.empty());
  std::string target = "/v1/shape?table=items&offset=0_inf&handle=" + shape->handle;

  // read from the file through the source
  Response r = request(target);
  ASSERT_EQ(r.result(), http::status::ok);
  EXPECT_EQ(s.fill_calls, 1);
  json b = body(r);
  ASSERT_GE(b.size(), 1u);
  EXPECT_EQ(b[0]["value"]["id"], "2");
  EXPECT_EQ(header(r, "electric-offset"), shape->spilled.front().last.to_string());

  s.fill_override = FillResult::kRetired;
  r = request(target);
  EXPECT_EQ(r.result(), http::status::conflict);
  EXPECT_FALSE(has(r, "electric-handle"));
  EXPECT_EQ(header(r, "cache-control"), "public, max-age=1, must-revalidate");

  s.fill_override = FillResult::kUnreachable;
  r = request(target);
  EXPECT_EQ(r.result(), http::status::service_unavailable);
  EXPECT_EQ(header(r, "retry-after"), "5");
  EXPECT_EQ(s.fill_calls, 3);
  std::filesystem::remove_all(dir);
}

// --- live -------------------------------------------------------------------

TEST_F(Http, LiveRequestParksAndIsAnsweredByTheNextChange) {
  auto s = items_shape();
  Deferred later;
  RecordingWriter out;
  auto res = handle(get("/v1/shape?table=items&offset=0_inf&live=true&cursor=5&handle=" + s->handle), later, out);
  EXPECT_FALSE(res);
  ASSERT_TRUE(later.wait);
  LiveWait& w = *later.wait;
  EXPECT_EQ(w.shape, s);
  EXPECT_EQ(w.req_offset, "0_inf");
  EXPECT_TRUE(w.live);

  CountingWaiter waiter;
  LiveAnswer ans;
  EXPECT_EQ(the_app().answer_live(w, waiter, ans), App::LiveStep::kWait);
  EXPECT_EQ(source().store().stats().waiting, 1u);
  apply(2, {insert_tx(200, 2, 1, {row("1", "hello")})});
  EXPECT_EQ(waiter.woken, 1);
  EXPECT_EQ(source().store().stats().waiting, 0u);

  ASSERT_EQ(the_app().answer_live(w, waiter, ans), App::LiveStep::kAnswer);
  ASSERT_FALSE(ans.head.empty());  // the shared-body fast path
  ASSERT_TRUE(ans.body);
  json b = json::parse(*ans.body);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0]["value"]["title"], "hello");
  EXPECT_EQ(b[1]["headers"]["control"], "up-to-date");
  std::string end = LogOffset{make_position(2, 1), 0}.to_string();
  EXPECT_NE(ans.head.find("electric-offset: " + end + "\r\n"), std::string::npos) << ans.head;
  EXPECT_NE(ans.head.find("electric-up-to-date: \r\n"), std::string::npos);
  EXPECT_NE(ans.head.find("electric-cursor: "), std::string::npos);
  EXPECT_NE(ans.head.find("ETag: \"" + s->handle + ":0_inf:" + end + "\"\r\n"), std::string::npos);
  EXPECT_NE(ans.head.find("Cache-Control: public, max-age=5, stale-while-revalidate=5\r\n"), std::string::npos);
  EXPECT_NE(ans.head.find("Content-Length: " + std::to_string(ans.body->size()) + "\r\n"), std::string::npos);
}

TEST_F(Http, LiveRequestWithDataAnswersAtOnceWithLiveHeaders) {
  auto s = items_shape();
  apply(2, {insert_tx(200, 2, 1, {row("1", "a")})});
  Response r = request("/v1/shape?table=items&offset=0_inf&live=true&handle=" + s->handle);
  ASSERT_EQ(r.result(), http::status::ok);
  EXPECT_EQ(header(r, "cache-control"), "public, max-age=5, stale-while-revalidate=5");
  EXPECT_TRUE(has(r, "electric-cursor"));
  EXPECT_FALSE(has(r, "electric-schema"));
  EXPECT_TRUE(has(r, "electric-up-to-date"));
}

TEST_F(Http, TimedOutLongPollIsUpToDateWithAUniqueEtag) {
  cfg.long_poll_timeout_ms = 1;
  auto s = items_shape();
  Deferred later;
  RecordingWriter out;
  EXPECT_FALSE(handle(get("/v1/shape?table=items&offset=0_inf&live=true&handle=" + s->handle), later, out));
  ASSERT_TRUE(later.wait);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CountingWaiter waiter;
  LiveAnswer ans;
  ASSERT_EQ(the_app().answer_live(*later.wait, waiter, ans), App::LiveStep::kAnswer);
  EXPECT_TRUE(ans.head.empty());
  const Response& r = ans.res;
  EXPECT_EQ(r.result(), http::status::ok);
  EXPECT_EQ(header(r, "electric-has-data"), "false");
  EXPECT_TRUE(has(r, "electric-up-to-date"));
  EXPECT_TRUE(has(r, "electric-cursor"));
  EXPECT_EQ(header(r, "cache-control"), "public, max-age=5, stale-while-revalidate=5");
  std::string etag = header(r, "etag");
  EXPECT_EQ(etag.rfind("\"" + s->handle + ":0_inf:0_inf:", 0), 0u) << etag;
  EXPECT_EQ(std::count(etag.begin(), etag.end(), ':'), 3) << etag;
  json b = body(r);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0]["headers"]["control"], "up-to-date");
}

TEST_F(Http, ParkedRequestOfARotatedShapeIs409) {
  auto s = items_shape();
  Deferred later;
  RecordingWriter out;
  handle(get("/v1/shape?table=items&offset=0_inf&live=true&handle=" + s->handle), later, out);
  ASSERT_TRUE(later.wait);
  CountingWaiter waiter;
  LiveAnswer ans;
  ASSERT_EQ(the_app().answer_live(*later.wait, waiter, ans), App::LiveStep::kWait);
  source().store().invalidate(s, "truncated");
  EXPECT_EQ(waiter.woken, 1);
  auto replacement = source().make_shape(s->def.key);  // its definition's new shape, ready
  ASSERT_NE(replacement, s);
  ASSERT_EQ(the_app().answer_live(*later.wait, waiter, ans), App::LiveStep::kAnswer);
  EXPECT_EQ(ans.res.result(), http::status::conflict);
  EXPECT_EQ(header(ans.res, "electric-handle"), replacement->handle);
  EXPECT_EQ(json::parse(ans.res.body()), json::parse(R"([{"headers":{"control":"must-refetch"}}])"));
}

TEST_F(Http, OffsetPastTheEndWaitsThenIs400) {
  cfg.long_poll_timeout_ms = 2;  // out of bounds is reported after half of it
  auto s = items_shape();
  Deferred later;
  RecordingWriter out;
  std::string beyond = LogOffset{make_position(9, 1), 0}.to_string();
  EXPECT_FALSE(handle(get("/v1/shape?table=items&offset=" + beyond + "&handle=" + s->handle), later, out));
  ASSERT_TRUE(later.wait);
  EXPECT_FALSE(later.wait->live);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CountingWaiter waiter;
  LiveAnswer ans;
  ASSERT_EQ(the_app().answer_live(*later.wait, waiter, ans), App::LiveStep::kAnswer);
  EXPECT_EQ(ans.res.result(), http::status::bad_request);
  EXPECT_EQ(json::parse(ans.res.body())["errors"]["offset"], json::array({"out of bounds for this shape"}));
}

TEST_F(Http, StopAnswersParkedRequestsAtOnce) {
  auto s = items_shape();
  Deferred later;
  RecordingWriter out;
  handle(get("/v1/shape?table=items&offset=0_inf&live=true&handle=" + s->handle), later, out);
  ASSERT_TRUE(later.wait);
  CountingWaiter waiter;
  LiveAnswer ans;
  ASSERT_EQ(the_app().answer_live(*later.wait, waiter, ans), App::LiveStep::kWait);
  the_app().stop();
  EXPECT_EQ(waiter.woken, 1);
  ASSERT_EQ(the_app().answer_live(*later.wait, waiter, ans), App::LiveStep::kAnswer);
  EXPECT_EQ(ans.res.result(), http::status::ok);
  EXPECT_TRUE(has(ans.res, "electric-up-to-date"));
  // and nothing parks any more
  Response r = request("/v1/shape?table=items&offset=0_inf&live=true&handle=" + s->handle);
  EXPECT_EQ(r.result(), http::status::ok);
}

TEST_F(Http, SseSendsItsHeadThenHandsTheStreamOver) {
  auto s = items_shape();
  Deferred later;
  RecordingWriter out;
  auto res = handle(get("/v1/shape?table=items&offset=0_inf&live=true&live_sse=true&handle=" + s->handle), later, out);
  EXPECT_FALSE(res);
  ASSERT_TRUE(out.head);
  EXPECT_EQ(header(*out.head, "content-type"), "text/event-stream");
  EXPECT_EQ(header(*out.head, "cache-control"), "public, max-age=29");
  EXPECT_TRUE(has(*out.head, "electric-cursor"));
  EXPECT_FALSE(has(*out.head, "electric-up-to-date"));
  ASSERT_TRUE(later.sse);
  CountingWaiter waiter;
  EXPECT_EQ(the_app().sse_next(*later.sse, waiter).kind, SseStep::Kind::kWait);
  apply(2, {insert_tx(200, 2, 1, {row("1", "a")})});
  EXPECT_EQ(waiter.woken, 1);
  SseStep step = the_app().sse_next(*later.sse, waiter);
  ASSERT_EQ(step.kind, SseStep::Kind::kSend);
  ASSERT_TRUE(step.text);
  EXPECT_EQ(step.text->rfind("data: {", 0), 0u) << *step.text;
  EXPECT_NE(step.text->find(R"("control":"up-to-date")"), std::string::npos);
  the_app().end_sse(*later.sse, waiter);
}

// --- subset snapshots (PROTOCOL.md §4.8) -------------------------------------

TEST_F(Http, SubsetSnapshotIsNotCachedAndUsesTheCanonicalWhere) {
  auto& s = source();
  s.subset_check.canonical_where = "(id > 1)";
  s.subset_rows.rows = {{"2", "b", "t"}};
  Response r = request("/v1/shape?table=items&offset=-1&subset__where=id%3E1&subset__order_by=id&subset__limit=5");
  ASSERT_EQ(r.result(), http::status::ok) << r.body();
  EXPECT_EQ(header(r, "cache-control"), "no-cache");
  EXPECT_EQ(header(r, "electric-snapshot"), "true");
  EXPECT_EQ(header(r, "electric-offset"), "-1");
  EXPECT_FALSE(has(r, "etag"));
  EXPECT_FALSE(has(r, "electric-up-to-date"));
  json b = body(r);
  ASSERT_EQ(b["data"].size(), 1u);
  EXPECT_EQ(b["data"][0]["value"]["title"], "b");
  EXPECT_EQ(b["metadata"]["xmin"], "100");
  ASSERT_EQ(s.subset_queries.size(), 1u);
  EXPECT_NE(s.subset_queries[0].find("(id > 1)"), std::string::npos) << s.subset_queries[0];
  EXPECT_NE(s.subset_queries[0].find("LIMIT 5"), std::string::npos) << s.subset_queries[0];

  // the same as a POST body
  Request post = get("/v1/shape?table=items&offset=-1", http::verb::post);
  post.body() = R"({"where":"id > 1","order_by":"id","limit":5})";
  post.prepare_payload();
  Response p = request(std::move(post));
  EXPECT_EQ(p.result(), http::status::ok) << p.body();
  EXPECT_EQ(header(p, "cache-control"), "no-cache");
  EXPECT_EQ(s.subset_queries.size(), 2u);
}

TEST_F(Http, SubsetErrorsAreNestedUnderSubset) {
  source().subset_check.errors = {{"where", "Subqueries are not allowed in subsets"}};
  Response r = request("/v1/shape?table=items&offset=-1&subset__where=id%20IN%20(SELECT%201)");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_EQ(errors(r)["subset"]["where"], json::array({"Subqueries are not allowed in subsets"}));
  EXPECT_TRUE(source().subset_queries.empty());
  Request post = get("/v1/shape?table=items&offset=-1", http::verb::post);
  post.body() = "[1]";
  post.prepare_payload();
  Response p = request(std::move(post));
  EXPECT_EQ(p.result(), http::status::bad_request);
  EXPECT_EQ(body(p)["error"], "Request body must be a JSON object");
}

// --- routes -----------------------------------------------------------------

TEST_F(Http, OptionsIsACorsPreflight) {
  Request req = get("/v1/shape", http::verb::options);
  req.set(http::field::origin, "https://app.example");
  req.set(http::field::access_control_request_headers, "if-none-match, x-custom, traceparent");
  Response r = request(std::move(req));
  EXPECT_EQ(r.result(), http::status::no_content);
  EXPECT_EQ(header(r, "access-control-max-age"), "86400");
  EXPECT_EQ(header(r, "access-control-allow-headers"), "if-none-match,traceparent");
  EXPECT_EQ(header(r, "access-control-allow-origin"), "https://app.example");
  EXPECT_EQ(header(r, "access-control-allow-methods"), "GET, POST, HEAD, DELETE, OPTIONS");
  EXPECT_EQ(source().get_shape_calls, 0);
}

TEST_F(Http, CorsHeadersOnShapeResponses) {
  Response star = request("/v1/shape?table=items&offset=-1");
  EXPECT_EQ(header(star, "access-control-allow-origin"), "*");
  EXPECT_FALSE(has(star, "vary"));
  std::string expose = header(star, "access-control-expose-headers");
  for (const char* h : {"electric-cursor", "electric-handle", "electric-has-data", "electric-offset",
                        "electric-schema", "electric-up-to-date", "retry-after"})
    EXPECT_NE(expose.find(h), std::string::npos) << h;
  Request req = get("/v1/shape?table=items&offset=-1");
  req.set(http::field::origin, "https://app.example");
  Response echoed = request(std::move(req));
  EXPECT_EQ(header(echoed, "access-control-allow-origin"), "https://app.example");
  EXPECT_EQ(header(echoed, "vary"), "Origin");
  // errors carry them too: the browser must be able to read them
  Response bad = request("/v1/shape?offset=-1");
  EXPECT_EQ(header(bad, "access-control-allow-origin"), "*");
}

TEST_F(Http, UnknownPathIs404AndPathsAreNormalised) {
  Response r = request("/v2/shape?table=items&offset=-1");
  EXPECT_EQ(r.result(), http::status::not_found);
  EXPECT_EQ(r.body(), "Not found");
  EXPECT_EQ(request("/v1//shape/?table=items&offset=-1").result(), http::status::ok);
  EXPECT_EQ(request("/v1/%73hape?table=items&offset=-1").result(), http::status::ok);
  EXPECT_EQ(request("/").result(), http::status::ok);
}

TEST_F(Http, HeadHasTheHeadersAndNoBody) {
  Response r = request(get("/v1/shape?table=items&offset=-1", http::verb::head));
  EXPECT_EQ(r.result(), http::status::ok);
  EXPECT_TRUE(r.body().empty());
  EXPECT_EQ(header(r, "electric-offset"), "0_0");
}

TEST_F(Http, DeleteIs405UnlessEnabled) {
  Response r = request(get("/v1/shape?table=items&handle=h", http::verb::delete_));
  EXPECT_EQ(r.result(), http::status::method_not_allowed);
  EXPECT_EQ(body(r)["message"], "DELETE not allowed");
  EXPECT_TRUE(source().deletions.empty());
}

TEST_F(Http, DeleteWhenEnabledGoesToTheSource) {
  cfg.allow_shape_deletion = true;
  Response r = request(get("/v1/shape?table=items&handle=h1", http::verb::delete_));
  EXPECT_EQ(r.result(), http::status::accepted);
  ASSERT_EQ(source().deletions.size(), 1u);
  EXPECT_EQ(source().deletions[0].first, std::optional<std::string>("h1"));
  ASSERT_TRUE(source().deletions[0].second);
  EXPECT_NE(source().deletions[0].second->find("\"items\""), std::string::npos);
  source().delete_finds = false;
  r = request(get("/v1/shape?table=items", http::verb::delete_));
  EXPECT_EQ(r.result(), http::status::not_found);
  EXPECT_EQ(body(r)["message"], "No existing shape found");
}

TEST_F(Http, SecretGuardsTheShapeEndpoint) {
  cfg.secret = "s3cret";
  Response r = request("/v1/shape?table=items&offset=-1");
  EXPECT_EQ(r.result(), http::status::unauthorized);
  EXPECT_EQ(body(r)["message"], "Unauthorized - Invalid API secret");
  EXPECT_EQ(request("/v1/shape?table=items&offset=-1&secret=s3cret").result(), http::status::ok);
  EXPECT_EQ(request("/v1/shape?table=items&offset=-1&api_secret=s3cret").result(), http::status::ok);
}

TEST_F(Http, HealthFollowsTheSource) {
  Response r = request("/v1/health");
  EXPECT_EQ(r.result(), http::status::ok);
  EXPECT_EQ(body(r)["status"], "active");
  EXPECT_EQ(header(r, "cache-control"), "no-cache, no-store, must-revalidate");
  source().database_ready = false;
  r = request("/v1/health");
  EXPECT_EQ(r.result(), http::status::accepted);
  EXPECT_EQ(body(r)["status"], "waiting");
}

TEST_F(Http, AdmissionControlRefusesOverTheLimit) {
  cfg.max_existing_requests = 1;
  auto s = items_shape();
  Deferred later;
  RecordingWriter out;
  handle(get("/v1/shape?table=items&offset=0_inf&live=true&handle=" + s->handle), later, out);
  ASSERT_TRUE(later.wait);  // parked: it holds its place
  Response r = request("/v1/shape?table=items&offset=0_inf&handle=" + s->handle);
  EXPECT_EQ(r.result(), http::status::service_unavailable);
  EXPECT_EQ(body(r)["code"], "concurrent_request_limit_exceeded");
  EXPECT_EQ(header(r, "electric-internal-known-error"), "true");
  CountingWaiter waiter;
  the_app().abandon_live(*later.wait, waiter);  // gives it back
  EXPECT_EQ(request("/v1/shape?table=items&offset=0_inf&handle=" + s->handle).result(), http::status::ok);
}

}  // namespace
