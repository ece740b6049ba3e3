#include "singleinsert/sampling/numpy_compat.h"

#include <cmath>

namespace singleinsert::detail {

std::vector<double> np_linspace(double start, double stop, int num) {
  std::vector<double> out;
  if (num <= 0) return out;
  if (num == 1) return {start};
  const double step = (stop - start) / static_cast<double>(num - 1);
  for (int i = 0; i < num; ++i) out.push_back(static_cast<double>(i) * step + start);
  out.back() = stop;
  return out;
}

std::vector<double> np_arange(double start, double stop, double step) {
  const double count = std::ceil((stop - start) / step);
  std::vector<double> out;
  if (!(count > 0)) return out;
  const auto length = static_cast<long long>(count);
  out.push_back(start);
  if (length > 1) out.push_back(start + step);
  // NumPy fills the rest from the first two values: start + i * (second - start).
  const double delta = (start + step) - start;
  for (long long i = 2; i < length; ++i) out.push_back(start + static_cast<double>(i) * delta);
  return out;
}

double np_round(double x) { return std::nearbyint(x); }

double np_interp_index(double x, const std::vector<double>& fp) {
  const auto n = static_cast<long long>(fp.size());
  if (x <= 0) return fp.front();
  if (x >= static_cast<double>(n - 1)) return fp.back();
  const auto j = static_cast<long long>(std::floor(x));
  if (static_cast<double>(j) == x) return fp[j];
  const double slope = (fp[j + 1] - fp[j]) / 1.0;
  return slope * (x - static_cast<double>(j)) + fp[j];
}

}  // namespace singleinsert::detail
