// Hostile input (issue 9, HTTP side): parameter text, JSON depth, request heads
// and framing, SQLSTATE classification, connection limits. No sockets, no database.
#include <gtest/gtest.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/_experimental/test/stream.hpp>

#include "db/changes.hpp"
#include "http/params.hpp"
#include "http/db_errors.hpp"
#include "http/subset.hpp"
#include "http/validate.hpp"
#include "net/limits.hpp"

using namespace shapesync;
using nlohmann::json;
namespace http = boost::beast::http;

namespace {

json errors_of(const std::optional<ValidationErrors>& e) { return e ? e->errors : json(); }

std::string deep_json(size_t levels) {
  std::string s = R"({"foo": )";
  s.append(levels, '[');
  s.append(levels, ']');
  s += "}";
  return s;
}

// Parses raw request bytes with Beast's parser the way the session does (head,
// head checks, body) and returns the status the session would answer with
// (0: the request is served).
int session_status(std::string raw, size_t body_limit = 1 << 20, uint32_t header_limit = 65536,
                   size_t max_url = 32768) {
  http::request_parser<http::string_body> p;
  p.body_limit(body_limit);
  p.header_limit(header_limit);
  p.eager(true);
  boost::beast::error_code ec;
  size_t used = 0;
  // The whole request at once (as if it had all arrived); the head first.
  std::string_view rest = raw;
  while (!p.is_header_done() && !ec) {
    used = p.put(boost::asio::buffer(rest.data(), rest.size()), ec);
    rest.remove_prefix(used);
    if (ec == http::error::need_more) return -1;
  }
  if (!ec) {
    if (auto h = check_request_head(p.get(), max_url)) return h->status;
    while (!p.is_done() && !ec) {
      used = p.put(boost::asio::buffer(rest.data(), rest.size()), ec);
      rest.remove_prefix(used);
      if (ec == http::error::need_more) return -1;
    }
  }
  if (ec) {
    auto a = read_error_answer(ec, raw, max_url);
    return a ? a->status : -2;
  }
  return 0;
}

}  // namespace

TEST(Utf8, AcceptsValidRejectsInvalid) {
  EXPECT_TRUE(valid_utf8("plain ascii"));
  EXPECT_TRUE(valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(valid_utf8("\xFF"));
  EXPECT_FALSE(valid_utf8("\xC3"));              // truncated
  EXPECT_FALSE(valid_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(valid_utf8("\xE0\x80\xAF"));      // overlong
  EXPECT_FALSE(valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(valid_utf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(valid_utf8("\x80"));              // lone continuation
}

TEST(ParamText, NulAnywhereIsA400NamingTheParameter) {
  // where=true%00%20AND%20false was served as where=true (libpq's C strings).
  auto e = check_param_text(parse_query("table=items&offset=-1&where=true%00%20AND%20false"));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->errors, json::parse(R"j({"where":["must not contain a NUL byte (%00)"]})j"));
  EXPECT_EQ(errors_of(check_param_text(parse_query("table=items%00x&offset=-1"))),
            json::parse(R"j({"table":["must not contain a NUL byte (%00)"]})j"));
  EXPECT_EQ(errors_of(check_param_text(parse_query("offset=-1&subset__where=a%00"))),
            json::parse(R"j({"subset":{"where":["must not contain a NUL byte (%00)"]}})j"));
  EXPECT_FALSE(check_param_text(parse_query("table=items&offset=-1&where=title%3D%27x%27")));
}

TEST(ParamText, AParameterNamedSubsetNestsWithTheSubsetErrors) {
  // Either order: `subset` stays an object (it was an array, then indexing it threw).
  json want = json::parse(R"j({"subset":{"subset":["must be valid UTF-8"],"where":["must be valid UTF-8"]}})j");
  EXPECT_EQ(errors_of(check_param_text(parse_query("subset=%FF&subset__where=%FF"))), want);
  EXPECT_EQ(errors_of(check_param_text(parse_query("subset__where=%FF&subset=%FF"))), want);
}

TEST(ParamText, InvalidUtf8IsA400NamingTheParameter) {
  EXPECT_EQ(errors_of(check_param_text(parse_query("table=%FF&offset=-1"))),
            json::parse(R"j({"table":["must be valid UTF-8"]})j"));
  EXPECT_EQ(errors_of(check_param_text(parse_query("table=items&offset=-1&where=title%3D%27%C3%28%27"))),
            json::parse(R"j({"where":["must be valid UTF-8"]})j"));
  EXPECT_EQ(errors_of(check_param_text(parse_query("table=items&offset=-1&params%5B1%5D=%E2%82"))),
            json::parse(R"j({"params[1]":["must be valid UTF-8"]})j"));
  // A bad name cannot be echoed; the body is still valid JSON.
  auto e = check_param_text(parse_query("table=items&offset=-1&%FF=1"));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->errors, json::parse(R"j({"query":["parameter names must be valid UTF-8"]})j"));
  EXPECT_NO_THROW(json::parse(e->body()));
}

TEST(ParamText, ErrorBodyNeverThrowsOnInvalidUtf8) {
  ValidationErrors e;
  e.add("table", "Table \"\xFF\" does not exist");
  std::string body;
  EXPECT_NO_THROW(body = e.body());
  EXPECT_NO_THROW(json::parse(body));
}

TEST(JsonDepth, DeepBodyIsRefusedWithoutRecursion) {
  // 60 000 levels, 120 KB: killed shapesyncd with SIGSEGV (recursive dump()).
  std::string body = deep_json(60000);
  auto r = merge_post_body(parse_query("table=items&offset=-1"), body);
  ASSERT_TRUE(std::holds_alternative<BodyError>(r));
  auto& e = std::get<BodyError>(r);
  EXPECT_EQ(e.status, 400);
  json j = json::parse(e.body);
  EXPECT_EQ(j["error"], "Invalid JSON in request body");
  EXPECT_NE(j["details"].get<std::string>().find("deeper than"), std::string::npos) << e.body;
  // Within the limit, nested values still work (stored as their JSON text).
  auto ok = merge_post_body(parse_query("table=items&offset=-1"), deep_json(kMaxJsonDepth - 2));
  EXPECT_TRUE(std::holds_alternative<QueryMap>(ok));
}

TEST(JsonDepth, BoundedParser) {
  EXPECT_TRUE(std::holds_alternative<json>(parse_json_bounded("[[[1]]]", 3)));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_json_bounded("[[[[1]]]]", 3)));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_json_bounded(std::string(100000, '['))));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_json_bounded("{\"a\":")));
  // a number out of range is an error, not an exception past the handler (found by the fuzzer)
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_json_bounded("{\"a\":1e999}")));
  auto r = merge_post_body(QueryMap{}, "{\"where\":1e999}");
  ASSERT_TRUE(std::holds_alternative<BodyError>(r));
  EXPECT_EQ(std::get<BodyError>(r).status, 400);
  // invalid UTF-8 in a JSON string is a parse error, not a later 500
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_json_bounded("{\"a\":\"\xFF\"}")));
}

