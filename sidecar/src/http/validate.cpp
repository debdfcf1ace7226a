// Hostile-input checks: parameter text, JSON depth, request heads.
#include "http/validate.hpp"

#include <boost/beast/core/string.hpp>

namespace shapesync {

namespace http = boost::beast::http;

bool valid_utf8(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;  // continuation byte first, overlong 2-byte lead (C0/C1), or > U+10FFFF lead
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return false;  // overlong
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;                                             // surrogate
    i += len;
  }
  return true;
}

namespace {

// What is wrong with a piece of parameter text, or "".
const char* text_problem(std::string_view s) {
  if (s.find('\0') != std::string_view::npos) return "must not contain a NUL byte (%00)";
  if (!valid_utf8(s)) return "must be valid UTF-8";
  return "";
}

constexpr std::string_view kSubsetPrefix = "subset__";

}  // namespace

std::optional<ValidationErrors> check_param_text(const QueryMap& q) {
  ValidationErrors e;
  for (auto& [k, v] : q) {
    if (const char* p = text_problem(k); *p) {
      // The name itself cannot be echoed as it is (a JSON string is UTF-8).
      e.add("query", std::string("parameter names ") + p);
      continue;
    }
    const char* p = text_problem(v);
    if (!*p) continue;
    // `subset` is the object of the subset__* errors: a parameter of that
    // very name goes into it too, so the key keeps one type (found by the
    // request fuzzer: "subset" as an array, then subset__x indexed it).
    if (k.size() > kSubsetPrefix.size() && std::string_view(k).substr(0, kSubsetPrefix.size()) == kSubsetPrefix)
      e.errors["subset"][k.substr(kSubsetPrefix.size())].push_back(p);
    else if (k == "subset")
      e.errors["subset"]["subset"].push_back(p);
    else
      e.add(k, p);
  }
  if (e.empty()) return std::nullopt;
  return e;
}

namespace {
struct TooDeep {};
}  // namespace

std::variant<nlohmann::json, std::string> parse_json_bounded(std::string_view text, int max_depth) {
  // nlohmann's parser itself keeps its nesting on the heap; the callback sees
  // the depth of every object or array as it opens and stops the parse there,
  // before a deep value exists.
  auto cb = [max_depth](int depth, nlohmann::json::parse_event_t ev, nlohmann::json&) {
    if ((ev == nlohmann::json::parse_event_t::object_start || ev == nlohmann::json::parse_event_t::array_start) &&
        depth >= max_depth)
      throw TooDeep{};
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), cb);
  } catch (const TooDeep&) {
    return "JSON nests deeper than " + std::to_string(max_depth) + " levels";
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for 1e999
    return std::string(e.what());
  }
}

std::optional<HeadError> check_request_head(const http::request_header<>& h, size_t max_url_bytes) {
  if (h.target().size() > max_url_bytes)
    return HeadError{414, error_body("URI too long (at most " + std::to_string(max_url_bytes) + " bytes)")};
  bool has_te = false, chunked_only = true;
  size_t te_fields = 0;
  for (auto& f : h) {
    if (f.name() != http::field::transfer_encoding) continue;
    has_te = true;
    ++te_fields;
    std::string_view v = f.value();
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    if (!boost::beast::iequals(v, "chunked")) chunked_only = false;
  }
  if (!has_te) return std::nullopt;
  if (h.find(http::field::content_length) != h.end())
    return HeadError{400, error_body("Malformed HTTP request: both Transfer-Encoding and Content-Length")};
  if (!chunked_only || te_fields > 1)
    return HeadError{501, error_body("Transfer-Encoding not supported (only \"chunked\" is)")};
  return std::nullopt;
}

HeadError head_too_large(std::string_view received, size_t max_url_bytes) {
  size_t eol = received.find("\r\n");
  if (eol == std::string_view::npos || eol > max_url_bytes + 32)  // method, spaces and version around the target
    return HeadError{414, error_body("URI too long (at most " + std::to_string(max_url_bytes) + " bytes)")};
  return HeadError{431, error_body("Request header fields too large")};
}

std::optional<HeadError> read_error_answer(const boost::system::error_code& ec, std::string_view received,
                                           size_t max_url_bytes) {
  if (!ec || ec.category() != http::make_error_code(http::error::end_of_stream).category()) return std::nullopt;
  switch (static_cast<http::error>(ec.value())) {
    case http::error::end_of_stream:
    case http::error::partial_message:
    case http::error::need_more:
    case http::error::need_buffer:
    case http::error::end_of_chunk:
    case http::error::stale_parser:
    case http::error::short_read:
      return std::nullopt;  // the client went away mid-request (or nothing came)
    case http::error::body_limit:
      return HeadError{413, error_body("Request body too large")};
    case http::error::header_limit:
      return head_too_large(received, max_url_bytes);
    default:
      return HeadError{400, error_body("Malformed HTTP request: " + ec.message())};
  }
}

std::string error_body(std::string_view msg) {
  nlohmann::json j = {{"error", std::string(msg)}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace shapesync
