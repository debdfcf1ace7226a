// SQLSTATE classification (see errors.hpp).
#include "db/errors.hpp"

#include "db/changes.hpp"

namespace shapesync {

namespace {
bool starts(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
}  // namespace

PgFailure classify_pg_error(const PgError& e) {
  const std::string& st = e.sqlstate;
  if (e.connection_lost || st.empty()) return PgFailure::kUnreachable;
  // 08 connection exception, 57 operator intervention, 53 insufficient resources
  if (starts(st, "08") || starts(st, "57") || starts(st, "53")) return PgFailure::kUnreachable;
  // 42501 insufficient_privilege, 28 invalid authorization, 3D000 invalid catalog name
  if (st == "42501" || starts(st, "28") || st == "3D000") return PgFailure::kConfiguration;
  // 42 syntax/access rule, 0A not supported, 22 data exception, 2F/39 routine
  // exceptions, P0 PL/pgSQL raise, 54 program limit (an expression too deep)
  if (starts(st, "42") || starts(st, "0A") || starts(st, "22") || starts(st, "2F") || starts(st, "39") ||
      starts(st, "P0") || starts(st, "54"))
    return PgFailure::kRequest;
  return PgFailure::kOther;
}

std::string request_error_message(const PgError& e) {
  std::string msg = e.what();
  if (e.position > 0) msg = "At location " + std::to_string(e.position) + ": " + msg;
  if (!e.detail.empty()) msg += ". " + e.detail;
  return msg;
}

bool retires_shape(const PgError& e) {
  if (e.sqlstate == kLogTruncated || e.sqlstate == kSnapshotAbandoned) return true;
  if (classify_pg_error(e) != PgFailure::kRequest) return false;
  return starts(e.sqlstate, "22") || starts(e.sqlstate, "42");
}


std::string grant_hint(const PgError& e, std::string_view privilege, std::string_view role) {
  std::string_view m = e.what();
  std::string who = role.empty() ? std::string("<the sidecar's role>") : std::string(role);
  static constexpr std::string_view kDenied = "permission denied for ";
  if (e.sqlstate != "42501" || !starts(m, kDenied)) return "";
  m.remove_prefix(kDenied.size());
  auto sp = m.find(' ');
  if (sp == std::string_view::npos) return "";
  std::string_view kind = m.substr(0, sp), object = m.substr(sp + 1);
  object = object.substr(0, object.find(" ("));
  std::string priv(privilege);
  if (kind == "schema") priv = "USAGE";
  if (kind == "function" || kind == "procedure") priv = "EXECUTE";
  if (kind == "sequence" && priv.empty()) priv = "USAGE";
  if (priv.empty()) priv = "SELECT";
  std::string k(kind);
  for (auto& c : k) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return "GRANT " + priv + " ON " + k + " " + std::string(object) + " TO " + who;
}

std::string pg_why(const PgError& e) {
  return e.sqlstate == "42501" && !e.hint.empty() ? std::string(e.what()) + ": " + e.hint : std::string(e.what());
}

std::string conninfo_user(const std::string& conninfo) {
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

}  // namespace shapesync
