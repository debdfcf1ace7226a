// Message encoding, keys, schema header, cursor, array parsing, snapshots.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "protocol/encode.hpp"
#include "model/batch.hpp"
#include "db/changes.hpp"
#include "db/text_array.hpp"

using namespace shapesync;

namespace {
TableInfo items() {
  TableInfo t;
  t.relid = 1;
  t.schema = "public";
  t.name = "items";
  t.columns = {{"id", 1, "int8", 0, 0, true, -1, "int8"},
               {"title", 2, "varchar", 0, -1, false, 14, "varchar"},
               {"tags", 4, "text", 1, -1, false, -1, "_text"},
               {"price", 5, "numeric", 0, -1, true, (10 << 16 | 2) + 4, "numeric"}};
  t.pk = {0};
  return t;
}
}  // namespace

TEST(Json, EscapesControlQuotesBackslash) {
  std::string o;
  append_json_string(o, std::string("a\"b\\c\n\x01\xc3\xa9", 9));
  EXPECT_EQ(o, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"");
  EXPECT_EQ(nlohmann::json::parse(o).get<std::string>(), std::string("a\"b\\c\n\x01\xc3\xa9", 9));
}

TEST(Key, QuotesEscapesAndNulls) {
  TableInfo t = items();
  RowValues r = {std::string("a/b"), std::string("x"), std::nullopt, std::string("1")};
  EXPECT_EQ(row_key(key_prefix(t), t, r), R"("public"."items"/"a//b")");
  t.pk = {0, 1};
  r[1] = std::nullopt;
  EXPECT_EQ(row_key(key_prefix(t), t, r), R"("public"."items"/"a//b"/_)");
  TableInfo odd = t;
  odd.schema = "s.x";
  odd.name = "a/b";
  EXPECT_EQ(key_prefix(odd), R"("s..x"."a//b"/)");
}

TEST(Schema, MatchesElectricFields) {
  TableInfo t = items();
  auto j = nlohmann::json::parse(schema_json(t, {0, 1, 2, 3}));
  EXPECT_EQ(j["id"], nlohmann::json::parse(R"({"type":"int8","pk_index":0,"not_null":true})"));
  EXPECT_EQ(j["title"], nlohmann::json::parse(R"({"type":"varchar","max_length":10})"));
  EXPECT_EQ(j["tags"], nlohmann::json::parse(R"({"type":"text","dims":1})"));
  EXPECT_EQ(j["price"], nlohmann::json::parse(R"({"type":"numeric","not_null":true,"precision":10,"scale":2})"));
}

TEST(Messages, ChangeMessageIsExactJson) {
  TableInfo t = items();
  RowValues r = {std::string("7"), std::string("hi \"you\""), std::nullopt, std::string("1.50")};
  std::string v;
  append_value_object(v, t, r, {0, 1, 2});
  ChangeHeaders h;
  h.operation = "insert";
  std::string rel = relation_json(t);
  h.relation = rel;
  h.txid = 755;
  h.lsn = 24659288;
  h.op_position = 2;
  h.last = true;
  std::string m = change_message(row_key(key_prefix(t), t, r), v, nullptr, h);
  EXPECT_EQ(m, R"({"key":"\"public\".\"items\"/\"7\"","value":{"id":"7","title":"hi \"you\"","tags":null},)"
               R"("headers":{"operation":"insert","relation":["public","items"],"txids":[755],"lsn":"24659288",)"
               R"("op_position":2,"last":true}})");
  h.last = false;
  h.key_change_to = "k2";
  std::string old = R"({"title":"a"})";
  auto j = nlohmann::json::parse(change_message("k", v, &old, h));
  EXPECT_FALSE(j["headers"].contains("last"));
  EXPECT_EQ(j["headers"]["key_change_to"], "k2");
  EXPECT_EQ(j["old_value"]["title"], "a");
}

TEST(Messages, ControlMessages) {
  EXPECT_EQ(up_to_date_message(42), R"({"headers":{"control":"up-to-date","global_last_seen_lsn":"42"}})");
  EXPECT_EQ(snapshot_end_message("10", "12", {"10", "11"}),
            R"({"headers":{"control":"snapshot-end","xmin":"10","xmax":"12","xip_list":["10","11"]}})");
  EXPECT_EQ(snapshot_row_message("k", "{}", R"(["public","t"])"),
            R"({"key":"k","value":{},"headers":{"operation":"insert","relation":["public","t"]}})");
}

TEST(Cursor, FollowsElectricAlgorithm) {
  long long epoch = 1728432000;
  EXPECT_EQ(next_cursor(epoch + 1, 20, 0, 5), 20);
  EXPECT_EQ(next_cursor(epoch + 20, 20, 0, 5), 20);
  EXPECT_EQ(next_cursor(epoch + 21, 20, 0, 5), 40);
  EXPECT_EQ(next_cursor(epoch + 21, 20, 40, 5), 45);  // never repeats the client's cursor
  EXPECT_EQ(next_cursor(epoch + 21, 0, 40, 5), 0);
}

TEST(TextArray, ParsesQuotingEscapesAndNull) {
  auto r = parse_text_array(R"({1,"a b","q\"x","back\\slash",NULL,"NULL",""})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 7u);
  EXPECT_EQ(*(*r)[0], "1");
  EXPECT_EQ(*(*r)[1], "a b");
  EXPECT_EQ(*(*r)[2], "q\"x");
  EXPECT_EQ(*(*r)[3], "back\\slash");
  EXPECT_FALSE((*r)[4]);
  EXPECT_EQ(*(*r)[5], "NULL");
  EXPECT_EQ(*(*r)[6], "");
  EXPECT_TRUE(parse_text_array("{}")->empty());
  EXPECT_FALSE(parse_text_array("{a,"));
  EXPECT_FALSE(parse_text_array("{\"a}"));
  EXPECT_FALSE(parse_text_array("a"));
  EXPECT_EQ(text_array_literal({"a\"b", "c\\d"}), R"({"a\"b","c\\d"})");
  EXPECT_EQ(*(*parse_text_array(text_array_literal({"a\"b", "c\\d"})))[0], "a\"b");
}

