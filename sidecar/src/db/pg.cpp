// Non-blocking libpq driven by Asio.
#include "db/pg.hpp"

#include <poll.h>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/as_tuple.hpp>

namespace shapesync {

using namespace asio::experimental::awaitable_operators;

asio::awaitable<void> PgConn::rollback_if_open() {
  if (ok() && in_transaction()) co_await exec("ROLLBACK");
}

void PgConn::close() {
  if (conn_) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  prepared_.clear();
}

void PgConn::fail(const std::string& what, const char* state) {
  bool lost = !conn_ || PQstatus(conn_) != CONNECTION_OK;
  std::string msg = what;
  if (conn_) {
    const char* e = PQerrorMessage(conn_);
    if (e && *e) {
      msg += ": ";
      msg += e;
      while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    }
  }
  throw PgError(msg, state, lost);
}

asio::awaitable<void> PgConn::wait_socket(bool write) {
  int fd = PQsocket(conn_);
  if (fd < 0) fail("no socket");
  asio::posix::stream_descriptor sd(ex_, fd);
  auto [ec] = co_await sd.async_wait(write ? asio::posix::stream_descriptor::wait_write
                                           : asio::posix::stream_descriptor::wait_read,
                                     asio::as_tuple(asio::use_awaitable));
  sd.release();
  if (ec) throw PgError("socket wait failed: " + ec.message(), "", true);
}

asio::awaitable<void> PgConn::connect(const std::string& conninfo) {
  close();
  conn_ = PQconnectStart(conninfo.c_str());
  if (!conn_) throw PgError("out of memory", "", true);
  if (PQstatus(conn_) == CONNECTION_BAD) fail("cannot connect");
  PQsetnonblocking(conn_, 1);
  for (;;) {
    auto st = PQconnectPoll(conn_);
    if (st == PGRES_POLLING_OK) break;
    if (st == PGRES_POLLING_FAILED) fail("cannot connect");
    co_await wait_socket(st == PGRES_POLLING_WRITING);
  }
  PQsetnonblocking(conn_, 1);
}

bool PgConn::healthy() {
  if (!ok()) return false;
  // A server that ended the session sent a FATAL and then closed the socket:
  // reading until nothing is pending sees the close.
  for (int i = 0; i < 4; ++i) {
    pollfd p{PQsocket(conn_), POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) break;
    if (!PQconsumeInput(conn_)) return false;
    if (PQstatus(conn_) != CONNECTION_OK) return false;
  }
  // An idle connection has nothing to read but notifications; anything else
  // (an error sent before the server closed it) makes it unusable.
  if (PQisBusy(conn_)) return false;
  if (PGresult* r = PQgetResult(conn_)) {
    PQclear(r);
    return false;
  }
  return true;
}

void PgConn::consume() {
  if (!PQconsumeInput(conn_)) fail("connection lost");
  while (PGnotify* n = PQnotifies(conn_)) {
    notes_.emplace_back(n->relname, n->extra ? n->extra : "");
    PQfreemem(n);
  }
}

namespace {

PgError result_error(PGconn* conn, PGresult* r) {
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char* msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  PgError e(msg ? msg : PQresultErrorMessage(r), state ? state : "", PQstatus(conn) != CONNECTION_OK);
  if (const char* d = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL)) e.detail = d;
  if (const char* h = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT)) e.hint = h;
  if (const char* pos = PQresultErrorField(r, PG_DIAG_INTERNAL_POSITION)) e.position = std::atoi(pos);
  if (e.sqlstate == "42501") {
    // say which role lacks what, and how to fix it, wherever this is logged
    std::string role = PQuser(conn) ? PQuser(conn) : "";
    e.hint = "the database role \"" + role + "\" lacks a privilege shapesyncd needs: as a superuser or the tables' owner, run "
             "SELECT shapesync.grant_sidecar('" + role + "') (docs/security.md)";
  }
  return e;
}

}  // namespace

asio::awaitable<void> PgConn::flush() {
  for (;;) {
    int f = PQflush(conn_);
    if (f == 0) break;
    if (f < 0) fail("cannot send query");
    co_await wait_socket(true);
    consume();
  }
}

asio::awaitable<PgResult> PgConn::exec(std::string_view sql, const PgParams& params) {
  if (!ok()) fail("not connected");
  std::string q(sql);
  int sent;
  if (params.empty()) {
    sent = PQsendQuery(conn_, q.c_str());
  } else {
    std::vector<const char*> vals;
    vals.reserve(params.size());
    for (auto& p : params) vals.push_back(p ? p->c_str() : nullptr);
    sent = PQsendQueryParams(conn_, q.c_str(), static_cast<int>(vals.size()), nullptr, vals.data(), nullptr,
                             nullptr, 0);
  }
  if (!sent) fail("cannot send query");
  co_await flush();
  co_return co_await collect();
}

