// AutoencoderKL against diffusers (golden/vae_io.safetensors on sd_tiny/vae): the posterior,
// decoding (square and non-square), every hooked intermediate, float64, and the SD v1.5 layout.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "golden.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/models/vae.h"

namespace singleinsert {
namespace {

const double kFp32Tolerance = testing::device_tolerance(1e-5);
// diffusers' VAE attention casts its scores to float32 before the softmax (upcast_softmax)
// even in a float64 run, so the float64 reference carries float32 rounding from that one op.
constexpr double kFp64Tolerance = 1e-7;

AutoencoderKL load_tiny_vae() {
  AutoencoderKL vae(VaeConfig::from_json(JsonConfig::load(testing::golden_path("sd_tiny/vae/config.json"))));
  load_state_dict(*vae, testing::golden_file("sd_tiny/vae/diffusion_pytorch_model.safetensors"));
  vae->eval();
  vae->to(testing::test_device());
  return vae;
}

TEST(Vae, MatchesDiffusers) {
  AutoencoderKL vae = load_tiny_vae();
  const SafetensorsFile io = testing::golden_file("vae_io.safetensors");
  at::NoGradGuard no_grad;
  ActivationTrace trace;
  const auto device = testing::test_device();
  const VaePosterior posterior = vae->encode(io.tensor("sample").to(device), &trace);
  EXPECT_TENSOR_NEAR_REL(posterior.mean, io.tensor("posterior_mean"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(posterior.logvar, io.tensor("posterior_logvar"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(posterior.std, io.tensor("posterior_std"), kFp32Tolerance);
  const at::Tensor latent = posterior.mean + posterior.std * io.tensor("noise").to(device);
  EXPECT_TENSOR_NEAR_REL(latent, io.tensor("latent"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(vae->decode(io.tensor("latent").to(device), &trace), io.tensor("decoded"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(vae->decode(io.tensor("latent_nonsquare").to(device)), io.tensor("decoded_nonsquare"),
                         kFp32Tolerance);
  int compared = 0;
  for (const auto& [name, value] : trace) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(io.contains("intermediate." + name));
    EXPECT_TENSOR_NEAR_REL(value, io.tensor("intermediate." + name), kFp32Tolerance);
    ++compared;
  }
  EXPECT_EQ(compared, 12);
}

TEST(Vae, MatchesDiffusersInFloat64) {
  AutoencoderKL vae = load_tiny_vae();
  vae->to(at::kDouble);
  const SafetensorsFile io = testing::golden_file("vae_io.safetensors");
  at::NoGradGuard no_grad;
  const auto device = testing::test_device();
  const VaePosterior posterior = vae->encode(io.tensor("sample").to(device, at::kDouble));
  EXPECT_TENSOR_NEAR_REL(posterior.mean, io.tensor("posterior_mean_f64"), kFp64Tolerance);
  EXPECT_TENSOR_NEAR_REL(posterior.logvar, io.tensor("posterior_logvar_f64"), kFp64Tolerance);
  // The reference decoded its own float64 latent, which is not stored: compare the decoder at
  // the float32 latent's scale instead.
  EXPECT_TENSOR_NEAR_REL(vae->decode(io.tensor("latent").to(device, at::kDouble)), io.tensor("decoded_f64"), 1e-5);
}

TEST(Vae, LegacyAttentionNamesLoad) {
  const SafetensorsFile file = testing::golden_file("sd_tiny/vae/diffusion_pytorch_model.safetensors");
  std::map<std::string, at::Tensor> legacy;
  for (const auto& key : file.keys()) {
    std::string old_key = key;
    for (const auto& [now, before] : {std::pair<std::string, std::string>{".to_q.", ".query."},
                                      {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}})
      if (old_key.find("attentions.0" + now) != std::string::npos)
        old_key.replace(old_key.find("attentions.0" + now) + 12, now.size(), before);
    legacy[old_key] = file.tensor(key);
  }
  ASSERT_TRUE(legacy.count("encoder.mid_block.attentions.0.query.weight"));
  AutoencoderKL vae(VaeConfig::from_json(JsonConfig::load(testing::golden_path("sd_tiny/vae/config.json"))));
  LoadOptions options;
  options.rename = rename_legacy_vae_key;
  load_state_dict(*vae, legacy, "legacy", options);
  EXPECT_TRUE(at::equal(vae->encoder->mid_block->attentions[0]->to_q->weight,
                        file.tensor("encoder.mid_block.attentions.0.to_q.weight")));
}

TEST(Vae, FullSd15ConfigHasDiffusersKeysAndShapes) {
  const auto config = VaeConfig::from_json(JsonConfig::load(testing::golden_path("configs_full/sd15/vae/config.json")));
  const AutoencoderKL vae(config);
  testing::expect_reference_layout(*vae, "configs_full/sd15_vae_state_dict_shapes.json");
}

}  // namespace
}  // namespace singleinsert
