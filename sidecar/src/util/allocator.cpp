#include "util/allocator.hpp"

#include <malloc.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>

// jemalloc's control interface, when shapesyncd is linked with it
// (-DSHAPESYNC_JEMALLOC=ON): a weak reference, null under glibc's malloc.
extern "C" int mallctl(const char* name, void* oldp, size_t* oldlenp, void* newp, size_t newlen)
    __attribute__((weak));

namespace shapesync {

AllocatorStats allocator_stats() {
  AllocatorStats st;
  if (mallctl) {
    uint64_t epoch = 1;
    size_t len = sizeof(epoch);
    mallctl("epoch", &epoch, &len, &epoch, len);  // refreshes the statistics
    size_t v = 0;
    len = sizeof(v);
    if (mallctl("stats.allocated", &v, &len, nullptr, 0) == 0) {
      st.jemalloc = true;
      st.allocated = v;
      len = sizeof(v);
      if (mallctl("stats.resident", &v, &len, nullptr, 0) == 0) st.resident = v;
    }
  }
  if (!st.jemalloc) {
    struct mallinfo2 mi = mallinfo2();
    st.allocated = mi.uordblks + mi.hblkhd;
  }
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    unsigned long size = 0, resident = 0;
    if (std::fscanf(f, "%lu %lu", &size, &resident) == 2)
      st.process_rss = resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
    std::fclose(f);
  }
  return st;
}

}  // namespace shapesync
