// Connection limits: at most so many open connections in all (below the
// descriptor limit, so the sidecar's own database connections and files always
// get one) and from one client address, so one client cannot take every
// descriptor. Over a limit, a connection is answered 503 and closed at once.
#pragma once
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <boost/asio/ip/address.hpp>

namespace shapesync {

class ConnectionLimits {
 public:
  // per_address 0: no per-address limit.
  ConnectionLimits(size_t total, size_t per_address) : max_total_(total), max_per_address_(per_address) {}
  ConnectionLimits(const ConnectionLimits&) = delete;

  // A connection's place, given back when it is destroyed.
  class Slot {
   public:
    Slot() = default;
    Slot(ConnectionLimits* l, std::string key) : limits_(l), key_(std::move(key)) {}
    Slot(Slot&& o) noexcept : limits_(std::exchange(o.limits_, nullptr)), key_(std::move(o.key_)) {}
    Slot& operator=(Slot&& o) noexcept {
      if (this != &o) {
        release();
        limits_ = std::exchange(o.limits_, nullptr);
        key_ = std::move(o.key_);
      }
      return *this;
    }
    ~Slot() { release(); }

   private:
    void release();
    ConnectionLimits* limits_ = nullptr;
    std::string key_;
  };

  enum class Refusal { kTotal, kPerAddress };
  // A slot for a new connection from `addr`, or nullopt (and why) when over a limit.
  std::optional<Slot> admit(const boost::asio::ip::address& addr, Refusal& why);
  size_t open() const;
  size_t open_from(const boost::asio::ip::address& addr) const;
  size_t max_total() const { return max_total_; }
  size_t max_per_address() const { return max_per_address_; }

  // The key of an address: IPv4-mapped IPv6 counts as its IPv4 address.
  static std::string key(const boost::asio::ip::address& addr);

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, size_t> per_address_;
  size_t total_ = 0;
  size_t max_total_, max_per_address_;
};

// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now.
size_t raise_descriptor_limit();
// The default connection limit for a descriptor limit: what is left after a
// reserve for the database connections, the listener, segment files and logs.
size_t default_max_connections(size_t descriptor_limit);

// The answer written to a refused connection (it is closed after).
std::string refusal_response(ConnectionLimits::Refusal why);

}  // namespace shapesync
