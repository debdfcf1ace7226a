// What the process's allocator holds, beside the shape store's own count: the
// gap between the two is allocator slack, fragmentation and buffers the store
// does not count (libpq results, HTTP), which is what to look at when RSS is
// well above shapesync_memory_held_bytes.
#pragma once
#include <cstddef>

namespace shapesync {

struct AllocatorStats {
  bool jemalloc = false;   // figures from jemalloc's mallctl (else glibc's mallinfo2)
  size_t allocated = 0;    // bytes the program has allocated and not freed
  size_t resident = 0;     // bytes of the allocator's pages in RAM (jemalloc only; 0 otherwise)
  size_t process_rss = 0;  // the process's resident set (/proc/self/statm), 0 when unknown
};

AllocatorStats allocator_stats();

}  // namespace shapesync
