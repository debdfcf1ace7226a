// A small pool of database connections for snapshots, catalog look-ups and
// shape registration. Connections are opened lazily and reopened after loss.
#pragma once
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "db/pg.hpp"

namespace shapesync {

// SQL run on every new sidecar connection: Electric's display settings, so values
// decoded from the change log and read by snapshots have one text form.
extern const char* const kSessionSetup;

class PgPool {
 public:
  // session_extra: more SQL run on each new connection after kSessionSetup.
  PgPool(asio::any_io_executor ex, std::string conninfo, size_t size, std::string session_extra = "");

  class Lease {
   public:
    Lease(PgPool* p, std::unique_ptr<PgConn> c) : pool_(p), conn_(std::move(c)) {}
    Lease(Lease&&) = default;
    ~Lease() {
      if (conn_) pool_->release(std::move(conn_));
    }
    PgConn& operator*() { return *conn_; }
    PgConn* operator->() { return conn_.get(); }

   private:
    PgPool* pool_;
    std::unique_ptr<PgConn> conn_;
  };

  // Waits for a free connection; connects it if needed. Throws PgError.
  asio::awaitable<Lease> acquire();

 private:
  void release(std::unique_ptr<PgConn> c);

  asio::any_io_executor ex_;
  std::string conninfo_;
  std::string session_extra_;
  std::mutex mu_;
  std::vector<std::unique_ptr<PgConn>> free_;
  size_t outstanding_ = 0;
  size_t size_;
  std::deque<std::shared_ptr<asio::steady_timer>> waiting_;
};

}  // namespace shapesync
