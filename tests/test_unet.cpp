// UNet2DConditionModel against diffusers (golden/unet_io.safetensors on sd_tiny/unet): a scalar
// timestep, per-sample timesteps, a non-square latent, every top-level intermediate activation,
// float64, and the full SD v1.5 key layout.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <functional>

#include "golden.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/models/clip_config.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/recomputed_attention.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/models/unet.h"
#include "singleinsert/models/vae.h"
#include "singleinsert/pipeline/memory_estimate.h"

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

// Slices keep the score matrix within budget. Groups of heads change no bit: self- and
// cross-attention shapes of SD v1.5's 32x32 latent level, with a causal mask as CLIP's, in float32
// and bfloat16. Groups of queries (one head over budget) agree to float32 rounding: OpenBLAS's
// GEMM gives a row different last bits depending on how many rows it is given.
TEST(Attention, SlicesOfHeadsAreBitIdenticalAndSlicesOfQueriesAgree) {
  struct BudgetGuard {
    int64_t saved = compat::attention_score_budget();
    ~BudgetGuard() { compat::set_attention_score_budget(saved); }
  } guard;
  at::Generator generator = make_cpu_generator(7);
  const at::Tensor q = at::randn({2, 8, 1024, 40}, generator), self_kv = at::randn({2, 8, 1024, 40}, generator),
                   text_kv = at::randn({2, 8, 77, 40}, generator);
  const at::Tensor causal = at::full({1024, 1024}, -INFINITY).triu(1).view({1, 1, 1024, 1024});
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    for (const auto& [kv, mask] : std::vector<std::pair<at::Tensor, c10::optional<at::Tensor>>>{
             {self_kv, c10::nullopt}, {text_kv, c10::nullopt}, {self_kv, causal}}) {
      const at::Tensor qd = q.to(dtype), kvd = kv.to(dtype);
      const c10::optional<at::Tensor> md = mask ? c10::optional<at::Tensor>(mask->to(dtype)) : c10::nullopt;
      const std::string what = std::string(c10::toString(dtype)) + " keys " + std::to_string(kv.size(2)) + (mask ? " masked" : "");
      const int64_t head_bytes = 1024 * kv.size(2) * qd.element_size();
      compat::set_attention_score_budget(int64_t{1} << 40);
      const at::Tensor whole = compat::scaled_dot_product_attention(qd, kvd, kvd, 0.158, md);
      compat::set_attention_score_budget(3 * head_bytes);  // 3 of the 16 heads a slice
      ASSERT_EQ(compat::attention_slices(16, 1024, kv.size(2), qd.element_size()).heads, 3);
      EXPECT_TRUE(at::equal(whole, compat::scaled_dot_product_attention(qd, kvd, kvd, 0.158, md))) << what;
      compat::set_attention_score_budget(head_bytes * 100 / 1024);  // 100 queries of one head a slice
      const compat::AttentionSlices rows = compat::attention_slices(16, 1024, kv.size(2), qd.element_size());
      ASSERT_EQ(rows.heads, 1);
      ASSERT_EQ(rows.queries, 100);
      const at::Tensor sliced = compat::scaled_dot_product_attention(qd, kvd, kvd, 0.158, md);
      if (dtype == at::kFloat) EXPECT_TENSOR_NEAR_REL(sliced, whole, 1e-6);
      else EXPECT_TRUE(at::equal(whole, sliced)) << what;  // bf16 products go through a row-stable kernel
    }
  }
}

// Training attention keeps q, k and v and recomputes the probabilities in the backward pass: its
// values and its gradients must equal plain autograd's through the same operations, with and
// without the float32 softmax, in float32 and in bf16.
TEST(Attention, RecomputedGradientsEqualPlainAutograd) {
  at::Generator generator = make_cpu_generator(11);
  const double scale = 1.0 / std::sqrt(40.0);
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    for (const bool upcast : {false, true}) {
      const at::Tensor q0 = at::randn({4, 300, 40}, generator).to(dtype), k0 = at::randn({4, 200, 40}, generator).to(dtype),
                       v0 = at::randn({4, 200, 40}, generator).to(dtype), grad = at::randn({4, 300, 40}, generator).to(dtype);
      auto leaves = [&] {
        return std::vector<at::Tensor>{q0.clone().requires_grad_(), k0.clone().requires_grad_(), v0.clone().requires_grad_()};
      };
      auto plain = leaves();
      const at::Tensor scores = at::zeros({4, 300, 200}, q0.options())
                                    .baddbmm_(plain[0], plain[1].transpose(-1, -2), 0.0, scale);
      const at::Tensor probs = upcast && dtype != at::kFloat ? scores.to(at::kFloat).softmax(-1).to(dtype) : scores.softmax(-1);
      const at::Tensor expected = at::bmm(probs, plain[2]);
      expected.backward(grad);
      auto recomputed = leaves();
      const at::Tensor out = recomputed_attention(recomputed[0], recomputed[1], recomputed[2], scale, upcast);
      out.backward(grad);
      const std::string what = std::string(c10::toString(dtype)) + (upcast ? " float32 softmax" : "");
      EXPECT_TRUE(at::equal(out, expected)) << what;
      // The same products, though q's gradient may reach the GEMM transposed; measured bit-identical
      // here in both dtypes, so the bound is float32 rounding for both.
      const double tolerance = 1e-6;
      for (int i = 0; i < 3; ++i) {
        SCOPED_TRACE(what + " input " + std::to_string(i));
        EXPECT_TENSOR_NEAR_REL(recomputed[i].grad(), plain[i].grad(), tolerance);
      }
      // Through compat::scaled_dot_product_attention, the path every model takes while training.
      auto via_models = leaves();
      const at::Tensor routed = compat::scaled_dot_product_attention(via_models[0].unsqueeze(0), via_models[1].unsqueeze(0),
                                                                     via_models[2].unsqueeze(0), scale, c10::nullopt, upcast);
      EXPECT_TRUE(at::equal(routed.squeeze(0), expected)) << what;
    }
  }
}

