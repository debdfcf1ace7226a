// Coalescer: batches of one key, at most max_batch, keys taking turns; run
// with batch sizes 1 and 2 so that every item crosses a batch boundary.
#include "shapes/coalescer.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

using shapesync::Coalescer;

namespace {

std::vector<int> take(Coalescer<int>& q, std::string& key) { return q.take(&key); }

}  // namespace

TEST(Coalescer, EmptyGivesNothing) {
  Coalescer<int> q(2);
  std::string key = "untouched";
  EXPECT_TRUE(q.take(&key).empty());
  EXPECT_EQ(key, "untouched");
  EXPECT_EQ(q.size(), 0u);
}

TEST(Coalescer, ZeroIsOne) {
  Coalescer<int> q(0);
  EXPECT_EQ(q.max_batch(), 1u);
  q.push("a", 1);
  q.push("a", 2);
  EXPECT_EQ(q.take(), std::vector<int>{1});
  EXPECT_EQ(q.take(), std::vector<int>{2});
}

TEST(Coalescer, BatchOfOneKeepsPushOrderPerKeyAndAlternatesKeys) {
  Coalescer<int> q(1);
  q.push("a", 1);
  q.push("a", 2);
  q.push("b", 10);
  q.push("a", 3);
  std::string k;
  EXPECT_EQ(take(q, k), std::vector<int>{1});
  EXPECT_EQ(k, "a");
  EXPECT_EQ(take(q, k), std::vector<int>{10});  // b waited since before a's second turn
  EXPECT_EQ(k, "b");
  EXPECT_EQ(take(q, k), std::vector<int>{2});
  EXPECT_EQ(take(q, k), std::vector<int>{3});
  EXPECT_EQ(k, "a");
  EXPECT_TRUE(q.take().empty());
}

TEST(Coalescer, BatchOfTwoSplitsAtTheBoundary) {
  Coalescer<int> q(2);
  for (int i = 1; i <= 5; ++i) q.push("a", i);
  q.push("b", 100);
  std::string k;
  EXPECT_EQ(take(q, k), (std::vector<int>{1, 2}));
  EXPECT_EQ(k, "a");
  EXPECT_EQ(q.size(), 4u);
  EXPECT_EQ(take(q, k), std::vector<int>{100});
  EXPECT_EQ(k, "b");
  EXPECT_EQ(take(q, k), (std::vector<int>{3, 4}));
  EXPECT_EQ(take(q, k), std::vector<int>{5});  // exactly at the boundary: the last alone
  EXPECT_EQ(q.size(), 0u);
  EXPECT_TRUE(q.take().empty());
  // a key that emptied and comes back starts a new turn
  q.push("a", 6);
  EXPECT_EQ(take(q, k), std::vector<int>{6});
  EXPECT_EQ(k, "a");
}

// Many keys and items, interleaved pushes and takes at batch sizes 1, 2, 3:
// every item comes out exactly once, in push order within its key, never
// mixed with another key, never more than max_batch.
TEST(Coalescer, NothingLostNothingRepeated) {
  for (size_t max : {1u, 2u, 3u}) {
    Coalescer<int> q(max);
    std::map<std::string, std::vector<int>> pushed, got;
    int next = 0;
    auto take_one = [&] {
      std::string k;
      auto b = q.take(&k);
      EXPECT_LE(b.size(), max);
      for (int v : b) got[k].push_back(v);
      return !b.empty();
    };
    for (int round = 0; round < 200; ++round) {
      for (int j = 0; j < round % 5; ++j) {
        std::string key = "k" + std::to_string((next * 7) % 4);
        pushed[key].push_back(next);
        q.push(key, next++);
      }
      take_one();
    }
    while (take_one()) {
    }
    EXPECT_EQ(q.size(), 0u);
    EXPECT_EQ(got, pushed) << "max_batch " << max;
  }
}

// One in flight per key: a key being worked on is skipped until finish(),
// its new items gather into its next batch; other keys are not held up.
TEST(Coalescer, OneInFlightPerKey) {
  for (size_t max : {1u, 2u}) {
    Coalescer<int> q(max, true);
    q.push("a", 1);
    std::string k;
    EXPECT_EQ(take(q, k), std::vector<int>{1});
    EXPECT_EQ(k, "a");
    q.push("a", 2);
    q.push("a", 3);
    q.push("a", 4);
    EXPECT_EQ(q.size(), 3u);
    EXPECT_EQ(q.available(), 0u);  // only a's, and a is in flight
    EXPECT_TRUE(q.take(&k).empty());
    q.push("b", 10);
    EXPECT_EQ(q.available(), 1u);
    EXPECT_EQ(take(q, k), std::vector<int>{10});  // b is not held up by a
    EXPECT_EQ(k, "b");
    EXPECT_TRUE(q.take().empty());
    q.finish("a");
    EXPECT_EQ(q.available(), 3u);
    auto next = take(q, k);
    EXPECT_EQ(k, "a");
    EXPECT_EQ(next, (max == 1 ? std::vector<int>{2} : std::vector<int>{2, 3}));
    EXPECT_TRUE(q.take().empty());  // a in flight again, b still in flight
    q.finish("a");
    q.finish("b");
    EXPECT_EQ(take(q, k), (max == 1 ? std::vector<int>{3} : std::vector<int>{4}));
    q.finish("a");
    if (max == 1) {
      EXPECT_EQ(take(q, k), std::vector<int>{4});
      q.finish("a");
    }
    EXPECT_EQ(q.size(), 0u);
    EXPECT_TRUE(q.take().empty());
  }
}

// Workers that take, finish and take again, keys in flight one at a time:
// every item exactly once, in push order per key, batches within max.
TEST(Coalescer, OneInFlightNothingLost) {
  for (size_t max : {1u, 2u}) {
    Coalescer<int> q(max, true);
    std::map<std::string, std::vector<int>> pushed, got;
    std::vector<std::string> held;  // keys taken and not finished yet
    int next = 0;
    for (int round = 0; round < 300; ++round) {
      for (int j = 0; j < round % 4; ++j) {
        std::string key = "k" + std::to_string((next * 5) % 3);
        pushed[key].push_back(next);
        q.push(key, next++);
      }
      if (round % 3 == 0 && !held.empty()) {  // a worker finishes its oldest batch
        q.finish(held.front());
        held.erase(held.begin());
      }
      std::string k;
      auto b = q.take(&k);
      ASSERT_LE(b.size(), max);
      if (b.empty()) continue;
      ASSERT_EQ(std::count(held.begin(), held.end(), k), 0) << "a key taken twice at once";
      held.push_back(k);
      for (int v : b) got[k].push_back(v);
    }
    for (;;) {
      for (auto& k : held) q.finish(k);
      held.clear();
      std::string k;
      auto b = q.take(&k);
      if (b.empty()) break;
      held.push_back(k);
      for (int v : b) got[k].push_back(v);
    }
    EXPECT_EQ(q.size(), 0u);
    EXPECT_EQ(got, pushed) << "max_batch " << max;
  }
}
