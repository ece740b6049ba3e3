#pragma once
// Progress of long operations, reported to a callback so that front ends decide how to show it
// (a live line on a terminal, nothing or JSON when piped).
#include <functional>
#include <map>
#include <string>

namespace singleinsert {

struct ProgressReport {
  std::string stage;    // "denoise", "decode", "stage1", ...
  int64_t step = 0;     // steps done, 1-based once one has finished
  int64_t total = 0;
  double elapsed_seconds = 0;
  std::map<std::string, double> values;  // e.g. losses
};

using ProgressCallback = std::function<void(const ProgressReport&)>;

}  // namespace singleinsert
