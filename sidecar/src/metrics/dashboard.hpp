// The dashboard page served at GET /dashboard (docs/monitoring.md,
// "Dashboard"): sidecar/src/metrics/dashboard.html, embedded at build time
// by CMake (configure_file of dashboard_html.cpp.in into the build tree).
#pragma once

#include <string_view>

namespace shapesync::metrics {

// The page, byte for byte (text/html; charset=utf-8).
std::string_view dashboard_html();

}  // namespace shapesync::metrics
