// Command-line flags and environment variables of shapesyncd.
#include "config.hpp"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string_view>
#include <vector>

#include <unistd.h>

namespace shapesync {

namespace {

struct Setting {
  const char* flag;
  const char* env;
  const char* alt_env;  // Electric's name, where one exists
  const char* help;
  std::function<std::string(Config&, const std::string&)> apply;  // returns error or ""
};

std::string parse_int(const std::string& v, long long lo, long long hi, long long& out) {
  try {
    size_t used = 0;
    out = std::stoll(v, &used);
    if (used != v.size()) return "not an integer: " + v;
  } catch (...) {
    return "not an integer: " + v;
  }
  if (out < lo || out > hi) return "out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]: " + v;
  return "";
}

template <typename T>
std::function<std::string(Config&, const std::string&)> int_setting(T Config::*field, long long lo, long long hi) {
  return [=](Config& c, const std::string& v) {
    long long x;
    std::string e = parse_int(v, lo, hi, x);
    if (e.empty()) c.*field = static_cast<T>(x);
    return e;
  };
}

// A byte size: digits with an optional K, M, G or T suffix (powers of 1024;
// "KB", "KiB", "MiB"... alike, any case).
std::string parse_bytes(const std::string& v, unsigned long long lo, unsigned long long hi, unsigned long long& out) {
  size_t i = 0;
  while (i < v.size() && v[i] >= '0' && v[i] <= '9') ++i;
  if (i == 0 || i > 15) return "not a size (bytes, or a number with K, M, G or T): " + v;
  unsigned long long n = std::stoull(v.substr(0, i));
  std::string unit;
  for (char ch : v.substr(i)) unit += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  int shift = -1;
  if (unit.empty() || unit == "B") shift = 0;
  const std::string prefixes = "KMGT";
  for (size_t k = 0; k < prefixes.size(); ++k) {
    std::string p(1, prefixes[k]);
    if (unit == p || unit == p + "B" || unit == p + "IB") shift = 10 * static_cast<int>(k + 1);
  }
  if (shift < 0) return "not a size (bytes, or a number with K, M, G or T): " + v;
  if (shift > 0 && n > (~0ULL >> shift)) return "too large: " + v;
  out = n << shift;
  if (out < lo || out > hi)
    return "out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "] bytes: " + v;
  return "";
}

std::vector<Setting> settings() {
  return {
      {"--database-url", "DATABASE_URL", nullptr, "PostgreSQL connection URL or conninfo (required)",
       [](Config& c, const std::string& v) {
         c.database_url = v;
         return std::string();
       }},
      {"--listen", "SHAPESYNC_LISTEN", nullptr, "HTTP listen address HOST:PORT (default 127.0.0.1:3000)",
       [](Config& c, const std::string& v) {
         auto colon = v.rfind(':');
         if (colon == std::string::npos) return std::string("expected HOST:PORT, got ") + v;
         long long port;
         std::string e = parse_int(v.substr(colon + 1), 0, 65535, port);
         if (!e.empty()) return e;
         c.listen_host = v.substr(0, colon);
         if (c.listen_host.size() > 2 && c.listen_host.front() == '[')
           c.listen_host = c.listen_host.substr(1, c.listen_host.size() - 2);
         c.listen_port = static_cast<unsigned short>(port);
         return std::string();
       }},
      {"--threads", "SHAPESYNC_THREADS", nullptr,
       "threads for client connections, and as many for the database and the shape store (default: one per core)",
       int_setting(&Config::threads, 0, 256)},
      {"--long-poll-timeout", "SHAPESYNC_LONG_POLL_TIMEOUT", "ELECTRIC_LONG_POLL_TIMEOUT",
       "live long-poll timeout in ms (default 20000)", int_setting(&Config::long_poll_timeout_ms, 0, 3600000)},
      {"--tick-interval", "SHAPESYNC_TICK_INTERVAL", nullptr,
       "ms between ticks when the extension's worker is not preloaded (default 100)",
       int_setting(&Config::tick_interval_ms, 1, 60000)},
      {"--poll-interval", "SHAPESYNC_POLL_INTERVAL", nullptr,
       "ms between safety-net checks for new ticks if a NOTIFY is lost (default 1000)",
       int_setting(&Config::poll_interval_ms, 10, 600000)},
      {"--chunk-bytes", "SHAPESYNC_CHUNK_BYTES", "ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD",
       "snapshot/log chunk size threshold in bytes (default 10485760)",
       int_setting(&Config::chunk_bytes_threshold, 1, 1LL << 34)},
      {"--cache-max-age", "SHAPESYNC_CACHE_MAX_AGE", "ELECTRIC_CACHE_MAX_AGE",
       "max-age in s of non-live responses (default 60)", int_setting(&Config::cache_max_age_s, 0, 31536000)},
      {"--cache-stale-age", "SHAPESYNC_CACHE_STALE_AGE", "ELECTRIC_CACHE_STALE_AGE",
       "stale-while-revalidate in s of non-live responses (default 300)",
       int_setting(&Config::cache_stale_age_s, 0, 31536000)},
      {"--max-body-bytes", "SHAPESYNC_MAX_BODY_BYTES", nullptr, "largest accepted request body (default 1048576)",
       int_setting(&Config::max_body_bytes, 0, 1LL << 30)},
      {"--sse-timeout", "SHAPESYNC_SSE_TIMEOUT", nullptr, "ms after which an SSE response ends (default 60000)",
       int_setting(&Config::sse_timeout_ms, 1000, 3600000)},
      {"--sse-keepalive", "SHAPESYNC_SSE_KEEPALIVE", nullptr,
       "ms of silence after which SSE sends a keep-alive comment (default 21000)",
       int_setting(&Config::sse_keepalive_ms, 100, 3600000)},
      {"--idle-timeout", "SHAPESYNC_IDLE_TIMEOUT", nullptr,
       "ms a connection may stay silent between requests, or while sending a request's head, before it is "
       "closed (default 75000)",
       int_setting(&Config::idle_timeout_ms, 100, 3600000)},
      {"--report-interval", "SHAPESYNC_REPORT_INTERVAL", nullptr,
       "ms between this sidecar's live reports to the database (shapesync.consumer_report_stats: "
       "clients, requests/s, latency; docs/monitoring.md) (default 3000)",
       int_setting(&Config::report_interval_ms, 500, 60000)},
      {"--allow-shape-deletion", "SHAPESYNC_ALLOW_SHAPE_DELETION", "ELECTRIC_ENABLE_INTEGRATION_TESTING",
       "true to enable DELETE /v1/shape (default false)",
       [](Config& c, const std::string& v) {
         if (v != "true" && v != "false") return std::string("expected true or false, got ") + v;
         c.allow_shape_deletion = v == "true";
         return std::string();
       }},
      {"--secret", "SHAPESYNC_SECRET", "ELECTRIC_SECRET",
       "API secret required as ?secret= (or api_secret=) on /v1/shape (default: none)",
       [](Config& c, const std::string& v) {
         c.secret = v;
         return std::string();
       }},
      {"--max-initial-requests", "SHAPESYNC_MAX_INITIAL_REQUESTS", nullptr,
       "concurrent initial (offset=-1) shape requests before 503 (default 300)",
       int_setting(&Config::max_initial_requests, 1, 10000000)},
      {"--max-existing-requests", "SHAPESYNC_MAX_EXISTING_REQUESTS", nullptr,
       "concurrent other shape requests (incl. live) before 503 (default 100000)",
       int_setting(&Config::max_existing_requests, 1, 10000000)},
      {"--data-dir", "SHAPESYNC_DATA_DIR", nullptr,
       "directory for shape log segment files, a cache rebuilt from PostgreSQL when missing; "
       "one per sidecar (default $TMPDIR/shapesyncd-<port>)",
       [](Config& c, const std::string& v) -> std::string {
         if (v.empty()) return "must not be empty";
         c.data_dir = v;
         return "";
       }},
      {"--memory-chunks", "SHAPESYNC_MEMORY_CHUNKS", nullptr,
       "closed log chunks (--chunk-bytes each) of a shape kept in memory; older ones go to segment files (default 1)",
       int_setting(&Config::memory_chunks, 0, 1000)},
      {"--window-bytes", "SHAPESYNC_WINDOW_BYTES", nullptr,
       "memory for recent decoded batches, from which new shapes catch up without a query (default 134217728)",
       int_setting(&Config::window_bytes, 0, 1LL << 40)},
      {"--max-memory", "SHAPESYNC_MAX_MEMORY", nullptr,
       "memory budget of the shape store (logs, snapshots, shapes, the window): over it, shape logs go to segment "
       "files and idle shapes are evicted (reloaded when asked for again); bytes or with K/M/G/T; 0 = none "
       "(default 1G)",
       [](Config& c, const std::string& v) {
         unsigned long long x;
         std::string e = parse_bytes(v, 0, 1ULL << 50, x);
         if (e.empty()) c.max_memory = static_cast<size_t>(x);
         return e;
       }},
      {"--max-shapes", "SHAPESYNC_MAX_SHAPES", "ELECTRIC_MAX_SHAPES",
       "shapes held in memory, at most: the least recently used idle ones are evicted (0 = no limit; default 0)",
       int_setting(&Config::max_shapes, 0, 1LL << 40)},
      {"--evict-idle", "SHAPESYNC_EVICT_IDLE", nullptr,
       "ms a shape must have gone without a request (and without live clients) before it may be evicted "
       "(default 60000)",
       int_setting(&Config::evict_idle_ms, 0, 86400000)},
      {"--consumer-name", "SHAPESYNC_CONSUMER_NAME", nullptr,
       "this sidecar's name among the change log's consumers (shapesync.consumer_status); "
       "keep it stable across restarts (default shapesyncd@<hostname>:<port>)",
       [](Config& c, const std::string& v) -> std::string {
         if (v.empty() || v.size() > 200) return "must be 1 to 200 characters";
         c.consumer_name = v;
         return "";
       }},
      {"--max-header-bytes", "SHAPESYNC_MAX_HEADER_BYTES", nullptr,
       "largest accepted request line + headers; more is answered 431 (or 414 for a long URL) (default 65536)",
       int_setting(&Config::max_header_bytes, 1024, 1LL << 24)},
      {"--max-url-bytes", "SHAPESYNC_MAX_URL_BYTES", nullptr,
       "longest accepted request target (path and query); longer is answered 414 (default 32768); "
       "long WHERE clauses fit in a POST /v1/shape body",
       int_setting(&Config::max_url_bytes, 256, 1LL << 24)},
      {"--max-connections", "SHAPESYNC_MAX_CONNECTIONS", nullptr,
       "open client connections at most; more are answered 503 and closed at once "
       "(default 0: the descriptor limit, raised to its hard limit at start, minus a reserve for the "
       "database connections and segment files)",
       int_setting(&Config::max_connections, 0, 100000000)},
      {"--max-connections-per-address", "SHAPESYNC_MAX_CONNECTIONS_PER_ADDRESS", nullptr,
       "open connections from one client IP address at most; more are answered 503 and closed at once "
       "(default 1024; 0: no limit, e.g. behind a proxy whose address every client shares)",
       int_setting(&Config::max_connections_per_address, 0, 100000000)},
      {"--metrics-token", "SHAPESYNC_METRICS_TOKEN", nullptr,
       "token required on /metrics as 'Authorization: Bearer <token>' (or ?token=); without it, /metrics "
       "takes the --secret when one is set, and is open otherwise (default: none)",
       [](Config& c, const std::string& v) {
         c.metrics_token = v;
         return std::string();
       }},
      {"--jwt-secret", "SHAPESYNC_JWT_SECRET", nullptr,
       "HMAC secret (at least 32 bytes) verifying HS256/384/512 tokens in 'Authorization: Bearer <JWT>' on "
       "/v1/shape (default: none; see docs/auth.md)",
       [](Config& c, const std::string& v) {
         c.jwt_secret = v;
         return std::string();
       }},
      {"--jwt-public-key", "SHAPESYNC_JWT_PUBLIC_KEY", nullptr,
       "PEM file with a public key (RSA >= 2048 bits, or EC P-256/P-384) verifying RS*/ES* tokens (default: none)",
       [](Config& c, const std::string& v) {
         c.jwt_public_key_file = v;
         return std::string();
       }},
      {"--jwks-file", "SHAPESYNC_JWKS_FILE", nullptr,
       "JWKS file ({\"keys\":[...]}) verifying tokens by kid; read again on SIGHUP (default: none)",
       [](Config& c, const std::string& v) {
         c.jwks_file = v;
         return std::string();
       }},
      {"--jwt-issuer", "SHAPESYNC_JWT_ISSUER", nullptr, "required iss of tokens (default: not checked)",
       [](Config& c, const std::string& v) {
         c.jwt_issuer = v;
         return std::string();
       }},
      {"--jwt-audience", "SHAPESYNC_JWT_AUDIENCE", nullptr,
       "required aud of tokens (a string, or an array containing it) (default: not checked)",
       [](Config& c, const std::string& v) {
         c.jwt_audience = v;
         return std::string();
       }},
      {"--jwt-leeway", "SHAPESYNC_JWT_LEEWAY", nullptr, "seconds of clock skew allowed for exp and nbf (default 30)",
       int_setting(&Config::jwt_leeway_s, 0, 86400)},
      {"--jwt-cache-entries", "SHAPESYNC_JWT_CACHE_ENTRIES", nullptr,
       "verified tokens remembered until they expire, so that a token's signature is checked once; about 1 KB "
       "each; size it above the number of tokens in use (default 50000)",
       int_setting(&Config::jwt_cache_entries, 1, 10000000)},
      {"--jwt-role-claim", "SHAPESYNC_JWT_ROLE_CLAIM", nullptr,
       "claim naming the PostgreSQL role of a token, or a path such as .app_metadata.role (default role); "
       "a token without it gets --anonymous-role, or 403",
       [](Config& c, const std::string& v) -> std::string {
         if (v.empty() || v == ".") return "must name a claim";
         c.jwt_role_claim = v;
         return "";
       }},
      {"--anonymous-role", "SHAPESYNC_ANONYMOUS_ROLE", nullptr,
       "PostgreSQL role for requests without a token, or tokens without a role claim (default: none, 401)",
       [](Config& c, const std::string& v) -> std::string {
         if (v.size() > 63) return "a role name has at most 63 bytes";
         c.anonymous_role = v;
         return "";
       }},
      {"--insecure", "SHAPESYNC_INSECURE", "ELECTRIC_INSECURE",
       "run without a JWT key: every caller reads what the sidecar's role may read (a switch; "
       "or --insecure=true/false). Without a key and without it, shapesyncd refuses to start",
       [](Config& c, const std::string& v) {
         if (v != "true" && v != "false") return std::string("expected true or false, got ") + v;
         c.insecure = v == "true";
         return std::string();
       }},
      {"--snapshot-connections", "SHAPESYNC_SNAPSHOT_CONNECTIONS", nullptr,
       "database connections for snapshots and catalog look-ups (default 2)",
       int_setting(&Config::snapshot_pool_size, 1, 64)},
      {"--snapshot-batch", "SHAPESYNC_SNAPSHOT_BATCH", nullptr,
       "new shapes of one table, role and column list whose snapshots are taken together, in one transaction "
       "and one query, at most (default 256; 1: one at a time)",
       int_setting(&Config::snapshot_batch, 1, 10000)},
      {"--registration-connections", "SHAPESYNC_REGISTRATION_CONNECTIONS", nullptr,
       "database connections for shape registration, so one slow registration does not hold up others (default 4)",
       int_setting(&Config::registration_pool_size, 1, 64)},
      {"--registration-batch", "SHAPESYNC_REGISTRATION_BATCH", nullptr,
       "new shapes of one table, role and column list checked and registered in one statement, at most; "
       "requests for one table that arrive while it is looked up share the next look-up "
       "(default 256; 1: one at a time)",
       int_setting(&Config::registration_batch, 1, 10000)},
      {"--registration-timeout", "SHAPESYNC_REGISTRATION_TIMEOUT", nullptr,
       "statement_timeout in ms of shape registration (WHERE validation included); a WHERE that takes longer "
       "is answered 400 (default 5000)",
       int_setting(&Config::registration_timeout_ms, 100, 3600000)},
      {"--snapshot-timeout", "SHAPESYNC_SNAPSHOT_TIMEOUT", nullptr,
       "statement_timeout in ms of a shape's snapshot query, 0 for none (default 600000)",
       int_setting(&Config::snapshot_timeout_ms, 0, 86400000)},
      {"--write-connections", "SHAPESYNC_WRITE_CONNECTIONS", nullptr,
       "database connections for POST /v1/mutations (default 2)", int_setting(&Config::write_pool_size, 1, 64)},
      {"--write-timeout", "SHAPESYNC_WRITE_TIMEOUT", nullptr,
       "statement_timeout in ms of one POST /v1/mutations transaction (default 10000)",
       int_setting(&Config::write_timeout_ms, 100, 3600000)},
      {"--max-mutations", "SHAPESYNC_MAX_MUTATIONS", nullptr,
       "mutations in one POST /v1/mutations, at most; more is a 413 (default 1000, at most 10000)",
       int_setting(&Config::max_mutations, 1, 10000)},
  };
}

std::string help_text() {
  std::ostringstream o;
  o << "shapesyncd " << SHAPESYNC_VERSION
    << " — serves PostgreSQL shapes over ElectricSQL's HTTP Shape API\n\n"
       "usage: shapesyncd [--flag value]...\n\n"
       "Every setting is a flag and an environment variable (the flag wins):\n\n";
  for (auto& s : settings()) {
    o << "  " << s.flag << (std::string_view(s.flag) == "--insecure" ? "" : " <value>") << "\n      env " << s.env;
    if (s.alt_env) o << " (or " << s.alt_env << ")";
    o << "\n      " << s.help << "\n";
  }
  o << "  --help\n      this text\n";
  return o.str();
}

}  // namespace

