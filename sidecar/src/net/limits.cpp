// Connection limits and the descriptor limit (see limits.hpp).
#include "net/limits.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <utility>

namespace shapesync {

std::string ConnectionLimits::key(const boost::asio::ip::address& addr) {
  if (addr.is_v6() && addr.to_v6().is_v4_mapped()) {
    auto b = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, addr.to_v6()).to_bytes();
    return std::string(b.begin(), b.end());
  }
  if (addr.is_v4()) {
    auto b = addr.to_v4().to_bytes();
    return std::string(b.begin(), b.end());
  }
  auto b = addr.to_v6().to_bytes();
  return std::string(b.begin(), b.end());
}

std::optional<ConnectionLimits::Slot> ConnectionLimits::admit(const boost::asio::ip::address& addr, Refusal& why) {
  std::string k = key(addr);
  std::lock_guard lk(mu_);
  if (total_ >= max_total_) {
    why = Refusal::kTotal;
    return std::nullopt;
  }
  size_t& n = per_address_[k];
  if (max_per_address_ > 0 && n >= max_per_address_) {
    why = Refusal::kPerAddress;
    return std::nullopt;
  }
  ++n;
  ++total_;
  return Slot(this, std::move(k));
}

void ConnectionLimits::Slot::release() {
  if (!limits_) return;
  std::lock_guard lk(limits_->mu_);
  --limits_->total_;
  auto it = limits_->per_address_.find(key_);
  if (it != limits_->per_address_.end() && --it->second == 0) limits_->per_address_.erase(it);
  limits_ = nullptr;
}

size_t ConnectionLimits::open() const {
  std::lock_guard lk(mu_);
  return total_;
}

size_t ConnectionLimits::open_from(const boost::asio::ip::address& addr) const {
  std::lock_guard lk(mu_);
  auto it = per_address_.find(key(addr));
  return it == per_address_.end() ? 0 : it->second;
}

size_t raise_descriptor_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  if (rl.rlim_cur == RLIM_INFINITY) return 1u << 20;
  return static_cast<size_t>(rl.rlim_cur);
}

size_t default_max_connections(size_t descriptor_limit) {
  // database connections (a few), listener, epoll, segment files being
  // written or read, the log: 128 is ample; small limits keep a quarter.
  if (descriptor_limit > 512) return descriptor_limit - 128;
  return std::max<size_t>(1, descriptor_limit * 3 / 4 - 8);
}

std::string refusal_response(ConnectionLimits::Refusal why) {
  std::string body = why == ConnectionLimits::Refusal::kPerAddress
                         ? R"({"code":"too_many_connections","message":"Too many open connections from your address, please retry"})"
                         : R"({"code":"too_many_connections","message":"Too many open connections, please retry"})";
  return "HTTP/1.1 503 Service Unavailable\r\n"
         "Content-Type: application/json; charset=utf-8\r\n"
         "Retry-After: 5\r\n"
         "Cache-Control: no-store\r\n"
         "Connection: close\r\n"
         "Content-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace shapesync
