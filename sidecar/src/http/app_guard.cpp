// App's answers to database errors that are not the client's, and the
// protection of /metrics (docs/security.md).
#include <libpq-fe.h>

#include <memory>

#include "http/app.hpp"
#include "http/pg_errors.hpp"
#include "util/log.hpp"
#include "util/log_limit.hpp"

namespace shapesync {

namespace {

// The role named in the connection string, for GRANT hints ("" when it names none).
std::string role_of(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (err) PQfreemem(err);
  if (!opts) return "";
  std::string user;
  for (PQconninfoOption* o = opts; o->keyword; ++o)
    if (std::string_view(o->keyword) == "user" && o->val) user = o->val;
  PQconninfoFree(opts);
  return user;
}

// Compares without stopping at the first difference (a token is not guessed byte by byte).
bool same_secret(std::string_view given, std::string_view want) {
  if (want.empty()) return false;
  unsigned char diff = given.size() == want.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ want[i % want.size()]);
  return diff == 0;
}

}  // namespace

void App::log_configuration_error(const PgError& e, std::string_view doing, std::string_view privilege) const {
  static LogLimit limit;
  size_t suppressed = 0;
  if (!limit.allow(suppressed)) return;
  std::string hint = grant_hint(e, privilege, role_of(cfg_.database_url));
  log_error("configuration: the sidecar's database role cannot go on ", doing, ": ", e.sqlstate, " ", e.what(),
            hint.empty() ? std::string() : "; run as an owner: " + hint,
            suppressed ? " (" + std::to_string(suppressed) + " more like it not logged)" : std::string(),
            ". Shared state (shapes other sidecars serve) is left alone.");
}

Response App::pg_failure_response(const Request& req, const PgError& e, std::string_view doing,
                                  std::string_view privilege) const {
  switch (classify_pg_error(e)) {
    case PgFailure::kConfiguration:
      log_configuration_error(e, doing, privilege);
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
