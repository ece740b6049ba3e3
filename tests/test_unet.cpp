// UNet2DConditionModel against diffusers (golden/unet_io.safetensors on sd_tiny/unet): a scalar
// timestep, per-sample timesteps, a non-square latent, every top-level intermediate activation,
// float64, and the full SD v1.5 key layout.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "golden.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/models/unet.h"

namespace singleinsert {
namespace {

const double kFp32Tolerance = testing::device_tolerance(1e-5);  // relative to each tensor's scale
constexpr double kFp64Tolerance = 1e-12;

// The manual attention path must not read memory it did not write: LibTorch 1.13's out-of-place
// CPU baddbmm multiplies its uninitialised result by beta = 0, and freed blocks full of NaN (here
// made on purpose, in training left by earlier tensors) come back from the allocator.
TEST(Attention, ScoresDoNotDependOnReusedMemory) {
  at::Generator generator = make_cpu_generator(5);
  const at::Tensor q = at::randn({2, 4, 5, 8}, generator), k = at::randn({2, 4, 5, 8}, generator),
                   v = at::randn({2, 4, 5, 8}, generator);
  const double scale = 1.0 / std::sqrt(8.0);
  const at::Tensor expected =
      at::matmul(at::softmax(at::matmul(q.to(at::kDouble), k.to(at::kDouble).transpose(-1, -2)) * scale, -1),
                 v.to(at::kDouble));
  for (int repeat = 0; repeat < 20; ++repeat) {
    {  // blocks of the score matrix's size, full of NaN, freed
      std::vector<at::Tensor> garbage;
      for (int i = 0; i < 8; ++i) garbage.push_back(at::full({8, 5, 5}, NAN));
    }
    const at::Tensor out = compat::scaled_dot_product_attention(q, k, v, scale, c10::nullopt, false);
    ASSERT_TRUE(at::isfinite(out).all().item<bool>()) << "repeat " << repeat;
    EXPECT_TENSOR_NEAR_ABS(out, expected, 1e-6);
  }
}

UNet2DConditionModel load_tiny_unet() {
  UNet2DConditionModel unet(UNetConfig::from_json(JsonConfig::load(testing::golden_path("sd_tiny/unet/config.json"))));
  load_state_dict(*unet, testing::golden_file("sd_tiny/unet/diffusion_pytorch_model.safetensors"));
  unet->eval();
  unet->to(testing::test_device());
  return unet;
}

TEST(UNet, MatchesDiffusers) {
  UNet2DConditionModel unet = load_tiny_unet();
  const SafetensorsFile io = testing::golden_file("unet_io.safetensors");
  at::NoGradGuard no_grad;
  const auto device = testing::test_device();
  const at::Tensor sample = io.tensor("sample").to(device), context = io.tensor("encoder_hidden_states").to(device);
  ActivationTrace trace;
  EXPECT_TENSOR_NEAR_REL(unet->forward(sample, io.tensor("timestep_scalar"), context, &trace),
                         io.tensor("out_scalar_t"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(unet->forward(sample, io.tensor("timesteps_batch"), context), io.tensor("out_batch_t"),
                         kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(unet->forward(io.tensor("sample_nonsquare").to(device), io.tensor("timestep_scalar"),
                                       io.tensor("encoder_hidden_states_nonsquare").to(device)),
                         io.tensor("out_nonsquare"), kFp32Tolerance);

  int compared = 0;
  for (const auto& [name, value] : trace) {
    if (!io.contains("intermediate." + name)) continue;
    SCOPED_TRACE(name);
    EXPECT_TENSOR_NEAR_REL(value, io.tensor("intermediate." + name), kFp32Tolerance);
    ++compared;
  }
  EXPECT_EQ(compared, 15);

  // The activations inside the first cross-attention block, computed from the traced input.
  auto& block0 = unet->down_blocks[0];
  const at::Tensor resnet0 = block0->resnets[0]->forward(trace.at("conv_in"), trace.at("time_embedding"));
  EXPECT_TENSOR_NEAR_REL(resnet0, io.tensor("intermediate.down_blocks.0.resnets.0"), kFp32Tolerance);
  auto& transformer = block0->attentions[0];
  EXPECT_TENSOR_NEAR_REL(transformer->forward(resnet0, context), io.tensor("intermediate.down_blocks.0.attentions.0"),
                         kFp32Tolerance);
  const at::Tensor tokens = transformer->proj_in_conv->forward(transformer->norm->forward(resnet0))
                                .permute({0, 2, 3, 1})
                                .reshape({2, 256, 32});
  auto& basic = transformer->transformer_blocks[0];
  const at::Tensor attn1 = basic->attn1->forward(basic->norm1->forward(tokens));
  EXPECT_TENSOR_NEAR_REL(attn1, io.tensor("intermediate.down_blocks.0.attentions.0.transformer_blocks.0.attn1"),
                         kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(basic->attn2->forward(basic->norm2->forward(tokens + attn1), context),
                         io.tensor("intermediate.down_blocks.0.attentions.0.transformer_blocks.0.attn2"),
                         kFp32Tolerance);
}

TEST(UNet, MatchesDiffusersInFloat64) {
  UNet2DConditionModel unet = load_tiny_unet();
  unet->to(at::kDouble);
  const SafetensorsFile io = testing::golden_file("unet_io.safetensors");
  at::NoGradGuard no_grad;
  const at::Tensor sample = io.tensor("sample").to(testing::test_device(), at::kDouble);
  const at::Tensor context = io.tensor("encoder_hidden_states").to(testing::test_device(), at::kDouble);
  EXPECT_TENSOR_NEAR_REL(unet->forward(sample, io.tensor("timestep_scalar"), context), io.tensor("out_scalar_t_f64"),
                         kFp64Tolerance);
  EXPECT_TENSOR_NEAR_REL(unet->forward(sample, io.tensor("timesteps_batch"), context), io.tensor("out_batch_t_f64"),
                         kFp64Tolerance);
}

TEST(UNet, FullSd15ConfigHasDiffusersKeysAndShapes) {
  const auto config = UNetConfig::from_json(JsonConfig::load(testing::golden_path("configs_full/sd15/unet/config.json")));
  const UNet2DConditionModel unet(config);  // parameters are allocated, never touched
  testing::expect_reference_layout(*unet, "configs_full/sd15_unet_state_dict_shapes.json");
}

}  // namespace
}  // namespace singleinsert