TEST(JsonDepth, SubsetParamsDeepIsA400) {
  QueryMap q = parse_query("table=items&offset=-1");
  q.emplace("subset__params", "{\"1\":" + std::string(50000, '[') + std::string(50000, ']') + "}");
  auto r = parse_subset_params(q);
  ASSERT_TRUE(std::holds_alternative<ValidationErrors>(r));
  EXPECT_EQ(std::get<ValidationErrors>(r).errors,
            json::parse(R"j({"subset":{"params":["Parameter values must be strings, numbers or booleans"]}})j"));
}

TEST(Params, JsonObjectFormIsSupported) {
  auto r = parse_shape_params(parse_query("table=items&offset=-1&where=id%3D%241&params=%7B%221%22%3A%222%22%7D"));
  ASSERT_TRUE(std::holds_alternative<ShapeParams>(r)) << std::get<ValidationErrors>(r).body();
  auto& p = std::get<ShapeParams>(r);
  ASSERT_EQ(p.params.size(), 1u);
  EXPECT_EQ(p.params.at(1), "2");
  // numbers and booleans are their JSON text, like subset__params
  auto r2 = parse_shape_params(parse_query("table=t&offset=-1&params=%7B%221%22%3A5%2C%222%22%3Atrue%7D"));
  ASSERT_TRUE(std::holds_alternative<ShapeParams>(r2));
  EXPECT_EQ(std::get<ShapeParams>(r2).params.at(1), "5");
  EXPECT_EQ(std::get<ShapeParams>(r2).params.at(2), "true");
}

TEST(Params, JsonObjectFormErrorsAreClear) {
  auto err = [](std::string_view q) {
    auto r = parse_shape_params(parse_query(q));
    EXPECT_TRUE(std::holds_alternative<ValidationErrors>(r)) << q;
    return std::holds_alternative<ValidationErrors>(r) ? std::get<ValidationErrors>(r).errors : json();
  };
  EXPECT_EQ(err("table=t&offset=-1&params=nope"), json::parse(R"j({"params":["params must be valid JSON"]})j"));
  EXPECT_EQ(err("table=t&offset=-1&params=%5B1%5D"), json::parse(R"j({"params":["params must be a JSON object"]})j"));
  EXPECT_EQ(err("table=t&offset=-1&params=%7B%221%22%3A%7B%7D%7D"),
            json::parse(R"j({"params":["Parameter values must be strings, numbers or booleans"]})j"));
  EXPECT_EQ(err("table=t&offset=-1&params=%7B%221%22%3A%22a%22%7D&params%5B2%5D=b"),
            json::parse(R"j({"params":["Use either params[n]=value or params={\"n\":\"value\"}, not both"]})j"));
}

