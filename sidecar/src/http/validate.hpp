// Hostile-input checks on what a client sends, before any of it is used:
// parameter text (UTF-8, NUL bytes), JSON nesting depth, and the request head
// (URL length, transfer framing). Pure functions, unit-tested and fuzzed.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <nlohmann/json.hpp>

#include "http/params.hpp"

namespace shapesync {

// JSON from the network nests at most this deep (objects and arrays).
inline constexpr int kMaxJsonDepth = 32;

// True when s is well-formed UTF-8 (no overlong forms, no surrogates, <= U+10FFFF).
bool valid_utf8(std::string_view s);

// Every parameter name and value must be valid UTF-8 without NUL bytes: libpq
// takes C strings (a NUL would cut the text short) and PostgreSQL rejects
// invalid UTF-8. Returns the 400 errors, naming each bad parameter
// (`subset__x` under "subset": {"x": ...}), or nullopt when all is well.
std::optional<ValidationErrors> check_param_text(const QueryMap& q);

// Parses JSON text from a client, refusing nesting deeper than max_depth
// (every later recursive walk, such as dump(), then stays shallow). Returns
// the value or the error message.
std::variant<nlohmann::json, std::string> parse_json_bounded(std::string_view text, int max_depth = kMaxJsonDepth);

// What a request head that cannot be served gets: status and JSON body.
struct HeadError {
  int status = 400;
  std::string body;
};

// Checks a parsed request head: the target is at most max_url_bytes (414),
// Transfer-Encoding is absent or exactly "chunked" (another coding: 501), and
// never together with Content-Length (400: ambiguous framing).
std::optional<HeadError> check_request_head(const boost::beast::http::request_header<>& h, size_t max_url_bytes);

// For a request whose head went over the header limit: 414 when its request
// line (the bytes read so far, up to the first CRLF) alone is over
// max_url_bytes or has not ended, else 431.
HeadError head_too_large(std::string_view received, size_t max_url_bytes);

// The answer to a failed read of a request: 413 (body over the limit), 431 or
// 414 (head over the limit; `received` is what was read), 400 for malformed
// HTTP or framing (bad or two Content-Lengths, Content-Length with chunked,
// a bad chunk, ...). nullopt when the connection just ended or timed out:
// nobody is there to answer.
std::optional<HeadError> read_error_answer(const boost::system::error_code& ec, std::string_view received,
                                           size_t max_url_bytes);

// The JSON error bodies of the session's own answers: {"error":"<msg>"}.
std::string error_body(std::string_view msg);

}  // namespace shapesync
