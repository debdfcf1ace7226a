// Writes: the database call, retries, and what came of it.
#include "writes/service.hpp"

#include <chrono>
#include <random>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "db/mutations.hpp"

namespace shapesync {

WriteOutcome::Kind classify_write_error(const PgError& e) {
  using K = WriteOutcome::Kind;
  if (e.connection_lost) return K::kDatabase;
  const std::string& s = e.sqlstate;
  if (s == "54000") return K::kTooLarge;                    // more mutations than the function takes
  if (s.size() == 5 && s.compare(0, 2, "22") == 0) return K::kBadInput;  // not an array, bad key, bad JSON (22P02, 22P05)
  // no EXECUTE on apply_mutations (grant_writer), or SET ROLE to a role the
  // sidecar is not a member of
  if (s == "42501") return K::kForbidden;
  if (s.compare(0, 2, "40") == 0) return K::kRetry;
  return K::kDatabase;
}

WriteService::WriteService(asio::io_context& io, const Config& cfg)
    : cfg_(cfg), pool_(io.get_executor(), cfg.database_url, static_cast<size_t>(cfg.write_pool_size)) {}

asio::awaitable<WriteOutcome> WriteService::apply(const Caller& who, const WriteRequest& req) {
  WriteOutcome out;
  for (int attempt = 1;; ++attempt) {
    out.attempts = attempt;
    std::optional<PgError> failed;
    try {
      auto lease = co_await pool_.acquire();
      out.body = co_await apply_mutations(*lease, who.role, who.claims, req.mutations, req.idempotency_key,
                                          req.allow_partial, cfg_.write_timeout_ms);
    } catch (const PgError& e) {
      failed = e;
    }
    if (!failed) break;
    out.kind = classify_write_error(*failed);
    out.db = std::move(failed);
    // A lost connection after COMMIT was sent leaves the outcome unknown; the
    // request is idempotent, so a class-40 failure (never committed) is
    // retried here and anything else is the client's to send again.
    if (out.kind != WriteOutcome::Kind::kRetry || attempt >= kMaxAttempts) co_return out;
    thread_local std::mt19937 rng{std::random_device{}()};
    int ms = std::uniform_int_distribution<int>(5, 20 << attempt)(rng);
    asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
    co_await t.async_wait(asio::use_awaitable);
  }
  out.kind = WriteOutcome::Kind::kDone;
  out.db.reset();
  auto j = nlohmann::json::parse(out.body, nullptr, false);
  if (j.is_object()) {
    auto flag = [&](const char* name) {
      auto it = j.find(name);
      return it != j.end() && it->is_boolean() && it->get<bool>();
    };
    out.invalid = flag("invalid");
    out.committed = flag("committed");
    auto results = j.find("results");
    if (results != j.end() && results->is_array())
      for (auto& r : *results) {
        if (!r.is_object()) continue;
        auto st = r.find("status");
        auto replayed = r.find("replayed");
        if (replayed != r.end() && replayed->is_boolean() && replayed->get<bool>()) ++out.statuses["replayed"];
        else if (st != r.end() && st->is_string()) {
          std::string s = st->get<std::string>();
          if (s == "applied" || s == "conflict" || s == "rejected" || s == "aborted") ++out.statuses[s];
        }
      }
  }
  co_return out;
}

}  // namespace shapesync
