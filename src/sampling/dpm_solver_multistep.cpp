#include "singleinsert/sampling/dpm_solver_multistep.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/sampling/euler.h"
#include "singleinsert/sampling/numpy_compat.h"

namespace singleinsert {
namespace {

// exp and log of one float32 through ATen, which diffusers' 0-d tensor math uses; the C
// library's expf can differ from it in the last bit.
float aten_exp(float x) { return at::exp(at::scalar_tensor(x, at::kFloat)).item<float>(); }
float aten_log(float x) { return at::log(at::scalar_tensor(x, at::kFloat)).item<float>(); }

}  // namespace

DpmSolverConfig DpmSolverConfig::from_json(const JsonConfig& json) {
  DpmSolverConfig c;
  c.common = SamplerCommonConfig::from_json(json, "linspace");
  c.solver_order = json.get_int("solver_order", 2);
  c.algorithm_type = json.get_string("algorithm_type", "dpmsolver++");
  c.solver_type = json.get_string("solver_type", "midpoint");
  c.lower_order_final = json.get_bool("lower_order_final", true);
  c.euler_at_final = json.get_bool("euler_at_final", false);
  c.use_karras_sigmas = json.get_bool("use_karras_sigmas", false);
  c.lambda_min_clipped = json.get_double("lambda_min_clipped", -INFINITY);
  // Configs written for other multistep schedulers (DEIS, UniPC) map onto DPM-Solver++, as in diffusers.
  if (c.algorithm_type == "deis") c.algorithm_type = "dpmsolver++";
  if (c.solver_type == "logrho" || c.solver_type == "bh1" || c.solver_type == "bh2") c.solver_type = "midpoint";
  if (c.algorithm_type != "dpmsolver++")
    throw Error(fmt::format("{}: algorithm_type '{}' is not supported (dpmsolver++)", json.origin(), c.algorithm_type));
  if (c.solver_type != "midpoint")
    throw Error(fmt::format("{}: solver_type '{}' is not supported (midpoint)", json.origin(), c.solver_type));
  if (c.solver_order < 1 || c.solver_order > 2)
    throw Error(fmt::format("{}: solver_order {} is not supported (1 or 2)", json.origin(), c.solver_order));
  if (json.get_bool("use_lu_lambdas", false))
    throw Error(fmt::format("{}: use_lu_lambdas = true is not supported", json.origin()));
  if (json.has("variance_type"))
    throw Error(fmt::format("{}: variance_type is not supported", json.origin()));
  return c;
}

DpmSolverMultistepSampler::DpmSolverMultistepSampler(const DpmSolverConfig& config)
    : Sampler(config.common), config_(config) {}

void DpmSolverMultistepSampler::set_timesteps(int steps) {
  const int train = schedule_.num_train_timesteps();
  if (steps < 1 || steps > train)
    throw Error(fmt::format("{} needs between 1 and {} steps, got {}", name(), train, steps));
  // Timesteps whose log-SNR falls below lambda_min_clipped are never visited.
  const at::Tensor alpha_t = schedule_.alphas_cumprod.sqrt(), sigma_t = (1.0 - schedule_.alphas_cumprod).sqrt();
  const at::Tensor lambdas = alpha_t.log() - sigma_t.log();
  const int64_t clipped = (lambdas < config_.lambda_min_clipped).sum().item<int64_t>();
  const int64_t last_timestep = train - clipped;

  std::vector<double> t;
  if (common_.timestep_spacing == "linspace") {
    const auto values = detail::np_linspace(0, static_cast<double>(last_timestep - 1), steps + 1);
    for (int i = steps; i >= 1; --i) t.push_back(detail::np_round(values[i]));
  } else if (common_.timestep_spacing == "leading") {
    const int64_t ratio = last_timestep / (steps + 1);
    for (int i = steps; i >= 1; --i) t.push_back(static_cast<double>(i * ratio + common_.steps_offset));
  } else {
    for (double v : detail::np_arange(static_cast<double>(last_timestep), 0, -static_cast<double>(train) / steps))
      t.push_back(detail::np_round(v) - 1);
  }
  const std::vector<double> training = detail::training_sigmas(schedule_);
  std::vector<float> sigmas;
  if (config_.use_karras_sigmas) {
    const auto karras = detail::karras_sigmas(training.front(), training.back(), steps);
    const auto logs = detail::log_sigmas(schedule_);
    t.clear();
    for (double s : karras) {
      t.push_back(detail::np_round(detail::sigma_to_timestep(s, logs)));
      sigmas.push_back(static_cast<float>(s));
    }
    sigmas.push_back(sigmas.back());
  } else {
    for (double v : t) sigmas.push_back(static_cast<float>(detail::np_interp_index(v, training)));
    sigmas.push_back(static_cast<float>(training.front()));  // sigma at t = 0
  }
  std::vector<int64_t> t64;
  for (double v : t) t64.push_back(static_cast<int64_t>(v));
  timesteps_ = at::tensor(t64, at::kLong);
  sigmas_ = at::tensor(sigmas, at::kFloat);
  model_outputs_.clear();
  lower_order_nums_ = 0;
}

DpmSolverMultistepSampler::AlphaSigma DpmSolverMultistepSampler::alpha_sigma(int64_t index) const {
  const float sigma = sigmas_.data_ptr<float>()[index];
  const float alpha_t = 1.0f / std::sqrt(sigma * sigma + 1.0f);
  const float sigma_t = sigma * alpha_t;
  return {alpha_t, sigma_t, aten_log(alpha_t) - aten_log(sigma_t)};
}

at::Tensor DpmSolverMultistepSampler::step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample,
                                           at::Generator*) {
  const int64_t n = loop_length();
  const bool short_run = n < 15;
  // Short runs finish with a first-order step, which is more stable there.
  const bool final_first_order = index == n - 1 && (config_.euler_at_final || (config_.lower_order_final && short_run));

  // The data prediction x0 from the model output.
  const AlphaSigma s0 = alpha_sigma(index);
  at::Tensor x0 = common_.prediction_type == PredictionType::kEpsilon
                      ? (sample - model_output * s0.sigma) / s0.alpha
                      : sample * s0.alpha - model_output * s0.sigma;
  model_outputs_.push_back(x0);
  if (static_cast<int>(model_outputs_.size()) > config_.solver_order) model_outputs_.erase(model_outputs_.begin());

  const AlphaSigma target = alpha_sigma(index + 1);
  const float h = target.lambda - s0.lambda;
  const float exp_term = aten_exp(-h) - 1.0f;
  at::Tensor prev;
  if (config_.solver_order == 1 || lower_order_nums_ < 1 || final_first_order) {
    prev = sample * (target.sigma / s0.sigma) - x0 * (target.alpha * exp_term);
  } else {
    // Second-order midpoint update from the last two x0 predictions.
    const AlphaSigma s1 = alpha_sigma(index - 1);
    const float h_0 = s0.lambda - s1.lambda;
    const float r0 = h_0 / h;
    const at::Tensor& m0 = model_outputs_.back();
    const at::Tensor& m1 = model_outputs_[model_outputs_.size() - 2];
    const at::Tensor d1 = (m0 - m1) * (1.0f / r0);
    prev = sample * (target.sigma / s0.sigma) - m0 * (target.alpha * exp_term) - d1 * (0.5f * (target.alpha * exp_term));
  }
  if (lower_order_nums_ < config_.solver_order) ++lower_order_nums_;
  return prev;
}

}  // namespace singleinsert
