// Work that may be done together, gathered while a worker is busy: items
// pushed under a group key come out in batches of at most `max_batch` items
// of one key. Keys take turns (the key whose items waited longest first; a
// key with more waiting items than a batch goes to the back of the line), and
// within a key items come out in push order. No timer: a batch is whatever
// waited while the workers were busy, so an idle system answers a lone item at
// once. With one_in_flight, a key whose batch is being worked on is skipped
// until finish(key): its items gather into the next batch (one worker per key
// at a time; other keys go on in parallel). The object owns its lock.
#pragma once
#include <cstddef>
#include <deque>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace shapesync {

template <class T>
class Coalescer {
 public:
  // max_batch 0 is taken as 1.
  explicit Coalescer(size_t max_batch, bool one_in_flight = false)
      : max_(max_batch ? max_batch : 1), one_in_flight_(one_in_flight) {}

  void push(const std::string& key, T item) {
    std::lock_guard lk(mu_);
    auto [it, fresh] = groups_.try_emplace(key);
    if (fresh) order_.push_back(key);
    it->second.push_back(std::move(item));
    ++size_;
  }

  // Up to max_batch items of one key (the key that has waited longest and,
  // with one_in_flight, is not being worked on), with that key; an empty
  // vector when nothing waits (or only for keys in flight).
  std::vector<T> take(std::string* key_out = nullptr) {
    std::lock_guard lk(mu_);
    std::vector<T> out;
    auto pos = order_.begin();
    while (pos != order_.end() && in_flight_.count(*pos)) ++pos;
    if (pos == order_.end()) return out;
    std::string key = std::move(*pos);
    order_.erase(pos);
    auto it = groups_.find(key);
    auto& q = it->second;
    while (!q.empty() && out.size() < max_) {
      out.push_back(std::move(q.front()));
      q.pop_front();
    }
    size_ -= out.size();
    if (q.empty()) groups_.erase(it);
    else order_.push_back(key);  // the rest waits its turn behind the other keys
    if (one_in_flight_) in_flight_.insert(key);
    if (key_out) *key_out = std::move(key);
    return out;
  }

  // The batch of `key` taken last is done (one_in_flight): its key may be taken again.
  void finish(const std::string& key) {
    std::lock_guard lk(mu_);
    in_flight_.erase(key);
  }

  // Items a take() could return now (not those of keys in flight).
  size_t available() const {
    std::lock_guard lk(mu_);
    size_t n = 0;
    for (auto& k : order_)
      if (!in_flight_.count(k)) n += groups_.at(k).size();
    return n;
  }

  size_t size() const {
    std::lock_guard lk(mu_);
    return size_;
  }
  size_t max_batch() const { return max_; }

 private:
  const size_t max_;
  const bool one_in_flight_;
  std::unordered_set<std::string> in_flight_;
  mutable std::mutex mu_;
  std::list<std::string> order_;
  std::unordered_map<std::string, std::deque<T>> groups_;
  size_t size_ = 0;
};

}  // namespace shapesync
