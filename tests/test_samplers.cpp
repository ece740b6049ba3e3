// Every sampler against diffusers' schedulers (golden/schedulers): betas, alphas_cumprod,
// timesteps and sigmas for 20 and 50 steps, a full loop driven by fixed model outputs, and an
// isolated first step; plus the per-class defaults and bad settings.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "golden.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/random.h"
#include "singleinsert/sampling/sampler.h"

namespace singleinsert {
namespace {

// Loops run 20-51 steps on random model outputs that grow the samples to |x| ~ 40; float32
// rounding accumulates to a few 1e-7 of that scale.
constexpr double kLoopTolerance = 1e-6;

struct Case {
  std::string sampler;  // --sampler name
  std::string golden;   // file prefix in golden/schedulers
};

class SamplerParity : public ::testing::TestWithParam<Case> {};

TEST_P(SamplerParity, MatchesDiffusers) {
  const Case c = GetParam();
  const JsonConfig config = JsonConfig::load(testing::golden_path("schedulers/sd15_scheduler_config.json"));
  const SafetensorsFile io = testing::golden_file("schedulers/" + c.golden + "_io.safetensors");
  const SafetensorsFile common = testing::golden_file("schedulers/common_io.safetensors");
  auto sampler = make_sampler(c.sampler, config);
  EXPECT_TRUE(at::equal(sampler->schedule().betas, io.tensor("betas")));
  EXPECT_TRUE(at::equal(sampler->schedule().alphas_cumprod, io.tensor("alphas_cumprod")));

  for (int steps : {20, 50}) {
    SCOPED_TRACE(c.sampler + " with " + std::to_string(steps) + " steps");
    const std::string n = std::to_string(steps);
    sampler->set_timesteps(steps);
    const at::Tensor expected_timesteps = io.tensor("timesteps_" + n);
    ASSERT_EQ(sampler->timesteps().scalar_type(), expected_timesteps.scalar_type());
    EXPECT_TRUE(at::equal(sampler->timesteps(), expected_timesteps))
        << sampler->timesteps() << "\nexpected\n" << expected_timesteps;
    if (io.contains("sigmas_" + n)) EXPECT_TENSOR_NEAR_REL(sampler->sigmas(), io.tensor("sigmas_" + n), 1e-7);
    EXPECT_FLOAT_EQ(sampler->init_noise_sigma(), io.tensor("init_noise_sigma_" + n).item<float>());

    const at::Tensor samples = io.tensor("samples_" + n), inputs = io.tensor("model_inputs_" + n);
    const at::Tensor outputs = common.tensor("model_outputs_" + n);
    at::Tensor x = samples[0];
    at::Generator generator = make_cpu_generator(0);
    for (int64_t i = 0; i < sampler->loop_length(); ++i) {
      EXPECT_TENSOR_NEAR_REL(sampler->scale_model_input(x, i), inputs[i], kLoopTolerance);
      x = sampler->step(outputs[i], i, x, &generator);
      EXPECT_TENSOR_NEAR_REL(x, samples[i + 1], kLoopTolerance);
    }

    // An isolated step: the first step of a fresh schedule.
    sampler->set_timesteps(steps);
    EXPECT_EQ(sampler->timestep(0).item<double>(), io.tensor("step_single_" + n + "_timestep").item<double>());
    const at::Tensor input = io.tensor("step_single_" + n + "_model_input");
    EXPECT_TENSOR_NEAR_REL(sampler->scale_model_input(samples[0], 0), input, 1e-7);
    EXPECT_TENSOR_NEAR_REL(sampler->step(outputs[0], 0, samples[0], &generator),
                           io.tensor("step_single_" + n + "_prev_sample"), 1e-7);
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, SamplerParity,
                         ::testing::Values(Case{"ddim", "ddim"}, Case{"pndm", "pndm"}, Case{"euler", "euler"},
                                           Case{"dpmpp_2m", "dpmpp_2m"}, Case{"dpmpp_2m_karras", "dpmpp_2m_karras"}),
                         [](const auto& info) { return info.param.sampler; });

TEST(Samplers, EachSamplerTakesItsOwnDefaultSpacing) {
  // SD v1.5's scheduler_config.json predates timestep_spacing: DDIM/PNDM default to "leading",
  // Euler and DPM-Solver to "linspace" (diffusers' class defaults).
  const JsonConfig config = JsonConfig::load(testing::golden_path("schedulers/sd15_scheduler_config.json"));
  auto ddim = make_sampler("ddim", config);
  ddim->set_timesteps(4);
  EXPECT_EQ(ddim->timesteps()[0].item<int64_t>(), 751);
  auto euler_a = make_sampler("euler_a", config);
  euler_a->set_timesteps(4);
  EXPECT_EQ(euler_a->timesteps()[0].item<float>(), 999.0f);
  // A key the file does state wins over the default.
  const JsonConfig leading = JsonConfig::parse(R"({"beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "beta_end": 0.012, "timestep_spacing": "leading", "steps_offset": 1})", "inline");
  auto euler = make_sampler("euler", leading);
  euler->set_timesteps(4);
  EXPECT_EQ(euler->timesteps()[0].item<float>(), 751.0f);
}

TEST(Samplers, EulerAncestralDrawsItsNoiseFromTheGenerator) {
  const JsonConfig config = JsonConfig::load(testing::golden_path("schedulers/sd15_scheduler_config.json"));
  auto sampler = make_sampler("euler_a", config);
  sampler->set_timesteps(10);
  const at::Tensor x = at::ones({1, 4, 8, 8}), eps = at::full({1, 4, 8, 8}, 0.5);
  at::Generator a = make_cpu_generator(7), b = make_cpu_generator(7), c = make_cpu_generator(8);
  const at::Tensor first = sampler->step(eps, 0, x, &a), same = sampler->step(eps, 0, x, &b),
                   other = sampler->step(eps, 0, x, &c);
  EXPECT_TRUE(at::equal(first, same));
  EXPECT_FALSE(at::equal(first, other));
  // The derivative is eps itself, so the update is x + eps * (sigma_down - sigma) + noise * sigma_up.
  const float s0 = sampler->sigmas()[0].item<float>(), s1 = sampler->sigmas()[1].item<float>();
  const float up = std::sqrt(s1 * s1 * (s0 * s0 - s1 * s1) / (s0 * s0));
  const float down = std::sqrt(s1 * s1 - up * up);
  at::Generator d = make_cpu_generator(7);
  const at::Tensor noise = at::randn({1, 4, 8, 8}, d);
  EXPECT_TENSOR_NEAR_ABS(first, x + eps * (down - s0) + noise * up, 1e-5);
}

TEST(Samplers, RejectsBadSettings) {
  const JsonConfig config = JsonConfig::load(testing::golden_path("schedulers/sd15_scheduler_config.json"));
  EXPECT_THROW(make_sampler("heun", config), Error);
  EXPECT_THROW(make_sampler("ddim", config)->set_timesteps(0), Error);
  EXPECT_THROW(make_sampler("ddim", JsonConfig::parse(R"({"prediction_type": "sample"})", "inline")), Error);
  EXPECT_THROW(make_sampler("euler", JsonConfig::parse(R"({"beta_schedule": "sigmoid"})", "inline")), Error);
  try {
    make_sampler("lms", config);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dpmpp_2m_karras"), std::string::npos) << "lists the choices";
  }
}

}  // namespace
}  // namespace singleinsert
