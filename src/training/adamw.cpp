#include "singleinsert/training/adamw.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "singleinsert/core/error.h"

namespace singleinsert {

AdamW::AdamW(std::vector<at::Tensor> parameters, AdamWOptions options)
    : parameters_(std::move(parameters)), options_(options) {
  for (const auto& p : parameters_) {
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
  }
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  ++step_;
  const double bias_correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bias_correction2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_));
  const double step_size = options_.lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  for (size_t i = 0; i < parameters_.size(); ++i) {
    at::Tensor& param = parameters_[i];
    const at::Tensor& grad = param.grad();
    if (!grad.defined()) continue;
    param.mul_(1.0 - options_.lr * options_.weight_decay);
    exp_avg_[i].lerp_(grad, 1.0 - options_.beta1);
    exp_avg_sq_[i].mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    const at::Tensor denom = (exp_avg_sq_[i].sqrt() / bias_correction2_sqrt).add_(options_.eps);
    param.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

void AdamW::zero_grad() {
  for (auto& p : parameters_) p.mutable_grad() = at::Tensor();
}

NamedTensors AdamW::state() const {
  NamedTensors out;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    out.emplace_back(fmt::format("exp_avg.{}", i), exp_avg_[i]);
    out.emplace_back(fmt::format("exp_avg_sq.{}", i), exp_avg_sq_[i]);
  }
  out.emplace_back("step", at::scalar_tensor(step_, at::kLong));
  return out;
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& state, const std::string& origin) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i)
    for (const auto& [name, target] : {std::pair<std::string, at::Tensor*>{fmt::format("exp_avg.{}", i), &exp_avg_[i]},
                                 std::pair<std::string, at::Tensor*>{fmt::format("exp_avg_sq.{}", i), &exp_avg_sq_[i]}}) {
      auto it = state.find(name);
      if (it == state.end() || it->second.sizes() != target->sizes())
        throw Error(fmt::format("{}: optimizer state '{}' is missing or has the wrong shape", origin, name));
      target->copy_(it->second);
    }
  auto it = state.find("step");
  if (it == state.end()) throw Error(fmt::format("{}: optimizer state has no step count", origin));
  step_ = it->second.item<int64_t>();
}

namespace {

// The global 2-norm of the gradients, undefined when no parameter has one.
at::Tensor total_grad_norm(const std::vector<at::Tensor>& parameters) {
  std::vector<at::Tensor> norms;
  for (const auto& p : parameters)
    if (p.grad().defined()) norms.push_back(p.grad().detach().norm(2.0));
  return norms.empty() ? at::Tensor() : at::stack(norms).norm(2.0);
}

}  // namespace

double grad_norm(const std::vector<at::Tensor>& parameters) {
  at::NoGradGuard no_grad;
  const at::Tensor total = total_grad_norm(parameters);
  return total.defined() ? total.item<double>() : 0.0;
}

double clip_grad_norm(const std::vector<at::Tensor>& parameters, double max_norm) {
  at::NoGradGuard no_grad;
  const at::Tensor total = total_grad_norm(parameters);
  if (!total.defined()) return 0.0;
  // torch >= 1.13: always multiply by min(max_norm / (norm + 1e-6), 1), no branch, no sync.
  const at::Tensor coefficient = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (const auto& p : parameters)
    if (p.grad().defined()) p.grad().detach().mul_(coefficient.to(p.grad().device()));
  return total.item<double>();
}

}  // namespace singleinsert
