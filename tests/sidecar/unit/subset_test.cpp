// Subset snapshot requests (PROTOCOL.md §2.2 subset__*, POST body, §4.8), without network or database.
#include <gtest/gtest.h>

#include "http/subset.hpp"
#include "db/subset.hpp"

using namespace shapesync;
using nlohmann::json;

namespace {

std::vector<OrderItem> order_ok(std::string_view s) {
  auto r = parse_order_by(s);
  if (auto* e = std::get_if<std::string>(&r)) ADD_FAILURE() << s << ": " << *e;
  return std::holds_alternative<std::vector<OrderItem>>(r) ? std::get<std::vector<OrderItem>>(r)
                                                            : std::vector<OrderItem>{};
}

std::string order_err(std::string_view s) {
  auto r = parse_order_by(s);
  EXPECT_TRUE(std::holds_alternative<std::string>(r)) << s;
  return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : "";
}

json subset_errors(std::string_view query) {
  auto r = parse_subset_params(parse_query(query));
  EXPECT_TRUE(std::holds_alternative<ValidationErrors>(r)) << query;
  if (!std::holds_alternative<ValidationErrors>(r)) return {};
  return std::get<ValidationErrors>(r).errors;
}

SubsetParams subset_ok(std::string_view query) {
  auto r = parse_subset_params(parse_query(query));
  if (auto* e = std::get_if<ValidationErrors>(&r)) ADD_FAILURE() << query << ": " << e->body();
  return std::holds_alternative<SubsetParams>(r) ? std::get<SubsetParams>(r) : SubsetParams{};
}

TableInfo items_table() {
  TableInfo t;
  t.schema = "public";
  t.name = "items";
  t.columns = {{"id", 1, "int8", 0, 0, true, -1, "int8"},
               {"title", 2, "text", 0, -1, false, -1, "text"},
               {"Mixed Case", 3, "int4", 0, -1, false, -1, "int4"}};
  t.pk = {0};
  t.natts = 3;
  return t;
}

}  // namespace

TEST(SubsetDetect, AnySubsetPrefixedKey) {
  EXPECT_FALSE(is_subset_request(parse_query("table=t&offset=-1&where=x")));
  EXPECT_TRUE(is_subset_request(parse_query("table=t&offset=-1&subset__where=x")));
  EXPECT_TRUE(is_subset_request(parse_query("table=t&offset=-1&subset__limit=1")));
  EXPECT_TRUE(is_subset_request(parse_query("table=t&offset=-1&subset__where_expr=%7B%7D")));
  EXPECT_FALSE(is_subset_request(parse_query("table=t&offset=-1&subset__=1")));
}

TEST(OrderBy, ColumnsDirectionsNulls) {
  auto v = order_ok(R"(title, "Mixed Case" DESC NULLS FIRST,ID asc nulls last)");
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[0], (OrderItem{"title", false, std::nullopt}));
  EXPECT_EQ(v[1], (OrderItem{"Mixed Case", true, true}));
  EXPECT_EQ(v[2], (OrderItem{"id", false, false}));
  // what the official client's compileOrderBy produces
  auto c = order_ok(R"("title" DESC NULLS LAST, "id")");
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0], (OrderItem{"title", true, false}));
  EXPECT_EQ(c[1].column, "id");
  auto q = order_ok(R"("a""b")");
  EXPECT_EQ(q[0].column, "a\"b");
  EXPECT_EQ(order_ok("  id  ")[0].column, "id");
}

