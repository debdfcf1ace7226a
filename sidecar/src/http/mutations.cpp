// POST /v1/mutations (docs/mutations.md): the request's JSON checked as far as
// its shape goes (size, nesting, an array of objects), the caller's token, then
// one call into the database, which decides everything else; its answer is the
// response body. Nothing from the body is ever spliced into SQL.
#include <chrono>
#include <string>
#include <string_view>

#include <boost/beast/core/string.hpp>
#include <nlohmann/json.hpp>

#include "http/app.hpp"
#include "http/mutations.hpp"
#include "util/log.hpp"

namespace shapesync {

namespace {

std::string message_body(std::string_view message, std::string_view code = {}) {
  nlohmann::json j{{"message", message}};
  if (!code.empty()) j["code"] = code;
  return j.dump();
}

}  // namespace

asio::awaitable<Response> App::handle_mutations(const Request& req, std::string_view query) {
  auto no_store = [](Response r) {
    r.set(http::field::cache_control, "no-store");
    return r;
  };
  if (req.method() == http::verb::options) {
    Response res{http::status::no_content, req.version()};
    common_headers(req, res);
    res.set(http::field::access_control_allow_methods, "POST, OPTIONS");
    res.set(http::field::access_control_allow_headers, "authorization, content-type, idempotency-key");
    res.set(http::field::access_control_max_age, "86400");
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    co_return res;
  }
  if (req.method() != http::verb::post) {
    Response res = json_response(req, http::status::method_not_allowed, message_body("Method not allowed: use POST"));
    res.set(http::field::allow, "POST, OPTIONS");
    co_return no_store(std::move(res));
  }
  if (auto refused = secret_refusal(req, query)) co_return std::move(*refused);
  if (!writer_)
    co_return no_store(json_response(req, http::status::not_found, message_body("writes are not enabled")));
  // Writes always act as a token's role: with --insecure (no key) there is no
  // role to write as, and the sidecar's own rights are for reading.
  if (!auth_on_)
    co_return no_store(json_response(
        req, http::status::forbidden,
        message_body("writes need authorization: start shapesyncd with a JWT key (--jwt-secret, --jwt-public-key or "
                     "--jwks-file); without one (--insecure) POST /v1/mutations is refused",
                     "writes_need_auth")));
  std::shared_ptr<const AuthDecision> decided = gate_->decide(req.base());
  const AuthDecision& who = *decided;
  if (who.refusal) co_return auth_refusal(req, *who.refusal);
  if (who.shape_claim)
    co_return no_store(json_response(
        req, http::status::forbidden,
        message_body("a shape-scoped token (one with a \"shape\" claim) reads its shape and cannot write",
                     "shape_scoped_token")));
  auto ct = req.find(http::field::content_type);
  if (ct == req.end() || !boost::beast::iequals(ct->value().substr(0, 16), "application/json"))
    co_return no_store(json_response(req, http::status::unsupported_media_type,
                                     message_body("Content-Type must be application/json")));

  QueryMap q = parse_query(query);
  auto ap = q.find("allow_partial");
  std::optional<std::string> key;
  if (auto k = req.find("idempotency-key"); k != req.end()) key = std::string(k->value());
  auto parsed = parse_mutations_request(req.body(), ap == q.end() ? std::string_view() : std::string_view(ap->second),
                                        key, cfg_.max_mutations);
  if (auto* e = std::get_if<MutationsRequestError>(&parsed)) {
    if (e->too_large)
      co_return no_store(json_response(req, http::status::payload_too_large, e->errors.body()));
    co_return error_400(req, e->errors);
  }
  const WriteRequest& wr = std::get<WriteRequest>(parsed);

  auto started = std::chrono::steady_clock::now();
  WriteOutcome got = co_await writer_->apply(who.caller, wr);
  pm_.write_duration.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  using K = WriteOutcome::Kind;
  switch (got.kind) {
    case K::kDone: {
      for (auto& [status, n] : got.statuses) pm_.mutations.labels({status}).inc(static_cast<uint64_t>(n));
      co_return no_store(
          json_response(req, got.invalid ? http::status::bad_request : http::status::ok, std::move(got.body)));
    }
    case K::kBadInput:
      co_return no_store(json_response(req, http::status::bad_request, message_body(got.db->what(), got.db->sqlstate)));
    case K::kTooLarge:
      co_return no_store(
          json_response(req, http::status::payload_too_large, message_body(got.db->what(), got.db->sqlstate)));
    case K::kForbidden: {
      std::string msg = got.db->what();
      if (!got.db->hint.empty()) msg += " (" + got.db->hint + ")";
      co_return no_store(json_response(req, http::status::forbidden, message_body(msg, got.db->sqlstate)));
    }
    case K::kRetry:
      co_return error_503(req,
                          message_body("the write met concurrent transactions " + std::to_string(got.attempts) +
                                           " times; send it again (it is idempotent)",
                                       got.db->sqlstate),
                          1);
    case K::kDatabase:
      if (got.db->sqlstate == "42883") {  // no shapesync.apply_mutations(): the extension predates writes
        log_warn("POST /v1/mutations: ", got.db->what(),
                 ": the shapesync extension must be updated (ALTER EXTENSION shapesync UPDATE)");
        co_return error_503(req, message_body("writes are not available: the shapesync extension must be updated"),
                            kConfigurationRetryAfter);
      }
      co_return pg_failure_response(req, *got.db, "applying mutations", "");
  }
  co_return pg_failure_response(req, *got.db, "applying mutations", "");
}

}  // namespace shapesync
