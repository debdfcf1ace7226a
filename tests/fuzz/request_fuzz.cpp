// libFuzzer target over the request path's pure functions (docs/security.md):
// Beast's request parser with the session's head checks, the query string,
// parameter text checks, shape and subset parameter validation, POST bodies,
// ORDER BY, identifiers, offsets and POST /v1/mutations bodies. The first input byte picks the entry
// point. Invariants checked besides "no crash, no sanitizer report": every
// error body is valid JSON, and a query map survives encode_query/parse_query.
//
// Built by CMake with clang (-fsanitize=fuzzer,address,undefined) when clang
// has libFuzzer; `ctest -L fuzz` runs it for SHAPESYNC_FUZZ_SECONDS (25 s).
// Longer, by hand: build/request_fuzz -max_total_time=3600 build/fuzz-corpus tests/fuzz/seeds
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <nlohmann/json.hpp>

#include "model/offset.hpp"
#include "http/mutations.hpp"
#include "http/params.hpp"
#include "http/subset.hpp"
#include "http/validate.hpp"

using namespace shapesync;
namespace http = boost::beast::http;

namespace {

void must(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

void json_ok(const std::string& body) { must(nlohmann::json::accept(body), "an error body is valid JSON"); }

// The query string as the sidecar handles it, up to the database.
void query_path(std::string_view query, bool post, std::string_view body) {
  QueryMap q = parse_query(query);
  if (post) {
    auto merged = merge_post_body(q, body);
    if (auto* e = std::get_if<BodyError>(&merged)) {
      json_ok(e->body);
      return;
    }
    q = std::get<QueryMap>(std::move(merged));
    QueryMap back = parse_query(encode_query(q));
    must(back == q, "encode_query/parse_query round trip");
  }
  if (auto bad = check_param_text(q)) {
    json_ok(bad->body());
    return;
  }
  auto p = parse_shape_params(q);
  if (auto* e = std::get_if<ValidationErrors>(&p)) json_ok(e->body());
  if (post || is_subset_request(q)) {
    auto s = parse_subset_params(q);
    if (auto* e = std::get_if<ValidationErrors>(&s)) json_ok(e->body());
  }
}

void request_path(std::string_view raw) {
  http::request_parser<http::string_body> parser;
  parser.header_limit(4096);
  parser.body_limit(8192);
  parser.eager(true);
  boost::beast::error_code ec;
  std::string_view rest = raw;
  while (!parser.is_header_done() && !ec && !rest.empty()) {
    size_t n = parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
    rest.remove_prefix(n);
    if (ec == http::error::need_more) return;
    if (n == 0 && !ec) return;
  }
  if (!ec && parser.is_header_done()) {
    if (auto h = check_request_head(parser.get(), 2048)) {
      json_ok(h->body);
      return;
    }
    while (!parser.is_done() && !ec && !rest.empty()) {
      size_t n = parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
      rest.remove_prefix(n);
      if (ec == http::error::need_more) return;
      if (n == 0 && !ec) return;
    }
    if (!parser.is_done() && !ec) {
      parser.put_eof(ec);
      if (!parser.is_done()) return;
    }
  }
  if (ec) {
    if (auto a = read_error_answer(ec, raw, 2048)) json_ok(a->body);
    return;
  }
  auto& req = parser.get();
  std::string_view target = req.target();
  auto qpos = target.find('?');
  std::string_view query = qpos == std::string_view::npos ? std::string_view() : target.substr(qpos + 1);
  query_path(query, req.method() == http::verb::post, req.body());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 7) {
    case 0:
      request_path(in);
      break;
    case 1:
      query_path(in, false, "");
      break;
    case 2: {  // POST: query, then a NUL-free separator '\n', then the body
      auto nl = in.find('\n');
      query_path(in.substr(0, nl), true, nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1));
      break;
    }
    case 3: {
      auto r = parse_json_bounded(in);
      if (auto* j = std::get_if<nlohmann::json>(&r)) (void)j->dump();  // shallow, so never deep recursion
      break;
    }
    case 4:
      (void)parse_order_by(in);
      (void)parse_columns(in);
      (void)parse_relation(in);
      (void)parse_offset(in);
      break;
    case 6: {  // POST /v1/mutations: the body checks, then what goes to the database is valid JSON
      auto r = parse_mutations_request(in, {}, std::nullopt, 50);
      if (auto* e = std::get_if<MutationsRequestError>(&r)) json_ok(e->errors.body());
      else must(nlohmann::json::accept(std::get<WriteRequest>(r).mutations), "the mutations passed on are JSON");
      break;
    }
    case 5:
      (void)valid_utf8(in);
      (void)head_too_large(in, 64);
      break;
  }
  return 0;
}
