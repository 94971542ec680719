// Static ranges with stealing: how the OpenMP threads of a kernel share n independent work items.
//
// Items are split into one contiguous range per thread, as schedule(static) splits them, so that a
// thread normally runs consecutive items (and can prefetch the next one's inputs). A thread that
// has finished its own range then claims items from the front of the other threads' ranges, so a
// core slowed by other work (another process, a busy hyperthread sibling, another VM) no longer
// holds the whole call up. Oracle, B=1024, 2 threads on the 2-core VM beside a process that spins
// on one core 0.1 ms out of every 0.2 ms: 2.85-3.06 ms per call against 3.91-6.19 ms under
// schedule(static) (1.8-2.4 ms with the core idle). It cannot help a thread descheduled for a whole
// time slice: the item it holds, and the barrier that closes the parallel region, wait for it.
//
// Every item is claimed exactly once (fetch_add on the range's counter, shared by its owner and the
// thieves), and what an item computes must not depend on the thread that runs it: results stay
// bit-for-bit reproducible whatever the timing (tests/test_work_sharing.py).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace metakern {

class WorkClaims {
 public:
  WorkClaims(int64_t n, int threads) : threads_(threads < 1 ? 1 : threads), ranges_(new Range[threads_]) {
    for (int t = 0; t < threads_; ++t) {
      ranges_[t].next.store(n * t / threads_, std::memory_order_relaxed);
      ranges_[t].end = n * (t + 1) / threads_;
    }
  }

  // The next item for thread t (its own range first, then the others' in turn), or -1 when none is left.
  int64_t claim(int t) {
    for (int k = 0; k < threads_; ++k) {
      Range& r = ranges_[(t + k) % threads_];
      if (r.next.load(std::memory_order_relaxed) >= r.end) continue;
      const int64_t i = r.next.fetch_add(1, std::memory_order_relaxed);
      if (i < r.end) return i;
    }
    return -1;
  }

 private:
  struct alignas(64) Range {  // one cache line each: the owners' claims do not contend
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  int threads_;
  std::unique_ptr<Range[]> ranges_;
};

}  // namespace metakern
