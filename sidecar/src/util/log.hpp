// Minimal structured logging to stderr: one line per event, with a timestamp.
#pragma once
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <sstream>
#include <string>

namespace shapesync {

inline std::mutex& log_mutex() {
  static std::mutex m;
  return m;
}

template <typename... A>
void log_line(const char* level, const A&... a) {
  std::ostringstream o;
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  char buf[32];
  std::tm tm;
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  o << buf << '.' << (ms < 100 ? (ms < 10 ? "00" : "0") : "") << ms << "Z " << level << ' ';
  (o << ... << a);
  o << '\n';
  std::lock_guard lk(log_mutex());
  std::fputs(o.str().c_str(), stderr);
}

template <typename... A>
void log_info(const A&... a) { log_line("info", a...); }
template <typename... A>
void log_warn(const A&... a) { log_line("warn", a...); }
template <typename... A>
void log_error(const A&... a) { log_line("error", a...); }

}  // namespace shapesync
