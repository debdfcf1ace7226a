// Connection pool.
#include "db/pool.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace shapesync {

const char* const kSessionSetup =
    "SET DateStyle = 'ISO, DMY'; SET TimeZone = 'UTC'; SET extra_float_digits = 1; "
    "SET bytea_output = 'hex'; SET IntervalStyle = 'iso_8601'; SET application_name = 'shapesyncd'";

PgPool::PgPool(asio::any_io_executor ex, std::string conninfo, size_t size, std::string session_extra)
    : ex_(std::move(ex)), conninfo_(std::move(conninfo)), session_extra_(std::move(session_extra)), size_(size) {}

asio::awaitable<PgPool::Lease> PgPool::acquire() {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    std::unique_ptr<PgConn> c;
    std::shared_ptr<asio::steady_timer> wait;
    {
      std::lock_guard lk(mu_);
      if (!free_.empty()) {
        c = std::move(free_.back());
        free_.pop_back();
      } else if (outstanding_ < size_) {
        c = std::make_unique<PgConn>(ex_);
      } else {
        wait = std::make_shared<asio::steady_timer>(ex, std::chrono::seconds(30));
        waiting_.push_back(wait);
      }
      if (c) ++outstanding_;
    }
    if (wait) {
      co_await wait->async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    Lease lease(this, std::move(c));
    if (!lease->healthy()) {
      co_await lease->connect(conninfo_);
      co_await lease->exec(kSessionSetup);
      if (!session_extra_.empty()) co_await lease->exec(session_extra_);
    }
    co_return lease;
  }
}

void PgPool::release(std::unique_ptr<PgConn> c) {
  std::shared_ptr<asio::steady_timer> next;
  {
    std::lock_guard lk(mu_);
    --outstanding_;
    if (c->ok()) free_.push_back(std::move(c));
    if (!waiting_.empty()) {
      next = waiting_.front();
      waiting_.pop_front();
    }
  }
  if (next) asio::post(next->get_executor(), [next] { next->cancel(); });
}

}  // namespace shapesync
