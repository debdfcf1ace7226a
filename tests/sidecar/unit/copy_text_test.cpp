// COPY text rows: splitting, NULLs and every escape PostgreSQL emits.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "db/copy_text.hpp"
#include "protocol/encode.hpp"

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

// ---- CopyRowEncoder: COPY text straight to insert messages ----

namespace {

// COPY text of a value as PostgreSQL writes it (CopyAttributeOutText): \ and
// the six control characters with letter escapes; other bytes as they are.
std::string copy_escape(const std::string& v) {
  std::string o;
  for (char c : v) {
    switch (c) {
      case '\\': o += "\\\\"; break;
      case '\b': o += "\\b"; break;
      case '\f': o += "\\f"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      case '\v': o += "\\v"; break;
      default: o += c;
    }
  }
  return o;
}

// The message the snapshot path built before CopyRowEncoder: parse, then
// row_key + append_value_object + snapshot_row_message + version_header.
std::string reference_message(const TableInfo& t, const std::vector<size_t>& selected, size_t lead, bool with_version,
                              std::string_view line) {
  Row fields;
  if (!parse_copy_row(line, fields)) return "<malformed>";
  RowValues row(t.columns.size());
  for (size_t k = 0; k < selected.size(); ++k) row[selected[k]] = fields[lead + k];
  std::string version;
  if (with_version && fields.back()) version = *fields.back();
  std::string value;
  append_value_object(value, t, row, selected);
  return snapshot_row_message(row_key(key_prefix(t), t, row), value, relation_json(t), version_header(version));
}

std::string encoded_message(const TableInfo& t, const std::vector<size_t>& selected, size_t lead, bool with_version,
                            std::string_view line, uint64_t widen_from = 0) {
  CopyRowEncoder enc(t, selected, lead, with_version, widen_from);
  if (!enc.split(line)) return "<wrong width>";
  std::string out = "prefix";
  if (!enc.append_message(out)) {
    EXPECT_EQ(out, "prefix");  // a malformed row leaves the output as it was
    return "<malformed>";
  }
  EXPECT_EQ(out.substr(0, 6), "prefix");
  return out.substr(6);
}

TableInfo sample_table(const std::string& schema, const std::string& name, int ncols, std::vector<size_t> pk) {
  TableInfo t;
  t.schema = schema;
  t.name = name;
  for (int i = 0; i < ncols; ++i) {
    ColumnInfo c;
    c.name = i == 1 ? "we\"ird/col\\n" : "c" + std::to_string(i);
    c.attnum = i + 1;
    t.columns.push_back(c);
  }
  t.pk = std::move(pk);
  return t;
}

}  // namespace

TEST(CopyRowEncoder, MatchesTheParsedPathOnKnownRows) {
  TableInfo t = sample_table("pub/lic", "t.a\"b", 3, {0});
  std::vector<size_t> sel{0, 1, 2};
  for (const char* line : {"1\tabc\t\\N", "a/b\\\\c\t\\\"q\t\\N\\N", "\\N\t\t", "x\\ty\\nz\t\x01\x1f\"\t\xc3\xa9\\r",
                           "\\101\\x42\\7\\x4a\\q\\/\t/\t//"}) {
    EXPECT_EQ(encoded_message(t, sel, 0, false, line), reference_message(t, sel, 0, false, line)) << line;
  }
  // with versions, a lead field, a two-column key, a key column not selected
  TableInfo t2 = sample_table("s", "t", 4, {2, 0});
  std::vector<size_t> sel2{3, 0, 1};
  EXPECT_EQ(encoded_message(t2, sel2, 1, true, "7\td\ta/\\\\b\tc\t123"),
            reference_message(t2, sel2, 1, true, "7\td\ta/\\\\b\tc\t123"));
  EXPECT_EQ(encoded_message(t2, sel2, 1, true, "7\td\t\\N\tc\t\\N"), reference_message(t2, sel2, 1, true, "7\td\t\\N\tc\t\\N"));
  // the exact bytes, once, so that both paths cannot drift together
  TableInfo t3 = sample_table("public", "items", 2, {0});
  EXPECT_EQ(encoded_message(t3, {0, 1}, 0, true, "4\ta/\"b\\\\\t99"),
            "{\"key\":\"\\\"public\\\".\\\"items\\\"/\\\"4\\\"\",\"value\":{\"c0\":\"4\",\"we\\\"ird/col\\\\n\":"
            "\"a/\\\"b\\\\\"},\"headers\":{\"operation\":\"insert\",\"relation\":[\"public\",\"items\"],"
            "\"version\":\"99\"}}");
}

TEST(CopyRowEncoder, RejectsWhatParseRejects) {
  TableInfo t = sample_table("s", "t", 2, {0});
  EXPECT_EQ(encoded_message(t, {0, 1}, 0, false, "1\tbad\\"), "<malformed>");
  EXPECT_EQ(encoded_message(t, {0, 1}, 0, false, "bad\\\tx"), "<malformed>");  // in the key
  EXPECT_EQ(encoded_message(t, {0, 1}, 0, true, "1\tx\t9\\"), "<malformed>");  // in the version
  EXPECT_EQ(encoded_message(t, {0, 1}, 0, false, "1\tx\ty"), "<wrong width>");
  EXPECT_EQ(encoded_message(t, {0, 1}, 0, false, "1"), "<wrong width>");
}

