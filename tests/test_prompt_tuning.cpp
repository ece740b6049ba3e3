// Prompt Tuning Inversion: DDIM inversion against diffusers' DDIMInverseScheduler (golden made by
// tests/reference/gen_ddim_inversion.py on sd_tiny), and, in the toy world, an edit whose target
// is the source itself reconstructing the image within 1 dB of the VAE round trip, its ceiling.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "golden.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/pipeline/default_model.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_tuning_inversion.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/sampling/ddim.h"
#include "singleinsert/sampling/ddim_inversion.h"
#include "singleinsert/training/image_preprocess.h"
#include "singleinsert/world/render.h"
#include "singleinsert/world/scene.h"

namespace singleinsert {
namespace {

const std::string kSource = SINGLEINSERT_SOURCE_DIR;

SafetensorsFile inversion_golden() {
  return SafetensorsFile::open(kSource + "/tests/data/methods/ddim_inversion.safetensors");
}

TEST(DdimInversion, TimestepsAndLevelsAreDiffusersInverseSchedulers) {
  auto bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  const SafetensorsFile golden = inversion_golden();
  const DdimInversion inversion(bundle->scheduler_config, 10);
  const at::Tensor expected = golden.tensor("timesteps");
  ASSERT_EQ(inversion.steps(), expected.size(0));
  for (int k = 0; k < inversion.steps(); ++k) EXPECT_EQ(inversion.timesteps()[k], expected[k].item<int64_t>()) << k;
  // One step from a known x with a known eps lands where the recorded levels say, and back.
  const at::Tensor x = golden.tensor("plain.trajectory")[0].unsqueeze(0);
  const at::Tensor eps = golden.tensor("eps_first");
  const at::Tensor up = inversion.invert_step(eps, 0, x);
  EXPECT_TENSOR_NEAR_REL(up, golden.tensor("plain.trajectory")[1].unsqueeze(0), 1e-6);
  EXPECT_TENSOR_NEAR_REL(inversion.denoise_step(eps, 0, up), x, 1e-6);
}

// "trailing" spacing: the inverse timesteps are DDIMScheduler's (parity-tested) in ascending order,
// at step counts where T / steps * k ends in .5 (numpy rounds those halves to even).
TEST(DdimInversion, TrailingSpacingIsTheForwardSchedulersReversed) {
  auto config = JsonConfig::load(testing::golden_path("sd_tiny/scheduler/scheduler_config.json"));
  nlohmann::json json = config.json();
  json["timestep_spacing"] = "trailing";
  const JsonConfig trailing = JsonConfig::parse(json.dump(), "test");
  for (int steps : {10, 16, 80}) {
    const DdimInversion inversion(trailing, steps);
    DdimSampler sampler(DdimConfig::from_json(trailing));
    sampler.set_timesteps(steps);
    ASSERT_EQ(sampler.timesteps().numel(), inversion.steps());
    for (int k = 0; k < steps; ++k)
      EXPECT_EQ(inversion.timesteps()[k], sampler.timesteps()[steps - 1 - k].item<int64_t>()) << steps << " " << k;
  }
}

// Teacher-forced, each step from the recorded latent: the UNet's float32 parity (~1e-5 relative)
// through one exact step. Free-running, the inversion amplifies rounding step after step:
// diffusers re-run in a fresh process lands 1.0e-3 (relative to the trajectory's scale) from its
// own recorded trajectory at step 10 (measured with the generator's model and inputs), so the
// free-running comparison allows twice that.
constexpr double kStepTolerance = 5e-5;
constexpr double kFreeRunningTolerance = 2e-3;

TEST(DdimInversion, MatchesDiffusersDdimInverseScheduler) {
  auto bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  const SafetensorsFile golden = inversion_golden();
  const at::Tensor z0 = golden.tensor("z0");
  const DdimInversion inversion(bundle->scheduler_config, 10);
  for (const std::string name : {"plain", "guided"}) {
    const at::Tensor expected = golden.tensor(name + ".trajectory");
    const double scale = expected.abs().max().item<double>();
    const bool guided = name == "guided";
    at::NoGradGuard no_grad;
    double worst = 0;
    for (int k = 0; k < 10; ++k) {
      const at::Tensor x = expected[k].unsqueeze(0);
      const at::Tensor t = at::scalar_tensor(inversion.timesteps()[k], at::kLong);
      at::Tensor eps;
      if (guided) {
        const auto halves = bundle->unet->forward(at::cat({x, x}), t, at::cat({golden.tensor("uncond_context"), golden.tensor("context")})).chunk(2);
        eps = halves[0] + (halves[1] - halves[0]) * 3.0;
      } else {
        eps = bundle->unet->forward(x, t, golden.tensor("context"));
      }
      const at::Tensor step = inversion.invert_step(eps, k, x);
      worst = std::max(worst, (step - expected[k + 1]).abs().max().item<double>() / scale);
    }
    EXPECT_LE(worst, kStepTolerance) << name;
    testing::report_error("max rel error", (name + " teacher-forced steps").c_str(), worst);
    const at::Tensor free = guided ? ddim_invert(*bundle, z0, golden.tensor("context"), golden.tensor("uncond_context"), 10, 3.0)
                                   : ddim_invert(*bundle, z0, golden.tensor("context"), at::Tensor(), 10, 1.0);
    EXPECT_TENSOR_NEAR_REL(free, expected, kFreeRunningTolerance);
  }
  // And the starting latents are our VAE's encoding of the same image.
  const at::Tensor pixels = to_signed_unit_tensor(read_image_rgb(kSource + "/tests/data/methods/toy.png").pixels);
  at::NoGradGuard no_grad;
  const at::Tensor ours = bundle->vae->encode(pixels).mean * static_cast<float>(bundle->vae->config().scaling_factor);
  EXPECT_TENSOR_NEAR_REL(ours, z0, 1e-5);
}

TEST(PromptTuningInversion, NoEditReconstructsWithinOneDecibelOfTheVaeRoundTrip) {
  auto bundle = load_model_bundle(testing::world_model_with_tokenizer());
  const world::Scene scene = world::source_scene(world::sample_identity(world::kHeldOutIdentitySeed + 3), 2);
  const at::Tensor image = world::render(scene, 64).image;
  EditOptions options;
  options.prompt = options.source_prompt = "a photo of a face";  // the target is the source: no edit
  options.eta = 0;  // the edit on the tuned embeddings alone (docs/methods.md: at eta > 0 the target's words move it)
  options.steps = 20;
  options.inner_steps = 20;
  const EditResult result = prompt_tuning_edit(*bundle, to_signed_unit_tensor(image), options);
  const at::Tensor source = image.to(at::kFloat) / 255.0;
  const double ceiling = psnr(result.round_trip[0], source);
  const double edited = psnr(result.edited[0], source);
  const double reconstructed = psnr(result.reconstruction[0], source);
  std::cout << "PSNR: VAE round trip " << ceiling << " dB, reconstruction " << reconstructed << " dB, no-edit edit "
            << edited << " dB\n";
  testing::report_error("dB", "VAE round trip PSNR", ceiling);
  testing::report_error("dB", "no-edit PSNR below the round trip", ceiling - edited);
  EXPECT_GT(ceiling, 25.0);
  EXPECT_GT(edited, ceiling - 1.0);
  EXPECT_GT(reconstructed, ceiling - 1.0);
  ASSERT_EQ(result.step_losses.size(), 20u);
  EXPECT_EQ(result.trajectory.size(0), 21);
  // The tuned embeddings matter: plain DDIM from the inverted latents under guidance drifts.
  EditOptions untuned = options;
  untuned.inner_steps = 0;
  const EditResult drifted = prompt_tuning_edit(*bundle, to_signed_unit_tensor(image), untuned);
  const double untuned_psnr = psnr(drifted.reconstruction[0], source);
  std::cout << "PSNR without tuning: " << untuned_psnr << " dB\n";
  EXPECT_LT(untuned_psnr, reconstructed - 3.0);
}

// The edit's condition is eta * target + (1 - eta) * c_k: at eta 0 the target's words do not
// matter, at eta 1 the tuned embeddings do not, and in between both do.
TEST(PromptTuningInversion, EtaWeighsTheTargetAgainstTheTunedEmbeddings) {
  auto bundle = load_model_bundle(testing::world_model_with_tokenizer());
  const world::Scene scene = world::source_scene(world::sample_identity(world::kHeldOutIdentitySeed + 4), 1);
  EditOptions options;
  options.steps = 4;
  options.inner_steps = 2;
  const TunedInversion tuned = tune_inversion(*bundle, to_signed_unit_tensor(world::render(scene, 64).image), options);
  const std::string hat = "a photo of a face wearing a hat", glasses = "a photo of a face wearing sunglasses";
  EXPECT_TRUE(at::equal(edit_tuned(*bundle, tuned, hat, 0.0, options), edit_tuned(*bundle, tuned, glasses, 0.0, options)));
  // The reconstruction ran the conditional and unconditional passes apart (only one is tuned), the
  // edit runs them as one batch: equal but for float32 rounding.
  EXPECT_TENSOR_NEAR_ABS(edit_tuned(*bundle, tuned, hat, 0.0, options), tuned.result.reconstruction, 1e-5);
  TunedInversion scrambled = tuned;
  for (auto& c : scrambled.embeddings) c = c * 0.5;
  EXPECT_TRUE(at::equal(edit_tuned(*bundle, tuned, hat, 1.0, options), edit_tuned(*bundle, scrambled, hat, 1.0, options)));
  const at::Tensor half = edit_tuned(*bundle, tuned, hat, 0.5, options);
  EXPECT_FALSE(at::allclose(half, edit_tuned(*bundle, scrambled, hat, 0.5, options)));
  EXPECT_FALSE(at::allclose(half, edit_tuned(*bundle, tuned, glasses, 0.5, options)));
}

}  // namespace
}  // namespace singleinsert
