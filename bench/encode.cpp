// encode — CPU cost of turning snapshot rows (COPY text, as PostgreSQL sends
// them) into Shape protocol insert messages, in-process: the path before
// CopyRowEncoder (parse every field into a string, then row_key +
// append_value_object + snapshot_row_message + version_header) against
// CopyRowEncoder, on the rows of bench/fanout.cpp's initial-sync table
// (id bigint, owner_id int, title text, amount numeric, created_at
// timestamptz, done bool, plus the row version). Reports thread CPU time per
// row, so that other load on the machine changes the figures little.
//
//   encode [--rows 1000000] [--rounds 5]
#include <time.h>

#include <cstring>

#include "common.hpp"
#include "db/copy_text.hpp"
#include "protocol/encode.hpp"

using namespace shapesync;
using bench::fmt;

namespace {

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  long rows = 1000000;
  int rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--rows")) rows = std::atol(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
    else {
      std::cerr << "usage: encode [--rows N] [--rounds N]\n";
      return 2;
    }
  }
  TableInfo t;
  t.schema = "public";
  t.name = "fanout_sync";
  for (const char* n : {"id", "owner_id", "title", "amount", "created_at", "done"}) {
    ColumnInfo c;
    c.name = n;
    t.columns.push_back(c);
  }
  t.pk = {0};
  std::vector<size_t> sel{0, 1, 2, 3, 4, 5};
  // the COPY text of the rows fanout's sync scenario loads (and their versions)
  std::vector<std::string> lines;
  lines.reserve(static_cast<size_t>(rows));
  for (long g = 1; g <= rows; ++g) {
    char b[256];
    long s = g;
    std::snprintf(b, sizeof b, "%ld\t%ld\titem number %ld\t%ld.%02ld\t2024-01-%02ld %02ld:%02ld:%02ld+00\t%s\t%ld", g,
                  g % 1000, g, (g % 100000) / 100, (g % 100000) % 100, 1 + s / 86400 % 28, s / 3600 % 24, s / 60 % 60,
                  s % 60, g % 3 == 0 ? "t" : "f", 740 + g / 1000);
    lines.emplace_back(b);
  }
  const std::string prefix = key_prefix(t), relation = relation_json(t);
  auto run_old = [&](std::string& out) {
    std::vector<std::optional<std::string>> fields;
    RowValues row(t.columns.size());
    std::string value, version;
    for (const auto& l : lines) {
      if (!parse_copy_row(l, fields) || fields.size() != 7) std::abort();
      version = fields.back() ? *fields.back() : "";
      fields.pop_back();
      for (size_t k = 0; k < fields.size(); ++k) row[sel[k]] = std::move(fields[k]);
      value.clear();
      append_value_object(value, t, row, sel);
      out += ',';
      out += snapshot_row_message(row_key(prefix, t, row), value, relation, version_header(version));
    }
  };
  auto run_new = [&](std::string& out) {
    CopyRowEncoder enc(t, sel, 0, true);
    for (const auto& l : lines) {
      if (!enc.split(l)) std::abort();
      out += ',';
      if (!enc.append_message(out)) std::abort();
    }
  };
  std::cout << "| path | rows | CPU ns/row (best of " << rounds << ") | JSON MB/s of CPU | bytes |\n|---|---|---|---|---|\n";
  std::string reference;
  for (int which = 0; which < 2; ++which) {
    double best = 1e9;
    size_t bytes = 0;
    for (int r = 0; r < rounds; ++r) {
      std::string out;
      out.reserve(300 * static_cast<size_t>(rows));
      double c0 = thread_cpu_s();
      if (which == 0) run_old(out);
      else run_new(out);
      best = std::min(best, thread_cpu_s() - c0);
      bytes = out.size();
      if (which == 0 && r == 0) reference = out;
      if (which == 1 && out != reference) {
        std::cerr << "the two paths disagree\n";
        return 1;
      }
    }
    std::cout << "| " << (which == 0 ? "parse into strings, then encode (before)" : "CopyRowEncoder (COPY text → JSON)")
              << " | " << rows << " | " << fmt("%.0f", best * 1e9 / static_cast<double>(rows)) << " | "
              << fmt("%.0f", static_cast<double>(bytes) / best / 1e6) << " | " << bytes << " |\n";
  }
  return 0;
}
