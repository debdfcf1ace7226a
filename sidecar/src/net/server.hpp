// The HTTP server: accepts connections and runs one session coroutine per
// connection, on one of the connection threads' io_contexts (each run by one
// thread: a connection's handlers never run concurrently, without a strand). The only code that sees a socket. A long-poll
// with nothing to answer yet, and an SSE stream between events, is parked: no
// coroutine, no request, only the socket and what the answer needs, until its
// shape changes, its deadline passes or its client goes away.
#pragma once
#include <atomic>
#include <memory>
#include <optional>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "http/app.hpp"
#include "net/limits.hpp"

namespace shapesync {

class Server {
 public:
  // descriptor_limit: RLIMIT_NOFILE, for the default --max-connections.
  // connections: io_contexts each run by exactly one thread (at least one);
  // accepted connections are spread over them in turn.
  Server(asio::io_context& io, App& app, size_t descriptor_limit, std::vector<asio::io_context*> connections);
  ~Server();
  // Binds and listens; throws boost::system::system_error.
  void listen(const std::string& host, unsigned short port);
  asio::awaitable<void> accept_loop();
  // Stops accepting; open sessions finish their current request.
  void stop_accepting();
  size_t open_sessions() const { return sessions_.load(); }
  size_t requests_in_flight() const { return in_flight_.load(); }
  const ConnectionLimits& limits() const { return *limits_; }

  struct Counted;
  struct Sleeper;
  class Parked;
  class SseParked;
  class Idle;
  class Deadlines;

 private:
  // Serves a connection: first `pending` (the answer of a parked request), then
  // every request it sends.
  asio::awaitable<void> session(asio::ip::tcp::socket sock, boost::beast::flat_buffer buffer, Counted counted,
                                std::optional<LiveAnswer> pending);
  // Writes a response to a request in flight; false when the connection ends.
  // A live delivery (Deferred::delivery) is counted once written.
  asio::awaitable<bool> write_response(boost::beast::tcp_stream& stream, Response& res, bool delivery = false,
                                       int64_t commit_us = 0);
  asio::awaitable<bool> write_answer(boost::beast::tcp_stream& stream, LiveAnswer& a);
  // A connection between requests: served by a session from the first byte of
  // its next request (at once when `buffer` already holds one); until then
  // only its socket is kept (no coroutine, no parser).
  void serve_when_readable(asio::ip::tcp::socket sock, boost::beast::flat_buffer buffer, Counted counted);
  // Answers a connection over a limit with a 503 and closes it.
  void refuse(asio::ip::tcp::socket sock, ConnectionLimits::Refusal why, const asio::ip::tcp::endpoint& peer);

  // Where the next accepted connection runs.
  asio::any_io_executor next_connection_executor();

  asio::io_context& io_;
  std::vector<asio::io_context*> conn_io_;
  std::atomic<size_t> next_conn_{0};
  App& app_;
  asio::ip::tcp::acceptor acceptor_;
  std::atomic<size_t> sessions_{0};
  std::atomic<size_t> in_flight_{0};
  std::atomic<bool> stopping_{false};
  std::unique_ptr<Deadlines> deadlines_;
  metrics::ProcessMetrics& pm_;
  std::unique_ptr<ConnectionLimits> limits_;
};

}  // namespace shapesync