namespace {
// array_send's layout: ndim, has-null flag, element type, (length, lower bound) per dimension, then
// each element as a 4-byte length (-1 for NULL) and its bytes, all in network order
std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}
std::string binary_array(const std::vector<std::optional<std::string>>& elems, uint32_t elemtype = 25,
                         uint32_t lbound = 1) {
  std::string o = be32(1) + be32(0) + be32(elemtype) + be32(static_cast<uint32_t>(elems.size())) + be32(lbound);
  for (auto& e : elems) o += e ? be32(static_cast<uint32_t>(e->size())) + *e : be32(0xFFFFFFFFu);
  return o;
}
}  // namespace

TEST(BinaryArray, TextElementsAreTheirRawBytes) {
  std::string nul("a\0b", 3);
  auto r = parse_binary_text_array(binary_array({"1", "q\"x", std::nullopt, "", "NULL", nul}));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 6u);
  EXPECT_EQ(*(*r)[0], "1");
  EXPECT_EQ(*(*r)[1], "q\"x");
  EXPECT_FALSE((*r)[2]);
  EXPECT_EQ(*(*r)[3], "");
  EXPECT_EQ(*(*r)[4], "NULL");
  EXPECT_EQ(*(*r)[5], nul);
  // an empty array has no dimensions
  EXPECT_TRUE(parse_binary_text_array(be32(0) + be32(0) + be32(25))->empty());
}

TEST(BinaryArray, MalformedIsRejected) {
  std::string good = binary_array({"abc", "de"});
  EXPECT_TRUE(parse_binary_text_array(good));
  // every truncation, and a byte too many
  for (size_t n = 0; n < good.size(); ++n) EXPECT_FALSE(parse_binary_text_array(good.substr(0, n))) << n;
  EXPECT_FALSE(parse_binary_text_array(good + "x"));
  // a length past the end, a lower bound other than 1, two dimensions
  std::string past = be32(1) + be32(0) + be32(25) + be32(1) + be32(1) + be32(1000) + "abc";
  EXPECT_FALSE(parse_binary_text_array(past));
  EXPECT_FALSE(parse_binary_text_array(binary_array({"a"}, 25, 0)));
  std::string two = be32(2) + be32(0) + be32(25) + be32(1) + be32(1) + be32(1) + be32(1) + be32(1) + "a";
  EXPECT_FALSE(parse_binary_text_array(two));
  // an element count far beyond the bytes
  EXPECT_FALSE(parse_binary_text_array(be32(1) + be32(0) + be32(25) + be32(0x7FFFFFFF) + be32(1)));
}