TEST(OrderBy, RejectsEverythingButColumnReferences) {
  EXPECT_EQ(order_err("lower(title)"), "Function calls are not allowed in ORDER BY (at position 1)");
  EXPECT_EQ(order_err("id, lower (title)"), "Function calls are not allowed in ORDER BY (at position 5)");
  EXPECT_EQ(order_err("title::int"), "Type casts are not allowed in ORDER BY (at position 6)");
  EXPECT_EQ(order_err("(SELECT 1)"), "Subqueries are not allowed in ORDER BY (at position 1)");
  EXPECT_EQ(order_err("exists (select 1)"), "Subqueries are not allowed in ORDER BY (at position 1)");
  EXPECT_EQ(order_err("CASE WHEN id > 1 THEN 1 END"), "CASE expressions are not allowed in ORDER BY (at position 1)");
  EXPECT_EQ(order_err("(id)"), "Parenthesized expressions are not allowed in ORDER BY (at position 1)");
  EXPECT_EQ(order_err("1"), "Positional references and constants are not allowed in ORDER BY (at position 1)");
  EXPECT_EQ(order_err("'x'"), "Constants and parameters are not allowed in ORDER BY (at position 1)");
  EXPECT_EQ(order_err("$1"), "Constants and parameters are not allowed in ORDER BY (at position 1)");
  EXPECT_EQ(order_err("id + 1"), "Operators are not allowed in ORDER BY (at position 4)");
  EXPECT_EQ(order_err("items.id"),
            "Qualified column references are not allowed in ORDER BY; use the column name (at position 6)");
  EXPECT_EQ(order_err("id; DROP TABLE items"), "Statement separators are not allowed in ORDER BY (at position 3)");
  EXPECT_EQ(order_err("id DESC DESC"),
            "Only column references, ASC, DESC and NULLS FIRST/LAST are allowed in ORDER BY; unexpected \"DESC\" "
            "(at position 9)");
  EXPECT_EQ(order_err("id NULLS"), "NULLS must be followed by FIRST or LAST in ORDER BY (at position 9)");
  EXPECT_EQ(order_err("id NULLS MIDDLE"), "NULLS must be followed by FIRST or LAST in ORDER BY (at position 10)");
  EXPECT_EQ(order_err("title COLLATE \"C\""), "COLLATE is not allowed in ORDER BY (at position 7)");
  EXPECT_EQ(order_err("id USING <"), "USING is not allowed in ORDER BY (at position 4)");
  EXPECT_EQ(order_err("id,"), "ORDER BY ends with a comma");
  EXPECT_EQ(order_err(""), "ORDER BY is empty");
  EXPECT_EQ(order_err("\"unterminated"), "Unterminated quoted identifier in ORDER BY (at position 1)");
  EXPECT_EQ(order_err("\"\""), "Invalid zero-length delimited identifier in ORDER BY (at position 1)");
  EXPECT_EQ(order_err("desc"), "Only column references are allowed in ORDER BY (got the keyword desc) (at position 1)");
  EXPECT_EQ(order_err("id title"),
            "Only column references, ASC, DESC and NULLS FIRST/LAST are allowed in ORDER BY; unexpected \"title\" "
            "(at position 4)");
}

TEST(OrderBy, ColumnsCheckedAgainstTheTable) {
  TableInfo t = items_table();
  EXPECT_EQ(check_order_by_columns(order_ok(R"(id, "Mixed Case")"), t), "");
  EXPECT_EQ(check_order_by_columns(order_ok("nope, Title"), t), "Unknown column in ORDER BY: nope");
  EXPECT_EQ(check_order_by_columns(order_ok(R"("ID")"), t), "Unknown column in ORDER BY: ID");
}

TEST(SubsetParams, WhereParamsOrderLimitOffset) {
  auto p = subset_ok(
      "subset__where=id+%3E+%241&subset__params=%7B%221%22%3A%2210%22%2C%222%22%3A3%7D&subset__order_by=id+DESC"
      "&subset__limit=5&subset__offset=0&subset__where_expr=%7B%7D");
  EXPECT_EQ(p.where, "id > $1");
  EXPECT_EQ(p.params, (std::vector<std::string>{"10", "3"}));
  ASSERT_EQ(p.order_by.size(), 1u);
  EXPECT_TRUE(p.order_by[0].desc);
  EXPECT_EQ(p.limit, 5);
  EXPECT_EQ(p.offset, 0);
  auto empty = subset_ok("subset__where=");
  EXPECT_FALSE(empty.where);
  EXPECT_TRUE(empty.order_by.empty());
}

TEST(SubsetParams, LimitOffsetNeedOrderBy) {
  json need = json::parse(R"({"subset":{"order_by":["order_by is required when limit or offset is present"]}})");
  EXPECT_EQ(subset_errors("subset__limit=10"), need);
  EXPECT_EQ(subset_errors("subset__offset=10"), need);
  EXPECT_EQ(subset_errors("subset__limit=10&subset__order_by=+"), need);
}

