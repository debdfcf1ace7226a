// COPY text rows: splitting, NULLs and every escape PostgreSQL emits.
#include <gtest/gtest.h>

#include "db/copy_text.hpp"

using namespace shapesync;
using Row = std::vector<std::optional<std::string>>;

TEST(CopyText, FieldsNullsAndEmpty) {
  Row r;
  ASSERT_TRUE(parse_copy_row("1\tabc\t\\N\t", r));
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0], "1");
  EXPECT_EQ(r[1], "abc");
  EXPECT_FALSE(r[2].has_value());
  EXPECT_EQ(r[3], "");  // an empty string is not NULL
  ASSERT_TRUE(parse_copy_row("only", r));
  ASSERT_EQ(r.size(), 1u);  // reused vectors shrink to the row
  EXPECT_EQ(r[0], "only");
}

TEST(CopyText, Escapes) {
  Row r;
  ASSERT_TRUE(parse_copy_row("a\\tb\\nc\\rd\\\\e\\bf\\fg\\vh\t\\N\\\\", r));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0], std::string("a\tb\nc\rd\\e\bf\fg\vh"));
  EXPECT_EQ(r[1], std::string("N\\"));  // \N inside a longer field is N, not NULL
  ASSERT_TRUE(parse_copy_row("\\101\\x42\\7\\x4a\\q", r));
  EXPECT_EQ(r[0], "AB\x07Jq");
  EXPECT_FALSE(parse_copy_row("bad\\", r));
}
