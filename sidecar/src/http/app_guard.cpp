// App's answers to database errors that are not the client's, and the
// protection of /metrics (docs/security.md).
#include <memory>

#include "http/app.hpp"
#include <nlohmann/json.hpp>

#include "db/errors.hpp"
#include "http/db_errors.hpp"
#include "util/log.hpp"
#include "util/log_limit.hpp"

namespace shapesync {

namespace {


// Compares without stopping at the first difference (a token is not guessed byte by byte).
bool same_secret(std::string_view given, std::string_view want) {
  if (want.empty()) return false;
  unsigned char diff = given.size() == want.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ want[i % want.size()]);
  return diff == 0;
}

}  // namespace

std::string configuration_error_body(const PgError& e) {
  bool privilege = e.sqlstate == "42501";
  nlohmann::json j = {
      {"code", privilege ? "insufficient_privilege" : "database_configuration_error"},
      {"message", std::string(privilege ? "The sidecar's database role lacks a privilege it needs: "
                                        : "The sidecar's database configuration is wrong: ") +
                      e.what() + ". An operator must fix it (see docs/security.md); retrying will not help until then."}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}


Response App::pg_failure_response(const Request& req, const PgError& e, std::string_view doing,
                                  std::string_view privilege) const {
  switch (classify_pg_error(e)) {
    case PgFailure::kConfiguration:
      shapes_.log_configuration_error(e, doing, privilege);
      return error_503(req, configuration_error_body(e), kConfigurationRetryAfter);
    case PgFailure::kUnreachable:
      log_warn("database unreachable while ", doing, ": ", e.what());
      return error_503(req, R"({"code":"database_unreachable","error":"Database is unreachable"})", 10);
    default:
      log_warn("database error while ", doing, ": ", e.sqlstate, " ", e.what());
      return error_503(req, R"({"message":"The database could not complete the request, please retry"})", 1);
  }
}

bool App::metrics_authorized(const Request& req, std::string_view query) const {
  const std::string& want = !cfg_.metrics_token.empty() ? cfg_.metrics_token : cfg_.secret;
  if (want.empty()) return true;
  if (auto a = req.find(http::field::authorization); a != req.end()) {
    std::string_view v = a->value();
    if (v.size() > 7 && (v.substr(0, 7) == "Bearer " || v.substr(0, 7) == "bearer ") && same_secret(v.substr(7), want))
      return true;
  }
  QueryMap q = parse_query(query);
  for (const char* k : {"token", "secret"})
    if (auto it = q.find(k); it != q.end() && same_secret(it->second, want)) return true;
  return false;
}

Response App::unauthorized_metrics(const Request& req) const {
  Response res = json_response(req, http::status::unauthorized, R"({"message":"Unauthorized - /metrics needs its token"})");
  res.set(http::field::www_authenticate, "Bearer");
  res.set(http::field::cache_control, "no-store");
  return res;
}

}  // namespace shapesync
