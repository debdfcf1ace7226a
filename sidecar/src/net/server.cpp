// HTTP/1.1 sessions (Boost.Beast) on C++20 coroutines.
#include "net/server.hpp"

#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "http/validate.hpp"
#include "util/log.hpp"
#include "util/log_limit.hpp"

namespace shapesync {

namespace beast = boost::beast;
using tcp = asio::ip::tcp;

namespace {

// Completes when the socket has a byte to read, or the peer is gone (eof or an
// error), as async_wait(wait_read) would, and leaves the byte for the next read
// (a one-byte MSG_PEEK receive). Unlike a wait, which re-arms the descriptor
// with epoll_ctl every time (asio 1.81), a receive tries the socket first and
// then waits on the registration it already has: one syscall less per
// parked request, per answered long-poll.
template <class Handler>
void await_readable(tcp::socket& sock, char& peek, Handler&& h) {
  sock.async_receive(asio::buffer(&peek, 1), tcp::socket::message_peek,
                     [h = std::forward<Handler>(h)](boost::system::error_code ec, size_t) mutable { h(ec); });
}

// Sends a streamed (chunked) response on a session's stream.
class ChunkedWriter : public StreamWriter {
 public:
  explicit ChunkedWriter(beast::tcp_stream& s) : stream_(s) {}

  asio::awaitable<bool> write_head(Response& head) override {
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
    if (!ec) metrics::process_metrics().sent(data.size());
    co_return !ec;
  }

 private:
  beast::tcp_stream& stream_;
};

}  // namespace

// One open client connection (counted in sessions_, and its place under the
// connection limits), moved along with its socket.
struct Server::Counted {
  Counted(std::atomic<size_t>& n, ConnectionLimits::Slot slot) : n_(&n), slot_(std::move(slot)) { ++n; }
  Counted(Counted&& o) noexcept : n_(std::exchange(o.n_, nullptr)), slot_(std::move(o.slot_)) {}
  Counted& operator=(Counted&&) = delete;
  ~Counted() {
    if (n_) --*n_;
  }
  std::atomic<size_t>* n_;
  ConnectionLimits::Slot slot_;
};

// A parked request or SSE stream: a waiter with a deadline.
struct Server::Sleeper : Waiter {
  // The deadline list (under its mutex).
  Sleeper* dl_prev = nullptr;
  Sleeper* dl_next = nullptr;
  int dl_kind = -1;  // -1: not listed
  std::chrono::steady_clock::time_point dl_at;
};

// Deadlines of parked requests and streams. Each kind of deadline is a fixed
// time after an event (a long-poll's arrival + its timeout, or half of it for an
// offset beyond the log; an SSE stream's last write + the keep-alive interval,
// or its start + the SSE timeout): a list per kind stays in deadline order by
// appending, and one timer serves all of them instead of a timer (and a timer
// operation) per connection.
class Server::Deadlines {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  static constexpr int kLongPoll = 0, kOutOfBounds = 1, kKeepAlive = 2, kStreamEnd = 3, kIdle = 4, kKinds = 5;
  explicit Deadlines(asio::io_context& io) : timer_(asio::make_strand(io)) {}
  void add(Sleeper& p, int kind, time_point at);
  void remove(Sleeper& p);
  // Lists p at `at` unless it already is.
  void set(Sleeper& p, int kind, time_point at) {
    if (p.dl_kind == kind && p.dl_at == at) return;
    remove(p);
    add(p, kind, at);
  }

 private:
  void arm();  // under mu_
  void expired();

  std::mutex mu_;
  Sleeper* head_[kKinds] = {};
  Sleeper* tail_[kKinds] = {};
  asio::steady_timer timer_;
  time_point armed_at_ = time_point::max();
};

// A parked request: its socket (no stream, no coroutine), unread bytes and what
// the answer needs. Runs on its connection's strand. It keeps itself alive until
// it is answered or its client is gone: while it waits, it is in its shape's
// waiter list and in the deadline list, and only those wake it.
class Server::Parked : public Sleeper, public std::enable_shared_from_this<Parked> {
 public:
  Parked(Server& srv, tcp::socket sock, beast::flat_buffer buffer, Counted counted, LiveWait w)
      : srv_(srv),
        sock_(std::move(sock)),
        buffer_(std::move(buffer)),
        counted_(std::move(counted)),
        wait_(std::move(w)) {}

