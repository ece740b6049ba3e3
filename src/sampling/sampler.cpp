#include "singleinsert/sampling/sampler.h"

#include <fmt/format.h>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/sampling/ddim.h"
#include "singleinsert/sampling/dpm_solver_multistep.h"
#include "singleinsert/sampling/euler.h"
#include "singleinsert/sampling/euler_ancestral.h"
#include "singleinsert/sampling/pndm.h"

namespace singleinsert {

SamplerCommonConfig SamplerCommonConfig::from_json(const JsonConfig& json, const std::string& default_spacing) {
  SamplerCommonConfig c;
  c.schedule = NoiseScheduleConfig::from_json(json);
  const std::string prediction = json.get_string("prediction_type", "epsilon");
  if (prediction == "epsilon") c.prediction_type = PredictionType::kEpsilon;
  else if (prediction == "v_prediction") c.prediction_type = PredictionType::kVPrediction;
  else throw Error(fmt::format("{}: prediction_type '{}' is not supported (epsilon, v_prediction)", json.origin(), prediction));
  c.timestep_spacing = json.get_string("timestep_spacing", default_spacing);
  if (c.timestep_spacing != "leading" && c.timestep_spacing != "linspace" && c.timestep_spacing != "trailing")
    throw Error(fmt::format("{}: timestep_spacing '{}' is not supported (leading, linspace, trailing)", json.origin(),
                            c.timestep_spacing));
  c.steps_offset = json.get_int("steps_offset", 0);
  if (json.get_bool("thresholding", false))
    throw Error(fmt::format("{}: thresholding = true is not supported", json.origin()));
  return c;
}

const std::vector<std::string>& sampler_names() {
  static const std::vector<std::string> names = {"ddim", "pndm", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras"};
  return names;
}

std::unique_ptr<Sampler> make_sampler(const std::string& name, const JsonConfig& config) {
  if (name == "ddim") return std::make_unique<DdimSampler>(DdimConfig::from_json(config));
  if (name == "pndm") return std::make_unique<PndmSampler>(PndmConfig::from_json(config));
  if (name == "euler") return std::make_unique<EulerSampler>(EulerConfig::from_json(config));
  if (name == "euler_a") return std::make_unique<EulerAncestralSampler>(EulerAncestralConfig::from_json(config));
  if (name == "dpmpp_2m" || name == "dpmpp_2m_karras") {
    DpmSolverConfig c = DpmSolverConfig::from_json(config);
    c.use_karras_sigmas = name == "dpmpp_2m_karras";
    return std::make_unique<DpmSolverMultistepSampler>(c);
  }
  std::string known;
  for (const auto& n : sampler_names()) known += (known.empty() ? "" : ", ") + n;
  throw Error(fmt::format("unknown sampler '{}' (choose one of: {})", name, known));
}

}  // namespace singleinsert
