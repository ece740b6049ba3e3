// The whole text-to-image pipeline against diffusers' StableDiffusionPipeline on sd_tiny
// (golden/pipeline): prompt embeddings, every UNet input/output, latents after every step and
// the decoded image, for every sampler, plus batch 2 with negative prompts; and the seeded noise
// against torch.Generator probes.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <unistd.h>

#include <filesystem>

#include "golden.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/state_dict.h"
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

// Weights go from the file straight into the dtype the model runs in, with no float32 copy on the
// way: the values are the file's, rounded once (an fp16 file's values reach bf16 as through
// float32, which holds both exactly).
TEST(ModelBundle, LoadsStraightIntoTheComputeDtype) {
  ExecutionOptions execution;
  execution.dtype = at::kBFloat16;
  const auto bundle = load_model_bundle(testing::golden_path("sd_tiny"), execution);
  const SafetensorsFile unet_file = testing::golden_file("sd_tiny/unet/diffusion_pytorch_model.safetensors");
  for (const auto& [name, tensor] : module_tensors(*bundle->unet)) {
    ASSERT_EQ(tensor.scalar_type(), at::kBFloat16) << name;
    ASSERT_TRUE(at::equal(tensor, unet_file.tensor(name).to(at::kBFloat16))) << name;
  }
  const at::Tensor half = unet_file.tensor("conv_in.weight").to(at::kHalf);
  at::Tensor target = at::empty(half.sizes(), at::kBFloat16);
  std::map<std::string, at::Tensor> one = {{"weight", half}};
  torch::nn::Module holder;
  holder.register_parameter("weight", target);
  load_state_dict(holder, one, "fp16");
  EXPECT_TRUE(at::equal(target, half.to(at::kFloat).to(at::kBFloat16)));
}

// generate leaves the VAE's encoder out and frees the text encoder and the UNet as soon as it is
// done with them; the images do not change.
TEST(ModelBundle, OneShotRunsLoadAndKeepOnlyWhatTheyNeed) {
  ExecutionOptions execution;
  execution.device = testing::test_device();
  ModelParts parts;
  parts.vae_encoder = false;
  auto bundle = load_model_bundle(testing::golden_path("sd_tiny"), execution, {}, parts);
  const int size = static_cast<int>(bundle->unet->config().sample_size * bundle->vae_scale_factor());
  EXPECT_FALSE(bundle->vae->has_encoder());
  EXPECT_THROW(bundle->vae->encode(at::zeros({1, 3, size, size}, at::TensorOptions().device(execution.device))), Error);
  GenerateOptions options;
  options.prompts = {"a photo of an astronaut"};
  options.steps = 3;
  options.width = options.height = size;
  const at::Tensor expected = generate(*tiny_bundle(), options).images;
  options.release_models = true;
  EXPECT_TRUE(at::equal(generate(*bundle, options).images, expected));
  EXPECT_FALSE(bundle->text_encoder);
  EXPECT_FALSE(bundle->unet);
  EXPECT_THROW(generate(*bundle, options), Error);
  EXPECT_THROW(encode_prompts(*bundle, {"a photo"}), Error);
}

// A float32 run may keep a half-precision file's weights as stored: the matrix and convolution
// weights stay fp16 (norms and embeddings are float32) and the images equal those of the same
// file loaded into float32 weights, bit for bit.
TEST(ModelBundle, HalfWeightsGiveTheSameFloat32Images) {
  const std::string folder =
      (std::filesystem::temp_directory_path() / ("singleinsert_half_weights_" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(folder);
  save_model_folder(*tiny_bundle(), folder, at::kHalf);
  ExecutionOptions execution;
  execution.device = testing::test_device();
  const auto full = load_model_bundle(folder, execution);
  ModelParts parts;
  parts.half_weights = true;
  const auto half = load_model_bundle(folder, execution, {}, parts);
  EXPECT_EQ(half->unet->conv_in->weight.scalar_type(), at::kHalf);
  EXPECT_EQ(half->text_encoder->text_model->encoder->layers[0]->self_attn->q_proj->weight.scalar_type(), at::kHalf);
  EXPECT_EQ(half->vae->decoder->conv_norm_out->weight.scalar_type(), at::kFloat);
  EXPECT_EQ(full->unet->conv_in->weight.scalar_type(), at::kFloat);
  GenerateOptions options;
  options.prompts = {"a photo of an astronaut"};
  options.steps = 3;
  options.width = options.height = static_cast<int>(full->unet->config().sample_size * full->vae_scale_factor());
  EXPECT_TRUE(at::equal(generate(*half, options).images, generate(*full, options).images));
  std::filesystem::remove_all(folder);
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
