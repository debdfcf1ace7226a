// Requests that one database round trip can answer together. A coroutine
// submits a request under a group key and waits; a worker takes what waited
// for one key (Coalescer, one batch per key in flight: the key's next requests
// gather behind it, so a batch only ever holds requests made before it
// started) and answers them all with one call of `work`; at most `max_workers`
// workers run. No timer: an idle system answers a lone request at once. The
// object owns its lock; a waiter is woken on its own executor (its strand).
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "shapes/coalescer.hpp"

namespace shapesync {

template <class Req, class Out>
class Batcher {
 public:
  // Answers reqs[i] in outs[i] (outs has reqs.size() default values); must not throw.
  using Work = std::function<boost::asio::awaitable<void>(const std::vector<const Req*>& reqs, std::vector<Out>& outs)>;

  Batcher(boost::asio::io_context& io, size_t max_batch, int max_workers, Work work)
      : io_(io), queue_(max_batch, true), max_workers_(max_workers < 1 ? 1 : max_workers), work_(std::move(work)) {}

  // The answer to `req`, or `late` when none came within `timeout`.
  boost::asio::awaitable<Out> submit(std::string key, Req req, std::chrono::steady_clock::duration timeout, Out late) {
    auto ex = co_await boost::asio::this_coro::executor;
    auto p = std::make_shared<Pending>(ex);
    p->req = std::move(req);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    p->timer.expires_at(deadline);
    queue_.push(key, p);
    if (workers_.fetch_add(1) < max_workers_)
      boost::asio::co_spawn(io_, run_worker(), boost::asio::detached);
    else
      workers_.fetch_sub(1);
    for (;;) {
      {
        std::lock_guard lk(p->mu);
        if (p->done) co_return std::move(p->out);
      }
      if (std::chrono::steady_clock::now() >= deadline) co_return late;
      // woken by the worker (it moves the expiry to the past, on this strand)
      co_await p->timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
  }

  int workers() const { return workers_.load(); }

 private:
  struct Pending {
    explicit Pending(boost::asio::any_io_executor ex) : timer(std::move(ex)) {}
    Req req;
    std::mutex mu;
    bool done = false;
    Out out;
    boost::asio::steady_timer timer;
  };

  boost::asio::awaitable<void> run_worker() {
    for (;;) {
      std::string key;
      std::vector<std::shared_ptr<Pending>> group = queue_.take(&key);
      if (group.empty()) {
        // Leaving; what waits for keys in flight is taken by their workers when
        // they finish, and a request pushed while every worker was counted must
        // not be left without one.
        workers_.fetch_sub(1);
        if (queue_.available() == 0) co_return;
        if (workers_.fetch_add(1) >= max_workers_) {
          workers_.fetch_sub(1);
          co_return;
        }
        continue;
      }
      std::vector<const Req*> reqs;
      for (auto& p : group) reqs.push_back(&p->req);
      std::vector<Out> outs(group.size());
      co_await work_(reqs, outs);
      for (size_t i = 0; i < group.size(); ++i) {
        auto& p = group[i];
        {
          std::lock_guard lk(p->mu);
          p->out = std::move(outs[i]);
          p->done = true;
        }
        boost::asio::post(p->timer.get_executor(),
                          [p] { p->timer.expires_at(std::chrono::steady_clock::time_point::min()); });
      }
      queue_.finish(key);
    }
  }

  boost::asio::io_context& io_;
  Coalescer<std::shared_ptr<Pending>> queue_;
  const int max_workers_;
  Work work_;
  std::atomic<int> workers_{0};
};

}  // namespace shapesync
