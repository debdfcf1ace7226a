// Helpers shared by the benchmark programs (bench/*.cpp, one program per
// file): timing, number formatting, URL encoding, libpq calls that exit on
// error, /proc samples and percentiles.
#pragma once
#include <algorithm>
#include <chrono>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <libpq-fe.h>

namespace bench {

using Clock = std::chrono::steady_clock;

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
inline double secs_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
inline void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

inline std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

inline std::string url_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string o;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      o += static_cast<char>(c);
    } else {
      o += '%';
      o += hex[c >> 4];
      o += hex[c & 15];
    }
  }
  return o;
}

// ---------------------------------------------------------------- libpq (exit on error)

inline PGconn* connect_db(const std::string& url) {
  PGconn* c = PQconnectdb(url.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::cerr << "connect: " << PQerrorMessage(c);
    std::exit(1);
  }
  return c;
}

inline std::vector<std::vector<std::string>> query(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  auto st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::cerr << sql.substr(0, 300) << ": " << PQerrorMessage(c);
    std::exit(1);
  }
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < PQntuples(r); ++i) {
    rows.emplace_back();
    for (int j = 0; j < PQnfields(r); ++j) rows.back().push_back(PQgetvalue(r, i, j));
  }
  PQclear(r);
  return rows;
}

inline void exec(PGconn* c, const std::string& sql) { query(c, sql); }

inline std::string scalar(PGconn* c, const std::string& sql) {
  auto r = query(c, sql);
  return r.empty() || r[0].empty() ? "" : r[0][0];
}

// ---------------------------------------------------------------- /proc

struct ProcSample {
  long long ticks = 0;   // utime + stime
  long long rss_kb = 0;  // VmRSS
  long long hwm_kb = 0;  // VmHWM
};

inline ProcSample proc_sample(int pid) {
  ProcSample s;
  if (pid <= 0) return s;
  std::ifstream st("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(st)), std::istreambuf_iterator<char>());
  auto rp = all.rfind(')');
  if (rp != std::string::npos) {
    std::istringstream in(all.substr(rp + 2));
    std::string f;
    std::vector<std::string> fs;
    while (in >> f) fs.push_back(f);
    // fields after ")" start at field 3 (state); utime = 14, stime = 15
    if (fs.size() > 12) s.ticks = std::stoll(fs[11]) + std::stoll(fs[12]);
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kb = std::stoll(line.substr(6));
    if (line.rfind("VmHWM:", 0) == 0) s.hwm_kb = std::stoll(line.substr(6));
  }
  return s;
}

// Machine-wide busy and total jiffies (/proc/stat "cpu" line).
inline std::pair<long long, long long> machine_jiffies() {
  std::ifstream st("/proc/stat");
  std::string cpu;
  st >> cpu;
  long long v, total = 0, idle = 0;
  for (int i = 0; i < 10 && (st >> v); ++i) {
    total += v;
    if (i == 3 || i == 4) idle += v;  // idle, iowait
  }
  return {total - idle, total};
}

// ---------------------------------------------------------------- percentiles

struct Stats {
  size_t n = 0;
  double min = 0, median = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
};

// Nearest-rank percentiles of the samples.
template <class T>
Stats stats(std::vector<T> v) {
  Stats s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (T x : v) sum += x;
  auto pct = [&](double p) { return static_cast<double>(v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))]); };
  s.min = static_cast<double>(v.front());
  s.median = pct(0.5);
  s.p90 = pct(0.9);
  s.p99 = pct(0.99);
  s.max = static_cast<double>(v.back());
  s.mean = sum / v.size();
  return s;
}

}  // namespace bench