// shapesync.row_version()'s arithmetic (extension/versions.c), with the
// snapshot's xmax as the next xid.
TEST(CopyRowEncoder, WidensAnXminAsRowVersionDoes) {
  const uint64_t e5 = uint64_t{5} << 32;
  EXPECT_EQ(widen_xmin(999, e5 | 1000), e5 | 999);                               // this epoch
  EXPECT_EQ(widen_xmin(3, e5 | 1000), e5 | 3);                                   // the first normal xid
  EXPECT_EQ(widen_xmin(4000000000u, e5 | 1000), (uint64_t{4} << 32) | 4000000000u);  // before the wrap
  EXPECT_EQ(widen_xmin(1000, e5 | 1000), e5 | 1000);  // not past next: this epoch (never a visible row's)
  EXPECT_EQ(widen_xmin(1001, e5 | 1000), (uint64_t{4} << 32) | 1001);
  EXPECT_EQ(widen_xmin(4000000000u, 1000), 4000000000u);  // epoch 0 has none before it
  EXPECT_EQ(widen_xmin(750, 1000), 750u);
  for (uint32_t special : {0u, 1u, 2u})  // invalid, bootstrap, frozen: epoch 0 whatever next is
    EXPECT_EQ(widen_xmin(special, e5 | 1000), special);

  TableInfo t = sample_table("public", "items", 2, {0});
  auto with = [&](std::string_view xmin) {
    return encoded_message(t, {0, 1}, 0, true, "4\tx\\t\t" + std::string(xmin), e5 | 1000);
  };
  std::string head =
      "{\"key\":\"\\\"public\\\".\\\"items\\\"/\\\"4\\\"\",\"value\":{\"c0\":\"4\",\"we\\\"ird/col\\\\n\":"
      "\"x\\t\"},\"headers\":{\"operation\":\"insert\",\"relation\":[\"public\",\"items\"],\"version\":\"";
  EXPECT_EQ(with("999"), head + std::to_string(e5 | 999) + "\"}}");
  EXPECT_EQ(with("4000000000"), head + std::to_string((uint64_t{4} << 32) | 4000000000u) + "\"}}");
  EXPECT_EQ(with("2"), head + "2\"}}");
  EXPECT_EQ(with(""), head.substr(0, head.size() - std::string(",\"version\":\"").size()) + "}}");  // none
  for (const char* bad : {"abc", "-1", "4294967296", "12x", " 7", "1\\"}) EXPECT_EQ(with(bad), "<malformed>") << bad;
  // without widening the field is the version's text, as before
  EXPECT_EQ(encoded_message(t, {0, 1}, 0, true, "4\tx\\t\t999"), head + "999\"}}");
}

TEST(CopyRowEncoder, RandomRowsMatchTheParsedPath) {
  std::mt19937 rng(20261207);
  // bytes that matter: escapes of both formats, key separators, UTF-8, controls
  const std::string alphabet = std::string("ab/\\\"\t\n\r\b\f\v\x01\x1f\x7f /xé", 19) + "\xc3\xa9\xe2\x82\xac";
  int checked = 0;
  for (int round = 0; round < 3000; ++round) {
    int ncols = 1 + static_cast<int>(rng() % 5);
    std::vector<size_t> pk;
    for (int i = 0; i < ncols; ++i)
      if (rng() % 3 == 0) pk.push_back(static_cast<size_t>(i));
    std::shuffle(pk.begin(), pk.end(), rng);
    TableInfo t = sample_table(rng() % 2 ? "public" : "a/b.c", rng() % 2 ? "t" : "x\"/.y", ncols, pk);
    std::vector<size_t> sel;
    for (int i = 0; i < ncols; ++i)
      if (rng() % 4 != 0) sel.push_back(static_cast<size_t>(i));
    std::shuffle(sel.begin(), sel.end(), rng);
    size_t lead = rng() % 2;
    bool with_version = rng() % 2;
    std::string line;
    size_t width = lead + sel.size() + (with_version ? 1 : 0);
    for (size_t f = 0; f < width; ++f) {
      if (f) line += '\t';
      if (f < lead) {
        line += std::to_string(rng() % 10);
      } else if (rng() % 6 == 0) {
        line += "\\N";
      } else {
        std::string v;
        size_t len = rng() % 12;
        for (size_t k = 0; k < len; ++k) v += alphabet[rng() % alphabet.size()];
        line += copy_escape(v);
        if (rng() % 40 == 0) line += "\\x4";  // the escapes PostgreSQL never writes still decode alike
        if (rng() % 40 == 0) line += "\\0101";
      }
    }
    if (rng() % 50 == 0) line += '\\';  // malformed: a trailing backslash
    std::string want = reference_message(t, sel, lead, with_version, line);
    if (width == 0 && line.empty()) continue;
    EXPECT_EQ(encoded_message(t, sel, lead, with_version, line), want) << "round " << round << ": " << line;
    ++checked;
  }
  EXPECT_GT(checked, 2500);
}
