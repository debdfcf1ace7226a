// Writes (POST /v1/mutations, docs/mutations.md): hands a request's mutations
// to the database on the caller's behalf, retries serialization failures and
// deadlocks (the request is idempotent), and says what came of it in terms the
// HTTP layer answers. Sits beside shapes/ (neither includes the other).
//
// Error convention of the layer: apply() returns a WriteOutcome value; db/
// below throws PgError, and nothing above sees an exception from here.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "config.hpp"
#include "db/pg.hpp"
#include "db/pool.hpp"
#include "model/caller.hpp"
#include "model/write_request.hpp"

namespace shapesync {

struct WriteOutcome {
  enum class Kind {
    kDone,       // `body`: apply_mutations' JSON (200, or 400 when `invalid`)
    kBadInput,   // the database refused the request as a whole (400): `db`
    kTooLarge,   // more mutations than the database takes (413): `db`
    kForbidden,  // the caller's role may not write at all (403): `db`
    kRetry,      // serialization failures / deadlocks persisted (503): `db`
    kDatabase,   // the database failed in a way that is not the client's: `db`
  } kind = Kind::kDone;
  std::string body;
  bool invalid = false;     // the result says "invalid": true
  bool committed = false;   // the result says "committed": true
  std::map<std::string, int> statuses;  // mutations by status (replayed ones as "replayed")
  int attempts = 1;
  std::optional<PgError> db;
};

// What the HTTP layer writes through (a fake in unit tests).
class MutationSink {
 public:
  virtual ~MutationSink() = default;
  virtual asio::awaitable<WriteOutcome> apply(const Caller& who, const WriteRequest& req) = 0;
};

class WriteService : public MutationSink {
 public:
  WriteService(asio::io_context& io, const Config& cfg);
  asio::awaitable<WriteOutcome> apply(const Caller& who, const WriteRequest& req) override;

  // Retries of a whole request after 40001/40P01 before answering 503.
  static constexpr int kMaxAttempts = 4;

 private:
  const Config& cfg_;
  PgPool pool_;
};

// What a database error raised by the whole request means (pure, unit-tested).
WriteOutcome::Kind classify_write_error(const PgError& e);

}  // namespace shapesync