  void start() {
    self_ = shared_from_this();
    check();
    if (!done_) watch_peer();
  }

  // Under the store mutex (or the deadline list's): only post.
  void wake() override {
    asio::post(sock_.get_executor(), [self = shared_from_this()] { self->check(); });
  }

 private:
  // Answers (and hands the connection back to a session) or keeps waiting.
  void check() {
    if (done_) return;
    LiveAnswer res;
    App::LiveStep step = srv_.app_.answer_live(wait_, *this, res);
    if (step == App::LiveStep::kWait) {
      srv_.deadlines_->set(*this,
                           wait_.wake_at < wait_.live_deadline ? Deadlines::kOutOfBounds : Deadlines::kLongPoll,
                           wait_.wake_at);
      return;
    }
    done_ = true;
    srv_.deadlines_->remove(*this);
    boost::system::error_code ec;
    sock_.cancel(ec);  // the peer watch
    if (step == App::LiveStep::kRead) {
      // The answer is in a segment file: read it in a coroutine, then answer.
      asio::co_spawn(sock_.get_executor(), read_then_answer(shared_from_this()), asio::detached);
      return;
    }
    answer(res);
  }

  static asio::awaitable<void> read_then_answer(std::shared_ptr<Parked> self) {
    LiveAnswer res;
    co_await self->srv_.app_.answer_read(self->wait_, res);
    self->answer(res);
  }

  // Sends the answer and hands the connection back to a session (or closes it).
  void answer(LiveAnswer& res) {
    boost::system::error_code ec;
    bool keep = res.keep_alive && !srv_.stopping_;
    std::optional<LiveAnswer> pending;
    if (res.head.empty() || !send_now(res)) pending.emplace(std::move(res));
    if (pending) {
      auto ex = sock_.get_executor();
      asio::co_spawn(ex, srv_.session(std::move(sock_), std::move(buffer_), std::move(counted_), std::move(pending)),
                     asio::detached);
    } else if (keep) {
      srv_.serve_when_readable(std::move(sock_), std::move(buffer_), std::move(counted_));
    } else {
      sock_.shutdown(tcp::socket::shutdown_send, ec);
      sock_.close(ec);
    }
    auto self = std::move(self_);  // may be the last reference: nothing after this
  }

  // Sends a serialized answer without waiting when the socket takes it whole
  // (the common case: a change is small); true when sent. Otherwise `a` keeps
  // what is left for the session to write.
  bool send_now(LiveAnswer& a) {
    iovec iov[2] = {{a.head.data(), a.head.size()}, {const_cast<char*>(a.body->data()), a.body->size()}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    ssize_t n = ::sendmsg(sock_.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    size_t total = a.head.size() + a.body->size();
    if (n >= 0 && static_cast<size_t>(n) == total) {
      --srv_.in_flight_;
      srv_.pm_.sent(a.body_bytes);
      if (a.delivery) srv_.pm_.delivered(a.commit_us);
      return true;
    }
    if (n > 0) {  // the rest goes through the session (head = what is left)
      size_t k = static_cast<size_t>(n);
      std::string rest = k < a.head.size() ? a.head.substr(k) + *a.body : a.body->substr(k - a.head.size());
      a.head = std::move(rest);
      a.body = std::make_shared<const std::string>();
    }
    return false;  // would block or failed: the session's write reports it
  }

  // A client that closes its connection while waiting is forgotten at once,
  // not at the long-poll deadline.
  void watch_peer() {
    await_readable(sock_, peek_, [self = shared_from_this()](boost::system::error_code ec) { self->on_readable(ec); });
  }

  void on_readable(boost::system::error_code ec) {
    if (done_ || ec == asio::error::operation_aborted) return;
    if (!ec) {
      char b;
      ssize_t n = ::recv(sock_.native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) return;  // a pipelined request: read after this answer
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        watch_peer();
        return;
      }
    }
    // End of stream, reset or error: the client is gone.
    done_ = true;
    srv_.app_.abandon_live(wait_, *this);
    srv_.deadlines_->remove(*this);
    boost::system::error_code ignored;
    sock_.close(ignored);
    Counted closed(std::move(counted_));
    --srv_.in_flight_;
    auto self = std::move(self_);  // may be the last reference: nothing after this
  }

  Server& srv_;
  tcp::socket sock_;
  beast::flat_buffer buffer_;
  Counted counted_;
  LiveWait wait_;
  std::shared_ptr<Parked> self_;
  char peek_ = 0;  // await_readable's byte
  bool done_ = false;
};

// A parked SSE stream between events: its socket (no stream, no coroutine) and
// where it is. A change (or its keep-alive or end deadline) wakes it; it sends
// what is new with one non-blocking sendmsg when the socket takes it whole,
// else through a short coroutine that gives the client 30 s to read it.
class Server::SseParked : public Sleeper, public std::enable_shared_from_this<SseParked> {
 public:
  SseParked(Server& srv, tcp::socket sock, Counted counted, SseStream st)
      : srv_(srv), sock_(std::move(sock)), counted_(std::move(counted)), st_(std::move(st)) {}

