// Offset parsing, printing and ordering (PROTOCOL.md §5.1).
#include <gtest/gtest.h>

#include "model/offset.hpp"

using namespace shapesync;

TEST(Offset, ParsesSpecialAndRegular) {
  EXPECT_EQ(parse_offset("-1")->kind, RequestOffset::Kind::kBeforeAll);
  EXPECT_EQ(parse_offset("now")->kind, RequestOffset::Kind::kNow);
  auto o = parse_offset("0_02");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->at, (LogOffset{0, 2}));
  EXPECT_EQ(parse_offset("7_inf")->at, (LogOffset{7, LogOffset::kInf}));
  EXPECT_EQ(parse_offset("18446744_3")->at.tx, 18446744u);
}

TEST(Offset, RejectsMalformed) {
  for (auto s : {"", "1", "1_2_3", "_", "1_", "_1", "a_1", "1_a", "1_-1", "-1_0", " 1_2", "1_2 ", "99999999999999999999_0", "1_INF"})
    EXPECT_FALSE(parse_offset(s)) << s;
}

TEST(Offset, OrdersLexicographicallyWithInfGreatest) {
  EXPECT_LT((LogOffset{0, 0}), (LogOffset{0, 1}));
  EXPECT_LT((LogOffset{0, 5}), LogOffset::snapshot_end());
  EXPECT_LT(LogOffset::snapshot_end(), (LogOffset{1, 0}));
  EXPECT_LT((LogOffset{3, 100}), (LogOffset{4, 0}));
  EXPECT_TRUE((LogOffset{0, 3}).is_snapshot_region());
  EXPECT_FALSE(LogOffset::snapshot_end().is_snapshot_region());
}

TEST(Offset, PrintsRoundTrip) {
  EXPECT_EQ(LogOffset::snapshot_end().to_string(), "0_inf");
  EXPECT_EQ((LogOffset{make_position(5, 2), 4}).to_string(), std::to_string((5ull << 32) | 2) + "_4");
  EXPECT_EQ(position_tick(make_position(77, 9)), 77u);
  for (auto s : {"0_0", "0_inf", "123_456"}) EXPECT_EQ(parse_offset(s)->at.to_string(), s);
}
