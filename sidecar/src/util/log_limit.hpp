// A log line that may come once per request (a refused connection, a missing
// grant) is written at most once per interval; the lines left out are counted
// and reported with the next one written.
#pragma once
#include <chrono>
#include <cstddef>
#include <mutex>

namespace shapesync {

class LogLimit {
 public:
  explicit LogLimit(std::chrono::milliseconds every = std::chrono::seconds(10)) : every_(every) {}
  // True when a line may be written now; `suppressed` is how many were left
  // out since the last one.
  bool allow(size_t& suppressed) {
    std::lock_guard lk(mu_);
    auto now = std::chrono::steady_clock::now();
    if (written_ && now - last_ < every_) {
      ++suppressed_;
      return false;
    }
    written_ = true;
    last_ = now;
    suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  std::mutex mu_;
  std::chrono::milliseconds every_;
  std::chrono::steady_clock::time_point last_;
  size_t suppressed_ = 0;
  bool written_ = false;
};

}  // namespace shapesync