TEST(BinaryArray, Int4ElementsAndIntegers) {
  auto ops = parse_binary_int4_array(binary_array({be32(4 * 7 + 1), std::nullopt, be32(0xFFFFFFFFu)}, 23));
  ASSERT_TRUE(ops);
  EXPECT_EQ(*ops, (std::vector<int32_t>{29, -1}));
  EXPECT_FALSE(parse_binary_int4_array(binary_array({"abc"}, 23)));  // not 4 bytes
  EXPECT_EQ(binary_uint(be32(0x01020304)), 0x01020304u);
  EXPECT_EQ(binary_uint(be32(0) + be32(5)), 5u);
  EXPECT_EQ(binary_uint(std::string(1, 'B')), static_cast<uint64_t>('B'));
  EXPECT_FALSE(binary_uint("abc"));
  EXPECT_FALSE(binary_uint(""));
}

namespace {
std::string be16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }
std::string be64(uint64_t v) { return be32(static_cast<uint32_t>(v >> 32)) + be32(static_cast<uint32_t>(v)); }
std::string counted(const std::string& s) { return be32(static_cast<uint32_t>(s.size())) + s; }
// A row of shapesync.batches_packed() (extension/batch.c, PackChange).
std::string packed(uint16_t flags, uint64_t tick, uint64_t xid, char op, const std::string& rest,
                   uint64_t time_us = 0, uint64_t version = 0) {
  std::string o = be16(flags) + be64(tick);
  if (flags & 0x01) o += be64(time_us);
  o += be64(xid) + be32(16384) + std::string(1, op);
  if (flags & 0x20) o += be64(version);
  return o + rest;
}
}  // namespace

TEST(PackedBatch, ChangesGroupIntoTicksAndTransactions) {
  std::vector<Batch> out;
  uint32_t rank = 0;
  std::string ops = binary_array({be32(4 * 7 + 1), be32(4 * 9 + 2)}, 23);
  // tick 5: an insert (time, version, new values, shape ops), an update of the same transaction
  ASSERT_TRUE(append_packed_change(packed(0x01 | 0x20 | 0x02 | 0x08, 5, 700, 'I',
                                          counted(binary_array({"1", std::nullopt, "x"})) + counted(ops),
                                          1'700'000'000'000'000ull, 701),
                                   out, rank));
  ASSERT_TRUE(append_packed_change(
      packed(0x01 | 0x20 | 0x02 | 0x04, 5, 700, 'U',
             counted(binary_array({"1", "y", "x"})) + counted(binary_array({"1", std::nullopt, "x"})),
             1'700'000'000'000'000ull, 700),
      out, rank));
  // another transaction of tick 5: a delete; then tick 6: an X with an error, no time
  ASSERT_TRUE(append_packed_change(packed(0x01 | 0x04, 5, 702, 'D', counted(binary_array({"2", "z", "w"})),
                                          1'700'000'000'000'000ull),
                                   out, rank));
  ASSERT_TRUE(append_packed_change(packed(0x08 | 0x10, 6, 703, 'X', counted(ops) + counted("division by zero")), out,
                                   rank));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].tick_id, 5u);
  EXPECT_EQ(out[0].tick_time_us, 1'700'000'000'000'000);
  ASSERT_EQ(out[0].txs.size(), 2u);
  EXPECT_EQ(out[0].txs[0].xid, 700u);
  EXPECT_EQ(out[0].txs[0].position, make_position(5, 1));
  EXPECT_EQ(out[0].txs[1].position, make_position(5, 2));
  ASSERT_EQ(out[0].txs[0].changes.size(), 2u);
  const Change& ins = out[0].txs[0].changes[0];
  EXPECT_EQ(ins.op, 'I');
  EXPECT_EQ(ins.relid, 16384u);
  EXPECT_EQ(ins.version, 701u);
  ASSERT_TRUE(ins.new_values);
  EXPECT_EQ(*(*ins.new_values)[0], "1");
  EXPECT_FALSE((*ins.new_values)[1]);
  EXPECT_FALSE(ins.old_values);
  EXPECT_EQ(ins.shape_ops, (std::vector<int32_t>{29, 38}));
  EXPECT_FALSE(ins.undecodable);
  const Change& upd = out[0].txs[0].changes[1];
  EXPECT_EQ(*(*upd.new_values)[1], "y");
  EXPECT_FALSE((*upd.old_values)[1]);
  EXPECT_EQ(out[0].txs[1].changes[0].op, 'D');
  EXPECT_EQ(out[0].txs[1].changes[0].version, 0u);
  EXPECT_EQ(out[1].tick_id, 6u);
  EXPECT_EQ(out[1].tick_time_us, 0);
  EXPECT_EQ(out[1].txs[0].position, make_position(6, 1));
  EXPECT_EQ(out[1].txs[0].changes[0].error, "division by zero");
  EXPECT_EQ(out[1].txs[0].changes[0].shape_ops, (std::vector<int32_t>{29, 38}));
  // an insert whose image the database could not decode (its table altered) has no values
  ASSERT_TRUE(append_packed_change(packed(0x20, 6, 704, 'I', "", 0, 704), out, rank));
  EXPECT_TRUE(out[1].txs[1].changes[0].undecodable);
}

TEST(PackedBatch, ANewTransactionIsSizedOnce) {
  std::vector<Batch> out;
  uint32_t rank = 0;
  std::string row = packed(0x02, 5, 700, 'I', counted(binary_array({"1"})));
  ASSERT_TRUE(append_packed_change(row, out, rank, 3));
  const Change* first = out[0].txs[0].changes.data();
  EXPECT_EQ(out[0].txs[0].changes.capacity(), 3u);
  ASSERT_TRUE(append_packed_change(row, out, rank, 3));
  ASSERT_TRUE(append_packed_change(row, out, rank, 3));
  EXPECT_EQ(out[0].txs[0].changes.size(), 3u);
  EXPECT_EQ(out[0].txs[0].changes.data(), first);  // never moved
}

TEST(PackedBatch, MalformedIsRejectedAndChangesNothing) {
  std::string good = packed(0x01 | 0x20 | 0x02 | 0x08 | 0x10, 5, 700, 'I',
                            counted(binary_array({"1", "x"})) + counted(binary_array({be32(5)}, 23)) + counted("e"),
                            1, 701);
  std::vector<Batch> out;
  uint32_t rank = 0;
  ASSERT_TRUE(append_packed_change(good, out, rank));
  // every truncation, a byte too many, an unknown flag, a length past the end, a malformed array inside
  for (size_t n = 0; n < good.size(); ++n) EXPECT_FALSE(append_packed_change(good.substr(0, n), out, rank)) << n;
  EXPECT_FALSE(append_packed_change(good + "x", out, rank));
  std::string unknown = good;
  unknown[0] = 0x40;
  EXPECT_FALSE(append_packed_change(unknown, out, rank));
  EXPECT_FALSE(append_packed_change(packed(0x02, 5, 700, 'I', be32(1000) + "abc"), out, rank));
  EXPECT_FALSE(append_packed_change(packed(0x02, 5, 700, 'I', counted(binary_array({"a"}, 25, 0))), out, rank));
  EXPECT_FALSE(append_packed_change(packed(0x08, 5, 700, 'I', counted(binary_array({"abc"}, 23))), out, rank));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].txs.size(), 1u);
  EXPECT_EQ(out[0].txs[0].changes.size(), 1u);
}

