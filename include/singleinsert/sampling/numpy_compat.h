#pragma once
// The few NumPy routines diffusers uses to lay out timesteps and sigmas, reproduced operation
// for operation (float64), so that schedules match to the last bit.
#include <vector>

namespace singleinsert::detail {

std::vector<double> np_linspace(double start, double stop, int num);  // endpoint=True
std::vector<double> np_arange(double start, double stop, double step);
double np_round(double x);  // half to even, like np.round
// np.interp(x, arange(len(fp)), fp) in float64.
double np_interp_index(double x, const std::vector<double>& fp);

}  // namespace singleinsert::detail
