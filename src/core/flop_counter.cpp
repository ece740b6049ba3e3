#include "singleinsert/core/flop_counter.h"

#include <atomic>

namespace singleinsert::flops {
namespace {
std::atomic<bool> enabled{false};
std::atomic<int64_t> total{0};
}  // namespace

void start() {
  total = 0;
  enabled = true;
}

int64_t stop() {
  enabled = false;
  return total.load();
}

bool counting() { return enabled.load(std::memory_order_relaxed); }

void add(int64_t count) { total.fetch_add(count, std::memory_order_relaxed); }

}  // namespace singleinsert::flops
