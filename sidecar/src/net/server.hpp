// The HTTP server: accepts connections and runs one session coroutine per
// connection on its own strand. The only code that sees a socket.
#pragma once
#include <atomic>
#include <memory>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "http/app.hpp"

namespace shapesync {

class Server {
 public:
  Server(asio::io_context& io, App& app);
  // Binds and listens; throws boost::system::system_error.
  void listen(const std::string& host, unsigned short port);
  asio::awaitable<void> accept_loop();
  // Stops accepting; open sessions finish their current request.
  void stop_accepting();
  size_t open_sessions() const { return sessions_.load(); }
  size_t requests_in_flight() const { return in_flight_.load(); }

 private:
  asio::awaitable<void> session(asio::ip::tcp::socket sock);

  asio::io_context& io_;
  App& app_;
  asio::ip::tcp::acceptor acceptor_;
  std::atomic<size_t> sessions_{0};
  std::atomic<size_t> in_flight_{0};
  std::atomic<bool> stopping_{false};
};

}  // namespace shapesync
