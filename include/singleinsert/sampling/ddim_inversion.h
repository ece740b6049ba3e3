#pragma once
// DDIM inversion as diffusers' DDIMInverseScheduler (0.25.1) walks it, and the deterministic DDIM
// step that walks the same levels back (Prompt Tuning Inversion's reconstruction and editing).
//
// Levels: with ratio = T / steps, timesteps t_k (ascending: k * ratio + steps_offset for "leading",
// T - 1 - (steps - 1 - k) * ratio rounded for "trailing"). Inverse step k takes x from level
// t_k - ratio (the initial alpha when that is negative: 1 with set_alpha_to_one, else abar_0) to
// level t_k, with eps = eps(x, t_k) (diffusers evaluates the UNet at the level it moves to):
//   x0 = (x - sqrt(1 - a_from) eps) / sqrt(a_from),   x' = sqrt(a_to) x0 + sqrt(1 - a_to) eps
// The backward step k is the same formula with the two levels exchanged, eps = eps(x', t_k).
// No noise; x0 is clamped only when the config's clip_sample is on (diffusers' default, off in SD
// v1.5's configs).
#include <ATen/core/Tensor.h>

#include <vector>

#include "singleinsert/sampling/noise_schedule.h"

namespace singleinsert {

class JsonConfig;

class DdimInversion {
 public:
  DdimInversion(const JsonConfig& scheduler_config, int steps);

  int steps() const { return static_cast<int>(timesteps_.size()); }
  // t_k, ascending.
  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  // Level t_k - ratio -> t_k.
  at::Tensor invert_step(const at::Tensor& eps, int index, const at::Tensor& sample) const;
  // Level t_k -> t_k - ratio.
  at::Tensor denoise_step(const at::Tensor& eps, int index, const at::Tensor& sample) const;

 private:
  float alpha_from(int index) const;
  NoiseSchedule schedule_;
  std::vector<int64_t> timesteps_;
  int64_t ratio_ = 0;
  float initial_alpha_cumprod_ = 1.0f;
  double clip_sample_range_ = 0;  // 0: x0 not clamped
};

}  // namespace singleinsert