TEST(SubsetParams, LimitOffsetValues) {
  EXPECT_EQ(subset_errors("subset__limit=0&subset__order_by=id"),
            json::parse(R"({"subset":{"limit":["must be greater than 0"]}})"));
  EXPECT_EQ(subset_errors("subset__limit=abc&subset__order_by=id"),
            json::parse(R"({"subset":{"limit":["is invalid"]}})"));
  EXPECT_EQ(subset_errors("subset__limit=1.5&subset__order_by=id"),
            json::parse(R"({"subset":{"limit":["is invalid"]}})"));
  EXPECT_EQ(subset_errors("subset__offset=-1&subset__order_by=id"),
            json::parse(R"({"subset":{"offset":["must be greater than or equal to 0"]}})"));
}

TEST(SubsetParams, ParamsMustBeAJsonObjectOfNumberedValues) {
  EXPECT_EQ(subset_errors("subset__params=%7Bnope"),
            json::parse(R"({"subset":{"params":["params must be valid JSON"]}})"));
  EXPECT_EQ(subset_errors("subset__params=%5B%22a%22%5D"),
            json::parse(R"({"subset":{"params":["params must be a JSON object"]}})"));
  EXPECT_EQ(subset_errors("subset__params=%7B%22a%22%3A%221%22%7D"),
            json::parse(R"({"subset":{"params":["Parameters can only use numbers as keys"]}})"));
  EXPECT_EQ(subset_errors("subset__params=%7B%222%22%3A%221%22%7D"),
            json::parse(R"({"subset":{"params":["Parameters must be numbered sequentially, starting from 1"]}})"));
  EXPECT_EQ(subset_errors("subset__params=%7B%221%22%3Anull%7D"),
            json::parse(R"({"subset":{"params":["Parameter values must be strings, numbers or booleans"]}})"));
}

TEST(SubsetParams, ErrorsAccumulate) {
  json e = subset_errors("subset__order_by=f(x)&subset__limit=0&subset__params=1");
  EXPECT_EQ(e["subset"]["order_by"].size(), 1u);
  EXPECT_EQ(e["subset"]["limit"].size(), 1u);
  EXPECT_EQ(e["subset"]["params"].size(), 1u);
}

TEST(PostBody, SubsetKeysTopLevelAndNested) {
  QueryMap q = parse_query("table=items&offset=-1&subset__where=old&subset__limit=1");
  auto r = merge_post_body(q, R"({"where":"id > $1","params":{"1":5},"order_by":"id","limit":2,"offset":1,
                                   "where_expr":{"type":"ref"},"columns":"id,title","replica":"full"})");
  ASSERT_TRUE(std::holds_alternative<QueryMap>(r));
  QueryMap m = std::get<QueryMap>(r);
  EXPECT_EQ(m.count("subset__where"), 1u);
  EXPECT_EQ(m.find("subset__where")->second, "id > $1");
  EXPECT_EQ(json::parse(m.find("subset__params")->second), json::parse(R"({"1":5})"));
  EXPECT_EQ(m.find("subset__limit")->second, "2");
  EXPECT_EQ(m.find("subset__offset")->second, "1");
  EXPECT_EQ(m.find("subset__order_by")->second, "id");
  EXPECT_EQ(m.find("columns")->second, "id,title");
  EXPECT_EQ(m.find("replica")->second, "full");
  EXPECT_EQ(m.find("table")->second, "items");
  auto p = subset_ok(encode_query(m));
  EXPECT_EQ(p.params, std::vector<std::string>{"5"});
  EXPECT_EQ(p.limit, 2);

  auto n = merge_post_body(q, R"({"subset":{"where":"x = 1","limit":3,"order_by":"id","unknown":1},"where":"y"})");
  ASSERT_TRUE(std::holds_alternative<QueryMap>(n));
  QueryMap nm = std::get<QueryMap>(n);
  EXPECT_EQ(nm.find("subset__where")->second, "x = 1");  // nested wins
  EXPECT_EQ(nm.find("subset__limit")->second, "3");
  EXPECT_EQ(nm.count("unknown"), 0u);
  EXPECT_EQ(nm.count("subset__unknown"), 0u);
}