TEST(Snapshot, ParsesAndTestsVisibility) {
  auto s = PgSnapshot::parse("100:110:103,105");
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->visible(99));
  EXPECT_TRUE(s->visible(104));
  EXPECT_FALSE(s->visible(103));
  EXPECT_FALSE(s->visible(110));
  EXPECT_FALSE(s->visible(200));
  EXPECT_EQ(s->xip_s, (std::vector<std::string>{"103", "105"}));
  EXPECT_TRUE(PgSnapshot::parse("5:5:")->visible(4));
  EXPECT_FALSE(PgSnapshot::parse("5:x:"));
}

// What the store holds carries no spare capacity: a change message lives on in
// every shape log it enters, a decoded row in the batch window.
TEST(Memory, HeldStringsAndRowsHaveNoSlack) {
  ChangeHeaders h;
  h.operation = "update";
  h.relation = R"(["public","a_table_with_a_long_name"])";
  h.txid = 123456789;
  h.lsn = 987654321;
  h.op_position = 12;
  h.version = 4242424242;
  for (size_t n : {0u, 10u, 150u, 400u, 5000u}) {
    std::string value = R"({"id":")" + std::string(n, 'x') + R"("})";
    std::string m = change_message(R"("public"."a_table_with_a_long_name"/"123")", value, nullptr, h);
    EXPECT_LE(m.capacity(), m.size() + 16) << n;  // libstdc++: exactly its size, or the small buffer
  }
  for (size_t n : {1u, 3u, 5u, 9u, 33u}) {
    std::vector<std::optional<std::string>> elems(n, std::string("v"));
    auto r = parse_binary_text_array(binary_array(elems));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->capacity(), n);
  }
}
