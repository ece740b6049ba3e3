#include "singleinsert/sampling/euler_ancestral.h"

#include <ATen/ATen.h>

#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/random.h"

namespace singleinsert {
namespace {

EulerConfig as_euler(const EulerAncestralConfig& config) {
  EulerConfig c;
  c.common = config.common;
  return c;
}

}  // namespace

EulerAncestralConfig EulerAncestralConfig::from_json(const JsonConfig& json) {
  EulerAncestralConfig c;
  c.common = SamplerCommonConfig::from_json(json, "linspace");
  return c;
}

EulerAncestralSampler::EulerAncestralSampler(const EulerAncestralConfig& config) : EulerSampler(as_euler(config)) {}

void EulerAncestralSampler::set_timesteps(int steps) { build_schedule(steps, /*allow_karras=*/false); }

at::Tensor EulerAncestralSampler::step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample,
                                       at::Generator* generator) {
  if (generator == nullptr) throw Error("the euler_a sampler needs a random generator");
  const float sigma_from = sigma(index), sigma_to = sigma(index + 1);
  const at::Tensor x = sample.to(at::kFloat);
  const at::Tensor x0 = predicted_original(model_output, x, sigma_from);
  const float sigma_up =
      std::sqrt(sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) / (sigma_from * sigma_from));
  const float sigma_down = std::sqrt(sigma_to * sigma_to - sigma_up * sigma_up);
  const at::Tensor derivative = (x - x0) / sigma_from;
  at::Tensor prev = x + derivative * (sigma_down - sigma_from);
  const at::Tensor noise = randn_like_torch(model_output.sizes(), *generator, model_output.device());
  prev = prev + noise.to(prev.scalar_type()) * sigma_up;
  return prev.to(model_output.scalar_type());
}

}  // namespace singleinsert
