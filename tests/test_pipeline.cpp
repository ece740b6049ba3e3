// The whole text-to-image pipeline against diffusers' StableDiffusionPipeline on sd_tiny
// (golden/pipeline): prompt embeddings, every UNet input/output, latents after every step and
// the decoded image, for every sampler, plus batch 2 with negative prompts; and the seeded noise
// against torch.Generator probes.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "golden.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/random.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/pipeline/text_to_image.h"

namespace singleinsert {
namespace {

const double kTolerance = testing::device_tolerance(1e-5);  // relative, on every intermediate tensor
constexpr double kPixelTolerance = 1.0 / 255;

std::shared_ptr<ModelBundle> tiny_bundle() {
  ExecutionOptions execution;
  execution.device = testing::test_device();
  static auto bundle = load_model_bundle(testing::golden_path("sd_tiny"), execution);
  return bundle;
}

struct PipelineRun {
  std::string sampler;
  std::string file;
};

class PipelineParity : public ::testing::TestWithParam<PipelineRun> {};

TEST_P(PipelineParity, ReproducesDiffusersRun) {
  const PipelineRun run = GetParam();
  const SafetensorsFile golden = testing::golden_file("pipeline/" + run.file + ".safetensors");
  const SafetensorsFile common = testing::golden_file("pipeline/common_io.safetensors");
  ModelBundle bundle = *tiny_bundle();
  const std::string config_name = run.sampler == "dpmpp_2m" ? "dpmpp_2m" : run.sampler;
  bundle.scheduler_config = JsonConfig::load(testing::golden_path("schedulers/" + config_name + "_config.json"));

  GenerateOptions options;
  const bool batch = run.file == "run_ddim_batch2_negative";
  if (batch) {
    options.prompts = {"a cat sitting on a mat, best quality", "St. Patrick's Day parade, 8k"};
    options.negative_prompts = {"blurry, lowres", ""};
    options.initial_latents = common.tensor("init_latents_batch2");
  } else {
    options.prompts = {golden.metadata().at("prompt")};
    options.initial_latents = common.tensor("init_latents");
  }
  options.sampler = run.sampler;
  options.steps = 4;
  options.guidance_scale = 7.5;
  options.width = options.height = 32;
  DenoiseTrace trace;
  const GeneratedImages out = generate(bundle, options, nullptr, &trace);

  if (!batch) {
    EXPECT_TENSOR_NEAR_REL(trace.context[0], common.tensor("negative_prompt_embeds")[0], kTolerance);
    EXPECT_TENSOR_NEAR_REL(trace.context[1], common.tensor("prompt_embeds")[0], kTolerance);
  }
  const at::Tensor inputs = golden.tensor("unet_inputs"), outputs = golden.tensor("unet_outputs");
  const at::Tensor latents = golden.tensor("latents_per_step"), timesteps = golden.tensor("unet_timesteps");
  ASSERT_EQ(static_cast<int64_t>(trace.unet_inputs.size()), inputs.size(0));
  for (size_t i = 0; i < trace.unet_inputs.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i));
    EXPECT_EQ(trace.unet_timesteps[i].item<double>(), timesteps[i].item<double>());
    EXPECT_TENSOR_NEAR_REL(trace.unet_inputs[i], inputs[i], kTolerance);
    EXPECT_TENSOR_NEAR_REL(trace.unet_outputs[i], outputs[i], kTolerance);
    EXPECT_TENSOR_NEAR_REL(trace.latents[i], latents[i], kTolerance);
  }
  EXPECT_TENSOR_NEAR_ABS(out.images, golden.tensor("image"), 1e-5);
  EXPECT_TENSOR_NEAR_ABS(out.pixels.to(at::kFloat) / 255, golden.tensor("image_uint8").to(at::kFloat) / 255,
                         kPixelTolerance);
}

INSTANTIATE_TEST_SUITE_P(Golden, PipelineParity,
                         ::testing::Values(PipelineRun{"ddim", "run_ddim"}, PipelineRun{"pndm", "run_pndm"}, PipelineRun{"euler", "run_euler"},
                                           PipelineRun{"dpmpp_2m", "run_dpmpp_2m"},
                                           PipelineRun{"ddim", "run_ddim_batch2_negative"}),
                         [](const auto& info) { return info.param.file; });

TEST(SeededNoise, ReproducesTorchGeneratorBitForBit) {
  const SafetensorsFile common = testing::golden_file("pipeline/common_io.safetensors");
  EXPECT_TRUE(at::equal(seeded_latents(0, 1, 4, 16, 16), common.tensor("rng_randn_seed0_1x4x16x16")));
  EXPECT_TRUE(at::equal(seeded_latents(0, 1, 4, 64, 64), common.tensor("rng_randn_seed0_1x4x64x64")));
  at::Generator generator = make_cpu_generator(0);
  EXPECT_TRUE(at::equal(randn_like_torch({2, 3}, generator), common.tensor("rng_randn_seed0_2x3")));
  at::Generator again = make_cpu_generator(0);
  EXPECT_TRUE(at::equal(randn_like_torch({7}, again), common.tensor("rng_randn_seed0_7")));
}

TEST(PromptEncoding, TruncatesLongPromptsLikeDiffusers) {
  std::string long_prompt;
  for (int i = 0; i < 90; ++i) long_prompt += "horse ";
  const at::Tensor ids = tokenize_prompts(tiny_bundle()->tokenizer, {long_prompt, "a horse"});
  ASSERT_EQ(ids.sizes(), at::IntArrayRef({2, 77}));
  EXPECT_EQ(ids[0][76].item<int64_t>(), 49407);
  EXPECT_EQ(ids[0][75].item<int64_t>(), ids[0][1].item<int64_t>());
}

}  // namespace
}  // namespace singleinsert