  void start() {
    self_ = shared_from_this();
    watch_peer();
    step();
  }

  // Under the store mutex (or the deadline list's): only post.
  void wake() override {
    asio::post(sock_.get_executor(), [self = shared_from_this()] { self->step(); });
  }

 private:
  void step() {
    while (!done_ && !flushing_) {
      SseStep next = srv_.app_.sse_next(st_, *this);
      if (next.kind == SseStep::Kind::kWait) {
        srv_.deadlines_->set(*this, st_.wake_at < st_.end_at ? Deadlines::kKeepAlive : Deadlines::kStreamEnd,
                             st_.wake_at);
        return;
      }
      srv_.deadlines_->remove(*this);
      if (next.kind == SseStep::Kind::kEnd) {
        end();
        return;
      }
      if (next.kind == SseStep::Kind::kRead) {
        // Events in a segment file: read them in a coroutine, send them, go on.
        flushing_ = true;
        asio::co_spawn(sock_.get_executor(), read_then_flush(shared_from_this()), asio::detached);
        return;
      }
      if (next.text->empty()) continue;
      // One HTTP chunk: size line, text, CRLF.
      char size[24];
      int len = std::snprintf(size, sizeof size, "%zx\r\n", next.text->size());
      iovec iov[3] = {{size, static_cast<size_t>(len)},
                      {const_cast<char*>(next.text->data()), next.text->size()},
                      {const_cast<char*>("\r\n"), 2}};
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = 3;
      ssize_t n = ::sendmsg(sock_.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
      size_t total = static_cast<size_t>(len) + next.text->size() + 2;
      if (n >= 0 && static_cast<size_t>(n) == total) {
        st_.last_sent = std::chrono::steady_clock::now();
        srv_.pm_.sent(next.text->size());
        if (next.delivery) srv_.pm_.delivered(next.commit_us);
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        gone();
        return;
      }
      // A slow reader: the rest is written with a deadline, then events resume.
      std::string rest = std::string(size, static_cast<size_t>(len)) + *next.text + "\r\n";
      rest.erase(0, n > 0 ? static_cast<size_t>(n) : 0);
      flushing_ = true;
      asio::co_spawn(sock_.get_executor(),
                     flush(shared_from_this(), std::move(rest), next.text->size(), next.delivery, next.commit_us),
                     asio::detached);
      return;
    }
  }

  static asio::awaitable<void> read_then_flush(std::shared_ptr<SseParked> self) {
    std::optional<std::string> text = co_await self->srv_.app_.sse_read(self->st_);
    if (self->done_) co_return;
    if (!text) {
      self->flushing_ = false;
      self->end();
      co_return;
    }
    if (text->empty()) {
      self->flushing_ = false;
      self->step();
      co_return;
    }
    char size[24];
    int len = std::snprintf(size, sizeof size, "%zx\r\n", text->size());
    co_await flush(self, std::string(size, static_cast<size_t>(len)) + *text + "\r\n", text->size(), false, 0);
  }

  // Writes the rest of an event chunk (`text_bytes` of event text; a live
  // delivery when `delivery`, whose oldest change's tick time is commit_us).
  static asio::awaitable<void> flush(std::shared_ptr<SseParked> self, std::string rest, size_t text_bytes,
                                     bool delivery, int64_t commit_us) {
    boost::system::error_code ec;
    ++self->watch_gen_;
    self->sock_.cancel(ec);  // the peer watch: it is set again after
    beast::tcp_stream stream(std::move(self->sock_));
    // A client that stops reading is cut off: a write may not take longer than this.
    stream.expires_after(std::chrono::seconds(30));
    auto [wec, n] = co_await asio::async_write(stream, asio::buffer(rest), asio::as_tuple(asio::use_awaitable));
    self->sock_ = stream.release_socket();
    self->flushing_ = false;
    if (wec) {
      self->gone();
      co_return;
    }
    self->st_.last_sent = std::chrono::steady_clock::now();
    self->srv_.pm_.sent(text_bytes);
    if (delivery) self->srv_.pm_.delivered(commit_us);
    self->watch_peer();
    self->step();
  }

  // The end of the stream: the last chunk, then the connection closes.
  void end() {
    done_ = true;
    srv_.app_.end_sse(st_, *this);
    srv_.deadlines_->remove(*this);
    ++watch_gen_;
    boost::system::error_code ec;
    sock_.cancel(ec);
    static constexpr std::string_view kLast = "0\r\n\r\n";
    ssize_t n = ::send(sock_.native_handle(), kLast.data(), kLast.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0 && static_cast<size_t>(n) == kLast.size()) {
      sock_.shutdown(tcp::socket::shutdown_send, ec);
      sock_.close(ec);
      --srv_.in_flight_;
      Counted closed(std::move(counted_));
    } else {
      std::string rest(kLast.substr(n > 0 ? static_cast<size_t>(n) : 0));
      asio::co_spawn(sock_.get_executor(), finish(srv_, std::move(sock_), std::move(counted_), std::move(rest)),
                     asio::detached);
    }
    auto self = std::move(self_);  // may be the last reference: nothing after this
  }

  static asio::awaitable<void> finish(Server& srv, tcp::socket sock, Counted counted, std::string rest) {
    beast::tcp_stream stream(std::move(sock));
    stream.expires_after(std::chrono::seconds(10));
    co_await asio::async_write(stream, asio::buffer(rest), asio::as_tuple(asio::use_awaitable));
    boost::system::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    --srv.in_flight_;
  }

  // The client is gone (closed, reset, or too slow): forget the stream.
  void gone() {
    done_ = true;
    srv_.app_.end_sse(st_, *this);
    srv_.deadlines_->remove(*this);
    ++watch_gen_;
    boost::system::error_code ignored;
    sock_.close(ignored);
    --srv_.in_flight_;
    Counted closed(std::move(counted_));
    auto self = std::move(self_);  // may be the last reference: nothing after this
  }

  void watch_peer() {
    unsigned gen = watch_gen_;
    await_readable(sock_, peek_, [self = shared_from_this(), gen](boost::system::error_code ec) {
      if (gen == self->watch_gen_) self->on_readable(ec);
    });
  }

  void on_readable(boost::system::error_code ec) {
    if (done_ || flushing_ || ec == asio::error::operation_aborted) return;
    if (!ec) {
      char b;
      ssize_t n = ::recv(sock_.native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) return;  // the client sent something: ignored, as before
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        watch_peer();
        return;
      }
    }
    gone();
  }