// The config fuzzer's seeds and findings (fuzz/corpus/configs, fuzz/regressions/configs): every
// config reader either builds a config or throws singleinsert::Error. The first finding was a
// float beyond int's range cast to int (undefined behaviour) for cross_attention_dim.
TEST(UNetConfig, FuzzCorpusAndRegressionsBuildOrFailCleanly) {
  namespace fs = std::filesystem;
  int files = 0;
  for (const char* folder : {"fuzz/corpus/configs", "fuzz/regressions/configs"}) {
    for (const auto& entry : fs::directory_iterator(fs::path(SINGLEINSERT_SOURCE_DIR) / folder)) {
      ++files;
      const std::string text = read_file(entry.path().string());
      const std::vector<std::function<void()>> readers = {
          [&] { UNetConfig::from_json(JsonConfig::parse(text, "unet")).validate(); },
          [&] { (void)ClipTextConfig::from_json(JsonConfig::parse(text, "clip text")); },
          [&] { (void)ClipVisionConfig::from_json(JsonConfig::parse(text, "clip vision")); }};
      for (const auto& read : readers) {
        try {
          read();
        } catch (const Error&) {
        } catch (const std::exception& other) {
          ADD_FAILURE() << entry.path() << ": " << other.what();
        }
      }
    }
  }
  EXPECT_GE(files, 5);
  const JsonConfig huge = JsonConfig::parse(R"({"cross_attention_dim": 1e46, "layers_per_block": 4294967296})", "huge");
  EXPECT_THROW(huge.get_int("cross_attention_dim", 0), Error);
  EXPECT_THROW(huge.get_int("layers_per_block", 0), Error);
  EXPECT_EQ(JsonConfig::parse(R"({"a": 32.0, "b": 2147483647})", "whole").get_int("a", 0), 32);
  EXPECT_EQ(JsonConfig::parse(R"({"a": 32.0, "b": 2147483647})", "whole").get_int("b", 0), 2147483647);
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

// The generation estimate must stay at or above the peaks measured on this machine
// (singleinsert-bench --arch sd15, float32, CPU, 2 threads, tcmalloc; docs/robustness.md), or
// generate would start runs that cannot finish.
TEST(MemoryEstimate, StaysAboveThePeaksMeasuredForSd15) {
  const int64_t resident_weights = int64_t{4234} << 20;  // the bench's "resident after load"
  struct Measured {
    const char* run;
    int64_t size;
    bool unet_only, vae_only;
    double peak_mb;
  };
  const Measured runs[] = {{"sample_1024, DDIM 2 steps", 1024, false, false, 10504},
                           {"sample_768, DDIM 2 steps", 768, false, false, 8436},
                           {"unet_forward 512, batch 2", 512, true, false, 7464},
                           {"vae_decode 512", 512, false, true, 5636}};
  for (const Measured& m : runs) {
    GenerationShape shape;
    shape.width = shape.height = m.size;
    MemoryEstimate estimate = estimate_generation_memory(UNetConfig::sd15(), VaeConfig(), shape, resident_weights);
    if (m.unet_only) estimate.vae_decode = 0;
    if (m.vae_only) estimate.unet = 0;
    const double estimated_mb = static_cast<double>(estimate.peak()) / (1 << 20);
    ::testing::Test::RecordProperty(std::string(m.run) + " estimated MB", std::to_string(estimated_mb));
    EXPECT_GE(estimated_mb, m.peak_mb) << m.run;
    EXPECT_LE(estimated_mb, m.peak_mb * 1.25) << m.run << ": too loose to be useful";
  }
}

}  // namespace
}  // namespace singleinsert
