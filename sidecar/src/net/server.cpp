// HTTP/1.1 sessions (Boost.Beast) on C++20 coroutines.
#include "net/server.hpp"

#include <cerrno>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "util/log.hpp"

namespace shapesync {

namespace beast = boost::beast;
using tcp = asio::ip::tcp;

namespace {

// Sends a streamed (chunked) response on a session's stream.
class ChunkedWriter : public StreamWriter {
 public:
  explicit ChunkedWriter(beast::tcp_stream& s) : stream_(s) {}
  bool used() const { return used_; }

  asio::awaitable<bool> write_head(Response& head) override {
    used_ = true;
    http::response<http::empty_body> res{head.result(), head.version()};
    for (auto& f : head) res.set(f.name_string(), f.value());
    res.chunked(true);
    res.keep_alive(false);
    http::response_serializer<http::empty_body> sr{res};
    stream_.expires_after(std::chrono::seconds(30));
    auto [ec, n] = co_await http::async_write_header(stream_, sr, asio::as_tuple(asio::use_awaitable));
    stream_.expires_never();
    co_return !ec;
  }

  asio::awaitable<bool> write_chunk(std::string data) override {
    // A client that stops reading is cut off: a write may not take longer than this.
    stream_.expires_after(std::chrono::seconds(30));
    auto [ec, n] = co_await asio::async_write(stream_, http::make_chunk(asio::buffer(data)),
                                              asio::as_tuple(asio::use_awaitable));
    stream_.expires_never();
    co_return !ec;
  }

  asio::awaitable<void> finish() override {
    stream_.expires_after(std::chrono::seconds(10));
    co_await asio::async_write(stream_, http::make_chunk_last(), asio::as_tuple(asio::use_awaitable));
  }

 private:
  beast::tcp_stream& stream_;
  bool used_ = false;
};

}  // namespace

Server::Server(asio::io_context& io, App& app) : io_(io), app_(app), acceptor_(io) {}

void Server::listen(const std::string& host, unsigned short port) {
  tcp::endpoint ep(asio::ip::make_address(host), port);
  acceptor_.open(ep.protocol());
  acceptor_.set_option(asio::socket_base::reuse_address(true));
  acceptor_.bind(ep);
  acceptor_.listen(asio::socket_base::max_listen_connections);
}

void Server::stop_accepting() {
  stopping_ = true;
  asio::post(acceptor_.get_executor(), [this] {
    boost::system::error_code ec;
    acceptor_.close(ec);
  });
}

asio::awaitable<void> Server::accept_loop() {
  asio::steady_timer pause(co_await asio::this_coro::executor);
  int backoff_ms = 0;  // > 0 while out of descriptors (or memory)
  for (;;) {
    auto [ec, sock] = co_await acceptor_.async_accept(asio::make_strand(io_), asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (stopping_ || ec == asio::error::operation_aborted) co_return;
      bool exhausted = ec == asio::error::no_descriptors || ec.value() == ENFILE ||
                       ec == asio::error::no_buffer_space || ec == asio::error::no_memory;
      if (!exhausted) {
        log_warn("accept: ", ec.message());
        continue;
      }
      // The pending connection stays in the backlog: accepting again at once
      // would fail again and spin. Pause, longer each time, until one succeeds.
      if (backoff_ms == 0) {
        log_warn("accept: ", ec.message(), " with ", sessions_.load(),
                 " open connection(s); pausing new connections until it clears");
        backoff_ms = 50;
      } else {
        backoff_ms = std::min(backoff_ms * 2, 1000);
      }
      pause.expires_after(std::chrono::milliseconds(backoff_ms));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    if (backoff_ms > 0) {
      log_info("accepting connections again (", sessions_.load(), " open)");
      backoff_ms = 0;
    }
    boost::system::error_code opt_ec;
    sock.set_option(tcp::no_delay(true), opt_ec);
    auto ex = sock.get_executor();
    asio::co_spawn(ex, session(std::move(sock)), asio::detached);
  }
}

asio::awaitable<void> Server::session(tcp::socket sock) {
  ++sessions_;
  struct Guard {
    std::atomic<size_t>& n;
    ~Guard() { --n; }
  } guard{sessions_};
  beast::tcp_stream stream(std::move(sock));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(app_.config().max_body_bytes);
    parser.header_limit(64 * 1024);
    stream.expires_after(std::chrono::seconds(75));
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == http::error::body_limit || ec == http::error::header_limit) {
        http::response<http::string_body> res{http::status::payload_too_large, 11};
        res.set(http::field::content_type, "application/json; charset=utf-8");
        res.body() = R"({"error":"Request body too large"})";
        res.keep_alive(false);
        res.prepare_payload();
        stream.expires_after(std::chrono::seconds(10));
        co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      } else if (ec == http::error::bad_target || ec == http::error::bad_method || ec == http::error::bad_version ||
                 ec == http::error::bad_field || ec == http::error::bad_value) {
        http::response<http::string_body> res{http::status::bad_request, 11};
        res.set(http::field::content_type, "application/json; charset=utf-8");
        res.body() = R"({"error":"Malformed HTTP request"})";
        res.keep_alive(false);
        res.prepare_payload();
        stream.expires_after(std::chrono::seconds(10));
        co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      }
      break;
    }
    stream.expires_never();
    Request req = parser.release();
    ++in_flight_;
    ChunkedWriter streamed(stream);
    std::optional<Response> res = co_await app_.handle(std::move(req), streamed);
    if (!res) {  // streamed (SSE): the connection ends with the stream
      --in_flight_;
      break;
    }
    if (stopping_) res->keep_alive(false);
    stream.expires_after(std::chrono::seconds(60));
    auto [wec, wn] = co_await http::async_write(stream, *res, asio::as_tuple(asio::use_awaitable));
    --in_flight_;
    if (wec || !res->keep_alive()) break;
  }
  boost::system::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

}  // namespace shapesync