  Server& srv_;
  tcp::socket sock_;
  Counted counted_;
  SseStream st_;
  std::shared_ptr<SseParked> self_;
  char peek_ = 0;  // await_readable's byte
  unsigned watch_gen_ = 0;
  bool flushing_ = false;
  bool done_ = false;
};

// A keep-alive connection between requests (--idle-timeout of silence closes
// it). Thousands of clients re-request at once after a fan-out; while they are
// on their way, each costs its socket and this, not a session's coroutine
// frame, parser and buffers.
class Server::Idle : public Sleeper, public std::enable_shared_from_this<Idle> {
 public:
  Idle(Server& srv, tcp::socket sock, beast::flat_buffer buffer, Counted counted)
      : srv_(srv), sock_(std::move(sock)), buffer_(std::move(buffer)), counted_(std::move(counted)) {}

  void start() {
    self_ = shared_from_this();
    srv_.deadlines_->add(*this, Deadlines::kIdle,
                         std::chrono::steady_clock::now() +
                             std::chrono::milliseconds(srv_.app_.config().idle_timeout_ms));
    await_readable(sock_, peek_, [self = shared_from_this()](boost::system::error_code ec) { self->on_readable(ec); });
  }

  // Under the deadline list's mutex: only post.
  void wake() override {
    asio::post(sock_.get_executor(), [self = shared_from_this()] { self->expire(); });
  }

