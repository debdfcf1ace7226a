// Request parsing and validation (PROTOCOL.md §2), without network or database.
#include <gtest/gtest.h>

#include "http/params.hpp"

using namespace shapesync;

namespace {
std::variant<ShapeParams, ValidationErrors> parse(std::string_view q) { return parse_shape_params(parse_query(q)); }
nlohmann::json errors(std::string_view q) {
  auto r = parse(q);
  EXPECT_TRUE(std::holds_alternative<ValidationErrors>(r)) << q;
  if (!std::holds_alternative<ValidationErrors>(r)) return {};
  return std::get<ValidationErrors>(r).errors;
}
ShapeParams ok(std::string_view q) {
  auto r = parse(q);
  if (auto* e = std::get_if<ValidationErrors>(&r)) ADD_FAILURE() << q << ": " << e->body();
  return std::holds_alternative<ShapeParams>(r) ? std::get<ShapeParams>(r) : ShapeParams{};
}
}  // namespace

TEST(Query, DecodesPercentAndPlus) {
  auto q = parse_query("table=a%2Eb&where=x+%3D+1&flag&params%5B1%5D=v");
  EXPECT_EQ(q.find("table")->second, "a.b");
  EXPECT_EQ(q.find("where")->second, "x = 1");
  EXPECT_EQ(q.find("flag")->second, "");
  EXPECT_EQ(q.find("params[1]")->second, "v");
}

TEST(Query, KeepsMalformedPercentLiterally) {
  EXPECT_EQ(url_decode("100%"), "100%");
  EXPECT_EQ(url_decode("%zz"), "%zz");
  EXPECT_EQ(url_decode("%4"), "%4");
}

TEST(Params, OffsetRequiredAndWellFormed) {
  EXPECT_EQ(errors("table=t"), nlohmann::json::parse(R"({"offset":["can't be blank"]})"));
  for (auto bad : {"10", "1_2_3", "0_-1", "1_2%20", "abc", "_1", "1_", "-2"})
    EXPECT_EQ(errors(std::string("table=t&handle=h&offset=") + bad),
              nlohmann::json::parse(R"({"offset":["has invalid format"]})"))
        << bad;
}

TEST(Params, HandleRequiredUnlessSpecialOffset) {
  EXPECT_EQ(errors("table=t&offset=0_0"), nlohmann::json::parse(R"({"handle":["can't be blank when offset != -1"]})"));
  auto p = ok("table=t&offset=-1&handle=ignored");
  EXPECT_FALSE(p.handle.has_value());
  p = ok("table=t&offset=now&handle=ignored");
  EXPECT_FALSE(p.handle.has_value());
  p = ok("table=t&offset=12_4&handle=h1");
  EXPECT_EQ(*p.handle, "h1");
  EXPECT_EQ(p.offset.at, (LogOffset{12, 4}));
}

TEST(Params, LiveRules) {
  EXPECT_EQ(errors("table=t&offset=-1&live=true"), nlohmann::json::parse(R"({"live":["can't be true when offset == -1"]})"));
  EXPECT_EQ(errors("table=t&offset=now&live"), nlohmann::json::parse(R"({"live":["can't be true when offset is 'now'"]})"));
  EXPECT_EQ(errors("table=t&offset=0_0&handle=h&live_sse=true"),
            nlohmann::json::parse(R"({"live_sse":["can't be true unless live is also true"]})"));
  EXPECT_TRUE(ok("table=t&offset=0_0&handle=h&live=").live);
  EXPECT_TRUE(ok("table=t&offset=0_0&handle=h&live=yes").live);
  EXPECT_FALSE(ok("table=t&offset=0_0&handle=h&live=false").live);
  EXPECT_TRUE(ok("table=t&offset=0_0&handle=h&live=true&experimental_live_sse=true").live_sse);
}

TEST(Params, TableIdentifiers) {
  EXPECT_EQ(errors("offset=-1"), nlohmann::json::parse(R"({"table":["can't be blank"]})"));
  EXPECT_EQ(ok("offset=-1&table=Items").table, (QualifiedName{"public", "items"}));
  EXPECT_EQ(ok("offset=-1&table=%22Items%22").table, (QualifiedName{"public", "Items"}));
  EXPECT_EQ(ok("offset=-1&table=s.%22a%22%22b%22").table, (QualifiedName{"s", "a\"b"}));
  EXPECT_EQ(errors("offset=-1&table=a.b.c")["table"][0], "Invalid relation identifier, too many delimiters: a.b.c");
  EXPECT_EQ(errors("offset=-1&table=%22%22")["table"][0], "Invalid zero-length delimited identifier");
  EXPECT_EQ(errors("offset=-1&table=a-b")["table"][0], "Invalid unquoted identifier contains special characters: a-b");
  EXPECT_EQ(errors("offset=-1&table=" + std::string(64, 'x'))["table"][0], "Identifier is too long (max length is 63)");
}

TEST(Params, ColumnsReplicaLogParams) {
  auto p = ok("offset=-1&table=t&columns=%22id%22,%22Title%22,b&replica=full&log=changes_only&params[1]=a&params[2]=b");
  EXPECT_EQ(*p.columns, (std::vector<std::string>{"id", "Title", "b"}));
  EXPECT_EQ(p.replica, Replica::kFull);
  EXPECT_EQ(p.log, LogMode::kChangesOnly);
  EXPECT_EQ(p.params.size(), 2u);
  auto e = errors("offset=-1&table=t&replica=half&log=some&params[2]=x");
  EXPECT_EQ(e["replica"][0], "is invalid");
  EXPECT_EQ(e["log"][0], "is invalid");
  EXPECT_EQ(e["params"][0], "Parameters must be numbered sequentially, starting from 1");
  EXPECT_EQ(errors("offset=-1&table=t&params[a]=x")["params"][0], "Parameters can only use numbers as keys");
  EXPECT_EQ(errors("offset=-1&table=t&columns=id,%22%22")["columns"][0], "Invalid zero-length delimited identifier");
}

TEST(Params, UnknownParamsIgnoredAndCursorParsed) {
  auto p = ok("offset=0_inf&handle=h&table=t&cache-buster=x&expired_handle=y&customParam=z&cursor=123&live=true");
  EXPECT_EQ(p.cursor, 123);
  EXPECT_EQ(ok("offset=0_inf&handle=h&table=t&cursor=abc&live=true").cursor, 0);
}

TEST(Params, ErrorBodyShape) {
  ValidationErrors e;
  e.add("table", "can't be blank");
  EXPECT_EQ(e.body(), R"({"errors":{"table":["can't be blank"]},"message":"Invalid request"})");
}