TEST(Params, HugeIndexGetsAClearMessage) {
  auto r = parse_shape_params(parse_query("table=t&offset=-1&params%5B99999999999%5D=x"));
  ASSERT_TRUE(std::holds_alternative<ValidationErrors>(r));
  EXPECT_EQ(std::get<ValidationErrors>(r).errors,
            json::parse(R"j({"params":["Parameter $99999999999 is out of range: parameters are numbered from 1 to 65535"]})j"));
  auto s = parse_subset_params(parse_query("subset__params=%7B%2299999999999%22%3A%22x%22%7D"));
  ASSERT_TRUE(std::holds_alternative<ValidationErrors>(s));
  EXPECT_EQ(std::get<ValidationErrors>(s).errors,
            json::parse(R"j({"subset":{"params":["Parameter $99999999999 is out of range: parameters are numbered from 1 to 65535"]}})j"));
  // letters are still "only numbers"
  auto l = parse_shape_params(parse_query("table=t&offset=-1&params%5Babc%5D=x"));
  EXPECT_EQ(std::get<ValidationErrors>(l).errors,
            json::parse(R"j({"params":["Parameters can only use numbers as keys"]})j"));
}

TEST(RequestHead, Framing) {
  const std::string get = "GET /v1/shape?table=items&offset=-1 HTTP/1.1\r\nHost: x\r\n";
  EXPECT_EQ(session_status(get + "\r\n"), 0);
  // Transfer-Encoding: xchunked with a Content-Length was accepted; Beast
  // takes it when TE comes first, so the head check refuses it.
  EXPECT_EQ(session_status(get + "Transfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc"), 400);
  EXPECT_EQ(session_status(get + "Content-Length: 3\r\nTransfer-Encoding: xchunked\r\n\r\nabc"), 400);
  EXPECT_EQ(session_status(get + "Transfer-Encoding: xchunked\r\n\r\n"), 501);
  EXPECT_EQ(session_status(get + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), 501);
  EXPECT_EQ(session_status(get + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 0);
  EXPECT_EQ(session_status(get + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"), 400);
  EXPECT_EQ(session_status(get + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"), 400);
  EXPECT_EQ(session_status(get + "Content-Length: -1\r\n\r\n"), 400);
  EXPECT_EQ(session_status(get + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"), 0);  // same value: RFC 9110 allows
  EXPECT_EQ(session_status(get + "Transfer-Encoding: chunked\r\n\r\nzz\r\n"), 400);       // bad chunk
}

TEST(RequestHead, SizeLimits) {
  std::string big_url = "GET /v1/shape?where=" + std::string(40000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_EQ(session_status(big_url), 414);
  std::string huge_url = "GET /v1/shape?where=" + std::string(100000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_EQ(session_status(huge_url), 414);
  std::string big_headers = "GET / HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 100; ++i) big_headers += "X-Pad-" + std::to_string(i) + ": " + std::string(1000, 'b') + "\r\n";
  EXPECT_EQ(session_status(big_headers + "\r\n"), 431);
  std::string big_body = "POST /v1/shape HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + std::string(2000, '{');
  EXPECT_EQ(session_status(big_body, 1000), 413);
}

TEST(RequestHead, ReadErrorsThatNeedNoAnswer) {
  EXPECT_FALSE(read_error_answer(http::error::end_of_stream, "", 100));
  EXPECT_FALSE(read_error_answer(http::error::partial_message, "GET /", 100));
  EXPECT_FALSE(read_error_answer(boost::asio::error::connection_reset, "", 100));
  EXPECT_EQ(read_error_answer(http::error::bad_method, "", 100)->status, 400);
  EXPECT_NO_THROW(json::parse(read_error_answer(http::error::bad_method, "", 100)->body));
}

TEST(PgErrors, OneClassification) {
  auto err = [](const char* st, bool lost = false) { return PgError("m", st, lost); };
  EXPECT_EQ(classify_pg_error(err("42501")), PgFailure::kConfiguration);
  EXPECT_EQ(classify_pg_error(err("28P01")), PgFailure::kConfiguration);
  EXPECT_EQ(classify_pg_error(err("3D000")), PgFailure::kConfiguration);
  EXPECT_EQ(classify_pg_error(err("08006")), PgFailure::kUnreachable);
  EXPECT_EQ(classify_pg_error(err("57P01")), PgFailure::kUnreachable);
  EXPECT_EQ(classify_pg_error(err("53300")), PgFailure::kUnreachable);
  EXPECT_EQ(classify_pg_error(err("42703", true)), PgFailure::kUnreachable);
  EXPECT_EQ(classify_pg_error(err("")), PgFailure::kUnreachable);
  EXPECT_EQ(classify_pg_error(err("42601")), PgFailure::kRequest);
  EXPECT_EQ(classify_pg_error(err("22012")), PgFailure::kRequest);
  EXPECT_EQ(classify_pg_error(err("0A000")), PgFailure::kRequest);
  EXPECT_EQ(classify_pg_error(err("P0001")), PgFailure::kRequest);
  EXPECT_EQ(classify_pg_error(err("XX000")), PgFailure::kOther);
}

TEST(PgErrors, OnlyErrorsAboutTheShapeRetireIt) {
  // "snapshot failed: permission denied for table shape_snapshots" retired
  // shapes other sidecars served.
  EXPECT_FALSE(retires_shape(PgError("permission denied for table shape_snapshots", "42501", false)));
  EXPECT_FALSE(retires_shape(PgError("connection lost", "", true)));
  EXPECT_FALSE(retires_shape(PgError("terminating connection", "57P01", false)));
  EXPECT_FALSE(retires_shape(PgError("too many connections", "53300", false)));
  EXPECT_FALSE(retires_shape(PgError("internal", "XX000", false)));
  EXPECT_TRUE(retires_shape(PgError("division by zero", "22012", false)));
  EXPECT_TRUE(retires_shape(PgError("column dropped", "42703", false)));
  EXPECT_TRUE(retires_shape(PgError("log truncated", kLogTruncated, false)));
  EXPECT_TRUE(retires_shape(PgError("abandoned", kSnapshotAbandoned, false)));
}

TEST(PgErrors, ConfigurationBodyAndGrantHint) {
  PgError e("permission denied for table shape_snapshots", "42501", false);
  json body = json::parse(configuration_error_body(e));
  EXPECT_EQ(body["code"], "insufficient_privilege");
  EXPECT_NE(body["message"].get<std::string>().find("permission denied for table shape_snapshots"), std::string::npos);
  EXPECT_EQ(grant_hint(e, "INSERT", "sync"), "GRANT INSERT ON TABLE shape_snapshots TO sync");
  EXPECT_EQ(grant_hint(PgError("permission denied for schema shapesync", "42501", false), "SELECT", "sync"),
            "GRANT USAGE ON SCHEMA shapesync TO sync");
  EXPECT_EQ(grant_hint(PgError("permission denied for table \"public\".\"items\" (the sidecar's role needs ...)",
                               "42501", false),
                       "SELECT", ""),
            "GRANT SELECT ON TABLE \"public\".\"items\" TO <the sidecar's role>");
  EXPECT_EQ(request_error_message([] {
              PgError x("syntax error at or near \"x\"", "42601", false);
              x.position = 7;
              return x;
            }()),
            "At location 7: syntax error at or near \"x\"");
}

TEST(ConnectionLimits, PerAddressAndTotal) {
  ConnectionLimits l(5, 2);
  auto a = boost::asio::ip::make_address("10.0.0.1");
  auto a6 = boost::asio::ip::make_address("::ffff:10.0.0.1");  // the same client
  auto b = boost::asio::ip::make_address("10.0.0.2");
  ConnectionLimits::Refusal why;
  auto s1 = l.admit(a, why);
  auto s2 = l.admit(a6, why);
  ASSERT_TRUE(s1 && s2);
  EXPECT_FALSE(l.admit(a, why));
  EXPECT_EQ(why, ConnectionLimits::Refusal::kPerAddress);
  std::vector<ConnectionLimits::Slot> others;
  for (int i = 0; i < 3; ++i) {
    auto s = l.admit(boost::asio::ip::make_address("10.0.1." + std::to_string(i)), why);
    ASSERT_TRUE(s);
    others.push_back(std::move(*s));
  }
  EXPECT_FALSE(l.admit(b, why));
  EXPECT_EQ(why, ConnectionLimits::Refusal::kTotal);
  s1.reset();  // a connection closes: its place is free again
  EXPECT_EQ(l.open(), 4u);
  EXPECT_TRUE(l.admit(b, why));
  EXPECT_EQ(l.open(), 4u);  // that slot was a temporary, released at once
  EXPECT_EQ(l.open_from(a), 1u);
}

TEST(ConnectionLimits, DefaultStaysBelowTheDescriptorLimit) {
  EXPECT_EQ(default_max_connections(1048576), 1048576u - 128);
  EXPECT_LT(default_max_connections(48), 48u);
  EXPECT_GE(default_max_connections(16), 1u);
  std::string r = refusal_response(ConnectionLimits::Refusal::kPerAddress);
  EXPECT_EQ(r.rfind("HTTP/1.1 503 ", 0), 0u);
  EXPECT_NE(r.find("Retry-After: 5"), std::string::npos);
}