 private:
  void on_readable(boost::system::error_code ec) {
    if (done_) return;
    done_ = true;
    srv_.deadlines_->remove(*this);
    auto self = std::move(self_);  // keeps *this alive to the end of this function, and no longer
    if (ec) {  // the peer closed (eof) or reset
      boost::system::error_code ignored;
      sock_.close(ignored);
      return;
    }
    // The first byte of the next request: a session serves it.
    auto ex = sock_.get_executor();
    asio::co_spawn(ex, srv_.session(std::move(sock_), std::move(buffer_), std::move(counted_), std::nullopt),
                   asio::detached);
  }

  // Silent for the whole timeout: closed, as a session's read would have been.
  void expire() {
    if (done_) return;
    done_ = true;
    boost::system::error_code ignored;
    sock_.shutdown(tcp::socket::shutdown_send, ignored);
    sock_.close(ignored);  // the wait completes (aborted) and finds done_
    Counted closed(std::move(counted_));
    auto self = std::move(self_);  // may be the last reference: nothing after this
  }

  Server& srv_;
  tcp::socket sock_;
  beast::flat_buffer buffer_;
  Counted counted_;
  std::shared_ptr<Idle> self_;
  char peek_ = 0;  // await_readable's byte
  bool done_ = false;
};

void Server::serve_when_readable(tcp::socket sock, beast::flat_buffer buffer, Counted counted) {
  if (buffer.size() > 0) {  // a pipelined request is already here
    auto ex = sock.get_executor();
    asio::co_spawn(ex, session(std::move(sock), std::move(buffer), std::move(counted), std::nullopt), asio::detached);
    return;
  }
  buffer.shrink_to_fit();
  std::make_shared<Idle>(*this, std::move(sock), std::move(buffer), std::move(counted))->start();
}

void Server::Deadlines::add(Sleeper& p, int kind, time_point at) {
  std::lock_guard lk(mu_);
  p.dl_kind = kind;
  p.dl_at = at;
  // Append, stepping back over the rare later deadline (a request that changed kind).
  Sleeper* after = tail_[kind];
  while (after && after->dl_at > at) after = after->dl_prev;
  p.dl_prev = after;
  p.dl_next = after ? after->dl_next : head_[kind];
  (p.dl_next ? p.dl_next->dl_prev : tail_[kind]) = &p;
  (after ? after->dl_next : head_[kind]) = &p;
  if (at < armed_at_) arm();
}

void Server::Deadlines::remove(Sleeper& p) {
  std::lock_guard lk(mu_);
  if (p.dl_kind < 0) return;
  int k = p.dl_kind;
  (p.dl_prev ? p.dl_prev->dl_next : head_[k]) = p.dl_next;
  (p.dl_next ? p.dl_next->dl_prev : tail_[k]) = p.dl_prev;
  p.dl_prev = p.dl_next = nullptr;
  p.dl_kind = -1;
}

void Server::Deadlines::arm() {
  time_point next = time_point::max();
  for (auto* h : head_)
    if (h) next = std::min(next, h->dl_at);
  if (next == time_point::max() || next >= armed_at_) return;
  armed_at_ = next;
  timer_.expires_at(next);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec != asio::error::operation_aborted) expired();
  });
}

void Server::Deadlines::expired() {
  std::lock_guard lk(mu_);
  armed_at_ = time_point::max();
  auto now = std::chrono::steady_clock::now();
  for (int k = 0; k < kKinds; ++k) {
    while (head_[k] && head_[k]->dl_at <= now) {
      Sleeper* p = head_[k];
      head_[k] = p->dl_next;
      (head_[k] ? head_[k]->dl_prev : tail_[k]) = nullptr;
      p->dl_prev = p->dl_next = nullptr;
      p->dl_kind = -1;
      p->wake();  // listed, so alive; checked on its own strand
    }
  }
  arm();
}

