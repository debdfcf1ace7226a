// The embedded dashboard page (sidecar/src/metrics/dashboard.html).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "metrics/dashboard.hpp"

using shapesync::metrics::dashboard_html;

TEST(Dashboard, EmbedsThePageByteForByte) {
  std::ifstream f(SHAPESYNC_SOURCE_DIR "/sidecar/src/metrics/dashboard.html", std::ios::binary);
  ASSERT_TRUE(f) << "cannot read dashboard.html";
  std::stringstream s;
  s << f.rdbuf();
  EXPECT_EQ(std::string(dashboard_html()), s.str());
}

TEST(Dashboard, LoadsNothingFromOutside) {
  std::string html(dashboard_html());
  ASSERT_TRUE(html.starts_with("<!doctype html>"));
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script src"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
}

TEST(Dashboard, PollsMetricsAndDataWithTheBearerToken) {
  std::string html(dashboard_html());
  EXPECT_NE(html.find("get(\"metrics\""), std::string::npos);
  EXPECT_NE(html.find("get(\"dashboard/data\""), std::string::npos);
  EXPECT_NE(html.find("Authorization: \"Bearer \" + token"), std::string::npos);
  EXPECT_NE(html.find("get(\"token\")"), std::string::npos);
}
