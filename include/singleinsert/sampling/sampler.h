#pragma once
// One interface for every sampler (diffusers' schedulers): set_timesteps, then for each step i
// run the model on scale_model_input(x, i) at timestep(i) and call step(). Samplers keep their
// multistep state between calls; set_timesteps resets it.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "singleinsert/sampling/noise_schedule.h"

namespace singleinsert {

class JsonConfig;

enum class PredictionType { kEpsilon, kVPrediction };

// Settings every sampler reads from scheduler_config.json.
struct SamplerCommonConfig {
  NoiseScheduleConfig schedule;
  PredictionType prediction_type = PredictionType::kEpsilon;
  std::string timestep_spacing;  // leading | linspace | trailing (default depends on the sampler)
  int steps_offset = 0;

  static SamplerCommonConfig from_json(const JsonConfig& json, const std::string& default_spacing);
};

class Sampler {
 public:
  virtual ~Sampler() = default;

  virtual std::string name() const = 0;
  // Prepares `steps` inference steps (the loop may be longer: PNDM repeats one timestep).
  virtual void set_timesteps(int steps) = 0;
  // The UNet timestep of every loop iteration: int64 for DDPM-style samplers, float32 for the
  // sigma-based ones (diffusers feeds the UNet the same values).
  const at::Tensor& timesteps() const { return timesteps_; }
  int64_t loop_length() const { return timesteps_.numel(); }
  at::Tensor timestep(int64_t index) const { return timesteps_[index]; }

  // The initial latents are standard normal noise times this.
  virtual float init_noise_sigma() const { return 1.0f; }
  virtual at::Tensor scale_model_input(const at::Tensor& sample, int64_t index) const { return sample; }
  // One update. `generator` feeds ancestral samplers' noise (drawn on the CPU, in float32).
  virtual at::Tensor step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample,
                          at::Generator* generator) = 0;
  // Sigmas of the current schedule ([loop_length + 1]) for sigma-based samplers, else undefined.
  virtual at::Tensor sigmas() const { return {}; }

  const NoiseSchedule& schedule() const { return schedule_; }

 protected:
  explicit Sampler(const SamplerCommonConfig& common) : common_(common), schedule_(common.schedule) {}
  SamplerCommonConfig common_;
  NoiseSchedule schedule_;
  at::Tensor timesteps_;
};

// Names accepted by make_sampler (the --sampler values).
const std::vector<std::string>& sampler_names();

// Builds a sampler from a model's scheduler_config.json contents: keys it does not state take
// that sampler's diffusers defaults. Throws Error for unknown names or unsupported options.
std::unique_ptr<Sampler> make_sampler(const std::string& name, const JsonConfig& scheduler_config);

}  // namespace singleinsert