asio::awaitable<PgResult> PgConn::exec_prepared(const std::string& name, std::string_view sql,
                                                const PgParams& params, bool binary_result) {
  if (!ok()) fail("not connected");
  std::vector<const char*> vals;
  vals.reserve(params.size());
  for (auto& p : params) vals.push_back(p ? p->c_str() : nullptr);
  for (int attempt = 0;; ++attempt) {
    if (!prepared_.contains(name)) {
      std::string q(sql);
      if (!PQsendPrepare(conn_, name.c_str(), q.c_str(), 0, nullptr)) fail("cannot send query");
      co_await flush();
      co_await collect();
      prepared_.insert(name);
    }
    if (!PQsendQueryPrepared(conn_, name.c_str(), static_cast<int>(vals.size()), vals.data(), nullptr, nullptr,
                             binary_result ? 1 : 0))
      fail("cannot send query");
    co_await flush();
    try {
      co_return co_await collect();
    } catch (const PgError& e) {
      // "cached plan must not change result type": what it reads was
      // replaced (ALTER EXTENSION ... UPDATE); prepare it again, once
      if (e.sqlstate != "0A000" || attempt > 0 || e.connection_lost || in_transaction()) throw;
    }
    prepared_.erase(name);
    co_await exec("DEALLOCATE " + quote_ident(name));
  }
}

asio::awaitable<PgResult> PgConn::collect() {
  PgResult last;
  std::optional<PgError> error;
  for (;;) {
    while (PQisBusy(conn_)) {
      co_await wait_socket(false);
      consume();
    }
    PGresult* r = PQgetResult(conn_);
    if (!r) break;
    auto st = PQresultStatus(r);
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE) {
      if (!error) error = result_error(conn_, r);
      PQclear(r);
      continue;
    }
    last = PgResult(r);
  }
  consume();
  if (error) throw *error;
  co_return last;
}


asio::awaitable<void> PgConn::copy_out(std::string_view sql, const std::function<void(std::string_view)>& on_row) {
  if (!ok()) fail("not connected");
  std::string q(sql);
  if (!PQsendQuery(conn_, q.c_str())) fail("cannot send query");
  co_await flush();
  std::optional<PgError> error;
  std::exception_ptr callback_error;
  bool copying = false;
  for (;;) {
    while (PQisBusy(conn_)) {
      co_await wait_socket(false);
      consume();
    }
    PGresult* r = PQgetResult(conn_);
    if (!r) break;
    auto st = PQresultStatus(r);
    if (st == PGRES_COPY_OUT) {
      PQclear(r);
      copying = true;
      for (;;) {
        char* buf = nullptr;
        int n = PQgetCopyData(conn_, &buf, 1);
        if (n > 0) {
          if (!callback_error) {
            try {
              size_t len = static_cast<size_t>(n);
              if (len > 0 && buf[len - 1] == '\n') --len;
              on_row(std::string_view(buf, len));
            } catch (...) {
              callback_error = std::current_exception();  // drain the copy, then rethrow
            }
          }
          PQfreemem(buf);
          continue;
        }
        if (n == 0) {  // nothing buffered: wait for more
          co_await wait_socket(false);
          consume();
          continue;
        }
        if (n == -2) fail("copy failed");
        break;  // -1: done; the command's result follows
      }
      continue;
    }
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE) {
      if (!error) error = result_error(conn_, r);
    }
    PQclear(r);
  }
  consume();
  if (error) throw *error;
  if (callback_error) std::rethrow_exception(callback_error);
  if (!copying) throw PgError("COPY returned no data stream", "", false);
}

asio::awaitable<void> PgConn::wait_input(std::chrono::milliseconds timeout) {
  if (!ok()) fail("not connected");
  // Notifications that arrived during earlier queries are already read off the
  // socket: waiting for it to become readable would sit on them.
  consume();
  if (!notes_.empty()) co_return;
  int fd = PQsocket(conn_);
  asio::posix::stream_descriptor sd(ex_, fd);
  asio::steady_timer timer(ex_, timeout);
  auto r = co_await (sd.async_wait(asio::posix::stream_descriptor::wait_read, asio::as_tuple(asio::use_awaitable)) ||
                     timer.async_wait(asio::as_tuple(asio::use_awaitable)));
  sd.release();
  (void)r;
  consume();
}

std::vector<std::pair<std::string, std::string>> PgConn::take_notifications() {
  auto n = std::move(notes_);
  notes_.clear();
  return n;
}

}  // namespace shapesync