Server::Server(asio::io_context& io, App& app, size_t descriptor_limit, std::vector<asio::io_context*> connections)
    : io_(io),
      conn_io_(std::move(connections)),
      app_(app),
      acceptor_(io),
      deadlines_(std::make_unique<Deadlines>(io)),
      pm_(metrics::process_metrics()),
      limits_(std::make_unique<ConnectionLimits>(
          app.config().max_connections > 0 ? static_cast<size_t>(app.config().max_connections)
                                           : default_max_connections(descriptor_limit),
          static_cast<size_t>(app.config().max_connections_per_address))) {
  if (conn_io_.empty()) throw std::invalid_argument("Server: no io_context for connections");
}

void Server::refuse(tcp::socket sock, ConnectionLimits::Refusal why, const tcp::endpoint& peer) {
  // Answered and closed without a coroutine, a timer or a read: a flood of
  // these costs the sidecar one accept and one send each.
  static LogLimit per_address_log, total_log;
  bool per_address = why == ConnectionLimits::Refusal::kPerAddress;
  size_t suppressed = 0;
  if ((per_address ? per_address_log : total_log).allow(suppressed)) {
    if (per_address)
      log_warn("refusing connections from ", peer.address().to_string(), ": ", limits_->open_from(peer.address()),
               " open from that address (--max-connections-per-address ", limits_->max_per_address(), ")",
               suppressed ? "; " + std::to_string(suppressed) + " more refused since the last such line" : "");
    else
      log_warn("refusing connections: ", limits_->open(), " open (--max-connections ", limits_->max_total(), ")",
               suppressed ? "; " + std::to_string(suppressed) + " more refused since the last such line" : "");
  }
  static const std::string kPerAddress = refusal_response(ConnectionLimits::Refusal::kPerAddress),
                           kTotal = refusal_response(ConnectionLimits::Refusal::kTotal);
  const std::string& answer = per_address ? kPerAddress : kTotal;
  int fd = sock.native_handle();
  (void)::send(fd, answer.data(), answer.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
  // What the client already sent is read and dropped, so that closing sends a
  // FIN, not a reset that could destroy the answer before it is read.
  char sink[4096];
  for (int i = 0; i < 16 && ::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
  }
  boost::system::error_code ec;
  sock.close(ec);
}

Server::~Server() = default;

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

asio::any_io_executor Server::next_connection_executor() {
  return conn_io_[next_conn_.fetch_add(1, std::memory_order_relaxed) % conn_io_.size()]->get_executor();
}

asio::awaitable<void> Server::accept_loop() {
  asio::steady_timer pause(co_await asio::this_coro::executor);
  int backoff_ms = 0;  // > 0 while out of descriptors (or memory)
  for (;;) {
    auto [ec, sock] = co_await acceptor_.async_accept(next_connection_executor(), asio::as_tuple(asio::use_awaitable));
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
    tcp::endpoint peer = sock.remote_endpoint(opt_ec);
    if (opt_ec) continue;  // already gone
    ConnectionLimits::Refusal why;
    auto slot = limits_->admit(peer.address(), why);
    if (!slot) {
      refuse(std::move(sock), why, peer);
      continue;
    }
    sock.set_option(tcp::no_delay(true), opt_ec);
    serve_when_readable(std::move(sock), beast::flat_buffer(), Counted(sessions_, std::move(*slot)));
  }
}

asio::awaitable<bool> Server::write_response(beast::tcp_stream& stream, Response& res, bool delivery,
                                             int64_t commit_us) {
  if (stopping_) res.keep_alive(false);
  stream.expires_after(std::chrono::seconds(60));
  size_t body = res.body().size();
  auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
  --in_flight_;
  if (!wec) {
    pm_.sent(body);
    if (delivery) pm_.delivered(commit_us);
  }
  co_return !wec && res.keep_alive();
}

asio::awaitable<bool> Server::write_answer(beast::tcp_stream& stream, LiveAnswer& a) {
  if (a.head.empty()) co_return co_await write_response(stream, a.res, a.delivery, a.commit_us);
  std::array<asio::const_buffer, 2> bufs{asio::buffer(a.head), asio::buffer(*a.body)};
  stream.expires_after(std::chrono::seconds(60));
  auto [wec, wn] = co_await asio::async_write(stream, bufs, asio::as_tuple(asio::use_awaitable));
  --in_flight_;
  if (!wec) {
    pm_.sent(a.body_bytes);
    if (a.delivery) pm_.delivered(a.commit_us);
  }
  co_return !wec && a.keep_alive && !stopping_;
}

asio::awaitable<void> Server::session(tcp::socket sock, beast::flat_buffer buffer, Counted counted,
                                      std::optional<LiveAnswer> pending) {
  beast::tcp_stream stream(std::move(sock));
  bool open = true;
  if (pending) {
    open = co_await write_answer(stream, *pending);
    pending.reset();
    if (open && buffer.size() == 0) {
      serve_when_readable(stream.release_socket(), std::move(buffer), std::move(counted));
      co_return;
    }
  }
  const Config& cfg = app_.config();
  while (open) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(cfg.max_body_bytes);
    parser.header_limit(static_cast<std::uint32_t>(cfg.max_header_bytes));
    stream.expires_after(std::chrono::milliseconds(cfg.idle_timeout_ms));
    // The head first: its URL and framing are checked before any body is read.
    auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    std::optional<HeadError> refused;
    if (!ec) {
      refused = check_request_head(parser.get(), cfg.max_url_bytes);
      if (!refused) {
        auto [bec, bn] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
        ec = bec;
      }
    }
    if (ec == http::error::header_limit && !parser.get().target().empty() &&
        parser.get().target().size() <= cfg.max_url_bytes) {
      // the request line was read and its URL is fine: a header is what is too
      // large (a huge Authorization token, say): 431, not 414
      refused = HeadError{431, error_body("Request header fields too large")};
    } else if (ec) {
      auto data = buffer.data();
      refused = read_error_answer(ec, std::string_view(static_cast<const char*>(data.data()), data.size()),
                                  cfg.max_url_bytes);
    }
    if (refused) {
      // A JSON answer, then the connection closes: after a framing error
      // nothing on it can be trusted to start where the next request does.
      http::response<http::string_body> res{static_cast<http::status>(refused->status), 11};
      res.set(http::field::content_type, "application/json; charset=utf-8");
      res.set(http::field::cache_control, "no-store");
      res.body() = std::move(refused->body);
      res.keep_alive(false);
      res.prepare_payload();
      stream.expires_after(std::chrono::seconds(10));
      co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      // Lingering close: the client may still be sending the rest of its
      // request; closing with unread data would reset the connection and
      // lose the answer on its way. Stop sending, read and drop what comes
      // (a bounded amount, for a bounded time), then close.
      beast::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      stream.expires_after(std::chrono::seconds(2));
      std::vector<char> sink(64 * 1024);
      for (size_t drained = 0; drained < (64u << 20);) {
        auto [rec, got] = co_await stream.async_read_some(asio::buffer(sink), asio::as_tuple(asio::use_awaitable));
        if (rec) break;
        drained += got;
      }
      break;
    }
    if (ec) break;
    stream.expires_never();
    Request req = parser.release();
    ++in_flight_;
    ChunkedWriter streamed(stream);
    Deferred later;
    std::optional<Response> res = co_await app_.handle(std::move(req), streamed, later);
    if (later.sse) {
      // The stream's events are sent by a parked stream: this coroutine ends,
      // and with it everything the request held.
      std::make_shared<SseParked>(*this, stream.release_socket(), std::move(counted), std::move(*later.sse))->start();
      co_return;
    }
    if (later.wait) {
      // Park it: this coroutine ends, and with it everything the request held.
      buffer.shrink_to_fit();
      std::make_shared<Parked>(*this, stream.release_socket(), std::move(buffer), std::move(counted),
                               std::move(*later.wait))
          ->start();
      co_return;
    }
    if (!res) {  // streamed (SSE): the connection ends with the stream
      --in_flight_;
      break;
    }
    open = co_await write_response(stream, *res, later.delivery, later.commit_us);
    if (open && buffer.size() == 0) {
      // Between requests: this coroutine ends, and with it the parser and the response.
      serve_when_readable(stream.release_socket(), std::move(buffer), std::move(counted));
      co_return;
    }
  }
  boost::system::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

}  // namespace shapesync
