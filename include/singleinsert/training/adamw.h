#pragma once
// AdamW exactly as torch.optim.AdamW (decoupled weight decay, bias-corrected moments), plus
// torch.nn.utils.clip_grad_norm_. Parameters and moments stay in float32 on their device; the
// moments can be saved and restored for resuming.
#include <ATen/core/Tensor.h>

#include <vector>

#include "singleinsert/core/safetensors.h"

namespace singleinsert {

struct AdamWOptions {
  double lr = 1e-4;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

class AdamW {
 public:
  AdamW(std::vector<at::Tensor> parameters, AdamWOptions options);

  void step();       // parameters without a gradient are skipped, as in PyTorch
  void zero_grad();  // sets gradients to none
  int64_t steps_taken() const { return step_; }
  void set_lr(double lr) { options_.lr = lr; }  // for schedules
  double lr() const { return options_.lr; }
  const std::vector<at::Tensor>& parameters() const { return parameters_; }

  // exp_avg.<i>, exp_avg_sq.<i> and the step count, for checkpoints.
  NamedTensors state() const;
  void load_state(const std::map<std::string, at::Tensor>& state, const std::string& origin);

 private:
  std::vector<at::Tensor> parameters_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// The global 2-norm of the gradients (0 when none has one).
double grad_norm(const std::vector<at::Tensor>& parameters);
// Scales gradients so their global 2-norm is at most max_norm; returns the norm before clipping.
double clip_grad_norm(const std::vector<at::Tensor>& parameters, double max_norm);

}  // namespace singleinsert
