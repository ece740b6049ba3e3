#pragma once
// Counts the floating-point operations of matrix products and convolutions as layers run, from
// their shapes (2 per multiply-add), so benchmarks can report achieved FLOP/s. Off by default;
// when off it costs one relaxed atomic load per layer call.
#include <cstdint>

namespace singleinsert::flops {

void start();        // resets and enables counting
int64_t stop();      // disables counting and returns the total
bool counting();
void add(int64_t count);

}  // namespace singleinsert::flops