std::variant<Config, ConfigExit> parse_config(int argc, char** argv) {
  Config c;
  auto all = settings();
  for (auto& s : all) {
    const char* v = std::getenv(s.env);
    if (!v && s.alt_env) v = std::getenv(s.alt_env);
    if (v && *v) {
      std::string e = s.apply(c, v);
      if (!e.empty()) return ConfigExit{std::string("shapesyncd: ") + s.env + ": " + e + "\n", 2};
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") return ConfigExit{help_text(), 0};
    std::string value;
    auto eq = a.find('=');
    std::string name = eq == std::string::npos ? a : a.substr(0, eq);
    const Setting* found = nullptr;
    for (auto& s : all)
      if (name == s.flag) found = &s;
    if (!found) return ConfigExit{"shapesyncd: unknown flag " + name + " (see --help)\n", 2};
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else if (name == "--insecure") {  // a switch
      value = "true";
    } else {
      if (i + 1 >= argc) return ConfigExit{"shapesyncd: " + name + " needs a value\n", 2};
      value = argv[++i];
    }
    std::string e = found->apply(c, value);
    if (!e.empty()) return ConfigExit{"shapesyncd: " + name + ": " + e + "\n", 2};
  }
  if (c.max_url_bytes + 64 > c.max_header_bytes)
    return ConfigExit{"shapesyncd: --max-url-bytes must be below --max-header-bytes\n", 2};
  if (c.database_url.empty())
    return ConfigExit{"shapesyncd: no database: set --database-url or DATABASE_URL (see --help)\n", 2};
  if (!c.auth_enabled() && !c.insecure)
    return ConfigExit{"shapesyncd: no JWT key: set --jwt-secret, --jwt-public-key or --jwks-file so that each "
                      "request's 'Authorization: Bearer <JWT>' decides what it may read (docs/auth.md), or pass "
                      "--insecure to let every caller read what the sidecar's own role may read\n",
                      2};
  if (!c.anonymous_role.empty() && !c.auth_enabled())
    return ConfigExit{"shapesyncd: --anonymous-role needs a JWT key (--jwt-secret, --jwt-public-key or --jwks-file)\n",
                      2};
  if (c.data_dir.empty()) {
    const char* t = std::getenv("TMPDIR");
    c.data_dir = std::string(t && *t ? t : "/tmp") + "/shapesyncd-" + std::to_string(c.listen_port);
  }
  if (c.consumer_name.empty()) {
    char host[256] = {0};
    if (gethostname(host, sizeof(host) - 1) != 0 || !*host) std::snprintf(host, sizeof(host), "localhost");
    c.consumer_name = std::string("shapesyncd@") + host + ":" + std::to_string(c.listen_port);
  }
  return c;
}

}  // namespace shapesync
