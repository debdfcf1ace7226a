// libpq on the Asio event loop: RAII holders for PGconn/PGresult and a
// connection whose every wait is an async wait on its socket (never a blocking
// libpq call on an I/O thread). One coroutine uses a connection at a time.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <libpq-fe.h>

#include "model/table.hpp"

namespace shapesync {

namespace asio = boost::asio;

struct PgError : std::runtime_error {
  std::string sqlstate;
  bool connection_lost = false;
  std::string detail, hint;
  int position = 0;  // PG_DIAG_INTERNAL_POSITION (or STATEMENT_POSITION), 1-based; 0 when absent
  PgError(const std::string& msg, std::string state, bool lost)
      : std::runtime_error(msg), sqlstate(std::move(state)), connection_lost(lost) {}
};

class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(PGresult* r) : r_(r, &PQclear) {}
  int rows() const { return r_ ? PQntuples(r_.get()) : 0; }
  int cols() const { return r_ ? PQnfields(r_.get()) : 0; }
  bool is_null(int row, int col) const { return PQgetisnull(r_.get(), row, col); }
  std::string_view get(int row, int col) const {
    return {PQgetvalue(r_.get(), row, col), static_cast<size_t>(PQgetlength(r_.get(), row, col))};
  }
  std::optional<std::string> opt(int row, int col) const {
    if (is_null(row, col)) return std::nullopt;
    return std::string(get(row, col));
  }
  long long get_int(int row, int col) const { return std::stoll(std::string(get(row, col))); }
  // The named column of a row, nullopt when NULL or absent.
  std::optional<std::string> opt(int row, const char* name) const {
    int col = r_ ? PQfnumber(r_.get(), name) : -1;
    if (col < 0 || row >= rows()) return std::nullopt;
    return opt(row, col);
  }
  PGresult* raw() const { return r_.get(); }

 private:
  std::shared_ptr<PGresult> r_;
};

using PgParams = std::vector<std::optional<std::string>>;

class PgConn {
 public:
  explicit PgConn(asio::any_io_executor ex) : ex_(std::move(ex)) {}
  ~PgConn() { close(); }
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  // Connects (non-blocking handshake). Throws PgError.
  asio::awaitable<void> connect(const std::string& conninfo);
  bool ok() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }
  // Reads whatever the server sent while the connection was idle (e.g. a FATAL
  // after a server restart) without blocking; false when it is no longer usable.
  bool healthy();
  void close();

  // Runs one statement with text parameters; returns its result (the last one
  // for multi-statement strings without parameters). Throws PgError.
  asio::awaitable<PgResult> exec(std::string_view sql, const PgParams& params = {});
  // Runs one statement with text parameters as the prepared statement `name`
  // of this session, preparing it on first use (parsed once, not per call:
  // for the statements on the path of every change). A statement whose result
  // type changed under it (an extension upgrade) is prepared again once.
  // Throws PgError.
  // binary_result: every column of the result in binary format (PQfformat 1)
  asio::awaitable<PgResult> exec_prepared(const std::string& name, std::string_view sql, const PgParams& params,
                                          bool binary_result = false);

  // Runs `COPY (...) TO STDOUT` (text format) and hands each data row (without
  // its newline) to `on_row` as it arrives, so the caller works while the
  // server is still sending. Throws PgError (after the server's error, or
  // whatever on_row threw once the copy is drained).
  asio::awaitable<void> copy_out(std::string_view sql, const std::function<void(std::string_view)>& on_row);

  // Waits until the socket is readable or the timeout passes; consumes input.
  // Returns after either. Throws PgError if the connection is lost.
  asio::awaitable<void> wait_input(std::chrono::milliseconds timeout);

  // Notifications received so far (channel, payload); clears the list.
  std::vector<std::pair<std::string, std::string>> take_notifications();

  // Inside a transaction block (or a failed one)?
  bool in_transaction() const { return conn_ && PQtransactionStatus(conn_) != PQTRANS_IDLE; }
  // Rolls back an open transaction, if the connection is usable and has one.
  asio::awaitable<void> rollback_if_open();

  PGconn* raw() const { return conn_; }

 private:
  asio::awaitable<void> wait_socket(bool write);
  // Sends what libpq has buffered (a query just queued).
  asio::awaitable<void> flush();
  // Reads the results of what was sent; returns the last, throws the first error.
  asio::awaitable<PgResult> collect();
  void consume();
  [[noreturn]] void fail(const std::string& what, const char* state = "");

  asio::any_io_executor ex_;
  PGconn* conn_ = nullptr;
  std::vector<std::pair<std::string, std::string>> notes_;
  std::set<std::string> prepared_;  // statements prepared in this session
};

}  // namespace shapesync
