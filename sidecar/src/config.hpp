// Settings of shapesyncd: every one has a command-line flag and an environment
// variable; `--help` lists them all.
#pragma once
#include <string>
#include <variant>

namespace shapesync {

struct Config {
  std::string database_url;
  std::string listen_host = "127.0.0.1";
  unsigned short listen_port = 3000;
  int threads = 0;                       // 0: one per core
  int long_poll_timeout_ms = 20000;      // ELECTRIC_LONG_POLL_TIMEOUT
  int tick_interval_ms = 100;            // own ticking when the extension's worker is absent
  int poll_interval_ms = 1000;           // safety-net check for new ticks
  std::string data_dir;                  // segment files; "" = $TMPDIR/shapesyncd-<port>
  int memory_chunks = 1;                 // closed log chunks per shape kept in memory
  size_t window_bytes = 128u << 20;      // decoded batches kept for new shapes, at most
  size_t max_memory = size_t{1} << 30;   // memory budget of the shape store (0: none); docs/sidecar.md
  size_t max_shapes = 0;                 // shapes held in memory, at most (0: no limit)
  int evict_idle_ms = 60000;             // a shape unused this long may be evicted when over budget
  std::string consumer_name;             // in shapesync.consumers; "" = shapesyncd@<host>:<port>
  size_t chunk_bytes_threshold = 10485760;  // ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD
  int cache_max_age_s = 60;
  int cache_stale_age_s = 300;
  size_t max_body_bytes = 1 << 20;
  int snapshot_pool_size = 2;
  int snapshot_batch = 256;              // new shapes of one table/role/columns built with one snapshot query, at most
  int registration_pool_size = 4;        // connections for shape registration (parse, validate, register)
  int registration_batch = 256;          // new shapes of one table/role/columns checked and registered in one statement, at most
  int registration_timeout_ms = 5000;    // statement_timeout of registration statements
  int snapshot_timeout_ms = 600000;      // statement_timeout of snapshot transactions (0: none)
  // Writes (POST /v1/mutations, docs/mutations.md).
  int write_pool_size = 2;               // connections for writes
  int write_timeout_ms = 10000;          // statement_timeout of a write transaction
  int max_mutations = 1000;              // mutations per request, at most (413)
  int batch_window_ticks = 100000;       // decoded batches kept for new shapes' catch-up
  int sse_timeout_ms = 60000;            // an SSE response ends after this
  int sse_keepalive_ms = 21000;          // ": keep-alive" comment after this much silence
  int idle_timeout_ms = 75000;           // a connection silent this long between requests (or within one's head) closes
  bool allow_shape_deletion = false;     // DELETE /v1/shape (ELECTRIC_ENABLE_INTEGRATION_TESTING)
  std::string secret;                    // ELECTRIC_SECRET: required ?secret= on /v1/shape
  int max_initial_requests = 300;        // concurrent offset=-1 requests before 503
  int max_existing_requests = 100000;    // concurrent other shape requests before 503
  // Hostile input (docs/security.md).
  size_t max_header_bytes = 65536;       // request line + headers, at most (431, or 414 for the URL)
  size_t max_url_bytes = 32768;          // request target, at most (414)
  long long max_connections = 0;         // open client connections, at most; 0: descriptor limit - reserve
  long long max_connections_per_address = 1024;  // from one client address, at most; 0: unlimited
  std::string metrics_token;             // required as Bearer token on /metrics (else --secret, if set)
  int report_interval_ms = 3000;         // live reports to shapesync.consumer_report_stats()
  // Authorization (docs/auth.md): JWT keys (any of them; at least one unless --insecure).
  std::string jwt_secret;                // HS256/384/512 shared secret
  std::string jwt_public_key_file;       // PEM public key (RS*/ES*)
  std::string jwks_file;                 // JWKS document, reloaded on SIGHUP
  std::string jwt_issuer;                // iss must equal it ("" = not checked)
  std::string jwt_audience;              // aud must contain it ("" = not checked)
  int jwt_leeway_s = 30;                 // for exp and nbf
  int jwt_cache_entries = 50000;         // verified tokens the auth gate remembers (until each expires)
  std::string jwt_role_claim = "role";   // claim (or .dotted.path) naming the PostgreSQL role
  std::string anonymous_role;            // role for requests without a token ("" = 401)
  bool insecure = false;                 // run without a JWT key: every caller has the sidecar's rights
  bool auth_enabled() const { return !jwt_secret.empty() || !jwt_public_key_file.empty() || !jwks_file.empty(); }
};

// Parses argv then environment (flag wins). Returns the config, or a message to
// print (help text or an error) and the exit code.
struct ConfigExit {
  std::string message;
  int code;
};
std::variant<Config, ConfigExit> parse_config(int argc, char** argv);

}  // namespace shapesync
