// Batcher: requests submitted from many coroutines (each on its own strand,
// as HTTP sessions are) are answered each with its own answer, in batches of
// one key of at most max_batch, one batch per key at a time, by at most
// max_workers workers; run with batch sizes 1 and 2 and one or two workers so
// that every path crosses the boundaries many times. No sockets, no database.
#include "shapes/batcher.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include <boost/asio/strand.hpp>

namespace asio = boost::asio;
using shapesync::Batcher;

namespace {

struct Req {
  std::string key;
  int n = 0;
};

struct Run {
  std::mutex mu;
  std::set<std::string> in_flight;
  std::vector<size_t> batch_sizes;
  int running = 0, max_running = 0;
  bool key_twice = false, mixed = false;
};

void run_case(size_t max_batch, int max_workers, int threads) {
  asio::io_context io(threads);
  Run run;
  Batcher<Req, int> b(io, max_batch, max_workers,
                      [&](const std::vector<const Req*>& reqs, std::vector<int>& outs) -> asio::awaitable<void> {
                        std::string key = reqs.front()->key;
                        {
                          std::lock_guard lk(run.mu);
                          run.key_twice |= !run.in_flight.insert(key).second;
                          run.batch_sizes.push_back(reqs.size());
                          run.max_running = std::max(run.max_running, ++run.running);
                          for (auto* r : reqs) run.mixed |= r->key != key;
                        }
                        // some time in the "database", so that others queue
                        asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(2));
                        co_await t.async_wait(asio::use_awaitable);
                        for (size_t i = 0; i < reqs.size(); ++i) outs[i] = reqs[i]->n * 10;
                        std::lock_guard lk(run.mu);
                        run.in_flight.erase(key);
                        --run.running;
                      });
  constexpr int kRequests = 300;
  std::vector<int> answers(kRequests, -1);
  for (int i = 0; i < kRequests; ++i) {
    auto strand = asio::make_strand(io);
    asio::co_spawn(
        strand,
        [&, i]() -> asio::awaitable<void> {
          // arrivals spread over time, so batches of every size form
          asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::microseconds(50 * (i % 40)));
          co_await t.async_wait(asio::use_awaitable);
          // locals, not temporaries, in the co_await (GCC 12)
          std::string key = "k" + std::to_string(i % 3);
          Req req{key, i};
          auto timeout = std::chrono::seconds(30);
          int answer = co_await b.submit(key, req, timeout, -2);
          answers[i] = answer;
        },
        asio::detached);
  }
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  for (int i = 0; i < kRequests; ++i) ASSERT_EQ(answers[i], i * 10) << "request " << i;
  size_t total = 0, largest = 0;
  for (size_t n : run.batch_sizes) {
    total += n;
    largest = std::max(largest, n);
  }
  EXPECT_EQ(total, static_cast<size_t>(kRequests)) << "each request in exactly one batch";
  EXPECT_LE(largest, max_batch);
  if (max_batch > 1) {
    EXPECT_EQ(largest, max_batch) << "batches formed while workers were busy";
  }
  EXPECT_FALSE(run.key_twice) << "a key in two batches at once";
  EXPECT_FALSE(run.mixed) << "a batch with two keys";
  EXPECT_LE(run.max_running, max_workers);
  EXPECT_EQ(b.workers(), 0) << "workers leave when nothing waits";
}

}  // namespace

TEST(Batcher, BatchOfOneOneWorker) { run_case(1, 1, 1); }
TEST(Batcher, BatchOfTwoOneWorker) { run_case(2, 1, 1); }
TEST(Batcher, BatchOfTwoTwoWorkersTwoThreads) { run_case(2, 2, 2); }
TEST(Batcher, LargeBatchesThreeWorkersTwoThreads) { run_case(64, 3, 2); }

// A request nobody answers in time gets the `late` value.
TEST(Batcher, LateAnswer) {
  asio::io_context io(1);
  Batcher<Req, int> b(io, 2, 1, [&](const std::vector<const Req*>&, std::vector<int>& outs) -> asio::awaitable<void> {
    asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(200));
    co_await t.async_wait(asio::use_awaitable);
    for (auto& o : outs) o = 1;
  });
  int got = 0;
  asio::co_spawn(
      asio::make_strand(io),
      [&]() -> asio::awaitable<void> {
        std::string key = "k";
        Req req{key, 1};
        auto timeout = std::chrono::milliseconds(20);
        got = co_await b.submit(key, req, timeout, -2);
      },
      asio::detached);
  io.run();
  EXPECT_EQ(got, -2);
}