TEST(PostBody, EmptyBodyIsAnEmptyObject) {
  auto r = merge_post_body(parse_query("table=items&offset=-1"), "  ");
  ASSERT_TRUE(std::holds_alternative<QueryMap>(r));
  EXPECT_EQ(std::get<QueryMap>(r).size(), 2u);
}

TEST(PostBody, NotJsonOrNotAnObject) {
  auto bad = merge_post_body({}, "{nope");
  ASSERT_TRUE(std::holds_alternative<BodyError>(bad));
  EXPECT_EQ(std::get<BodyError>(bad).status, 400);
  json b = json::parse(std::get<BodyError>(bad).body);
  EXPECT_EQ(b["error"], "Invalid JSON in request body");
  EXPECT_TRUE(b["details"].is_string());
  for (auto body : {"[1,2]", "\"where\"", "12", "null"}) {
    auto r = merge_post_body({}, body);
    ASSERT_TRUE(std::holds_alternative<BodyError>(r)) << body;
    EXPECT_EQ(std::get<BodyError>(r).body, R"({"error":"Request body must be a JSON object"})");
  }
  auto s = merge_post_body({}, R"({"subset":"x"})");
  ASSERT_TRUE(std::holds_alternative<BodyError>(s));
  EXPECT_EQ(json::parse(std::get<BodyError>(s).body),
            json::parse(R"({"message":"Invalid request","errors":{"subset":["must be a JSON object"]}})"));
}

TEST(PostBody, EncodeQueryRoundTrips) {
  QueryMap q{{"subset__where", "a = 'x&y=z' AND b <> \"%\""}, {"table", "public.Items"}, {"sp ace", "+"}};
  EXPECT_EQ(parse_query(encode_query(q)), q);
}

TEST(SubsetSql, ShapeWhereAndSubsetWhereAndQuotedOrderBy) {
  TableInfo t = items_table();
  SubsetParams p;
  p.order_by = order_ok(R"("Mixed Case" DESC NULLS LAST, id)");
  p.limit = 10;
  p.offset = 20;
  EXPECT_EQ(subset_query_sql(t, {0, 2}, "(id > 1)", "(title = 'a'::text)", p),
            R"(SELECT "id", "Mixed Case" FROM ONLY "public"."items" WHERE ((id > 1)) AND ((title = 'a'::text)))"
            R"( ORDER BY "Mixed Case" DESC NULLS LAST, "id" LIMIT 10 OFFSET 20)");
  SubsetParams none;
  EXPECT_EQ(subset_query_sql(t, {0}, "", "", none), R"(SELECT "id" FROM ONLY "public"."items")");
  EXPECT_EQ(subset_query_sql(t, {0}, "", "x", none), R"(SELECT "id" FROM ONLY "public"."items" WHERE x)");
  EXPECT_EQ(subset_query_sql(t, {0}, "y", "", none), R"(SELECT "id" FROM ONLY "public"."items" WHERE y)");
}

TEST(SubsetEncoding, BodyAndRows) {
  std::string row = subset_row_message("\"public\".\"items\"/\"1\"", R"({"id":"1"})", R"(["public","items"])", 42);
  EXPECT_EQ(json::parse(row), json::parse(R"({"key":"\"public\".\"items\"/\"1\"","value":{"id":"1"},
      "headers":{"operation":"insert","relation":["public","items"],"snapshot_mark":42}})"));
  std::string body = subset_body("10", "15", {"11", "13"}, 99, 42, {row});
  EXPECT_EQ(json::parse(body)["metadata"],
            json::parse(R"({"xmin":"10","xmax":"15","xip_list":["11","13"],"database_lsn":"99","snapshot_mark":42})"));
  EXPECT_EQ(json::parse(body)["data"].size(), 1u);
  EXPECT_EQ(json::parse(subset_body("1", "1", {}, 0, 0, {})),
            json::parse(R"({"metadata":{"xmin":"1","xmax":"1","xip_list":[],"database_lsn":"0","snapshot_mark":0},"data":[]})"));
}
