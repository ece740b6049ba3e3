// SingleInsert's losses and gradients against the reference step computed with the authors'
// train.py on sd_tiny (golden/singleinsert_losses): stage I, stage II in both readings of the
// semantic-loss reference, gradients w.r.t. the trigger embedding and every LoRA weight, and
// which parameters receive gradients at all.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "golden.h"
#include "singleinsert/core/random.h"
#include "singleinsert/formats/lora_layouts.h"
#include "singleinsert/models/lora.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/training/losses.h"

namespace singleinsert {
namespace {

// The README's error budget: ~1e-5 absolute on eps and x0 (channels-last vs contiguous rounding
// alone moves eps by 3.8e-6), ~1e-5 relative on losses and the star gradient, 1e-4 on LoRA grads.
constexpr double kEpsTolerance = 1e-5;
constexpr double kLossTolerance = 1e-5;
constexpr double kLoraGradTolerance = 1e-4;

struct Fixture {
  std::shared_ptr<ModelBundle> bundle;
  SafetensorsFile inputs = testing::golden_file("singleinsert_losses/inputs.safetensors");
  NoiseSchedule schedule{NoiseScheduleConfig::sd15()};
  LossInputs loss_inputs;

  Fixture() {
    bundle = load_model_bundle(testing::golden_path("sd_tiny"));
    // train.py adds the placeholder "_*_" (id 49408) and grows the token table to match.
    EXPECT_EQ(bundle->tokenizer.add_token("_*_"), inputs.tensor("placeholder_token_id").item<int64_t>());
    bundle->text_encoder->resize_token_embeddings(bundle->tokenizer.vocab_size());
    loss_inputs.z0 = inputs.tensor("z0");
    loss_inputs.noise = inputs.tensor("noise");
    loss_inputs.timesteps = inputs.tensor("timesteps");
    loss_inputs.mask = inputs.tensor("mask_latent");
    loss_inputs.star = inputs.tensor("star_embedding").set_requires_grad(true);
    loss_inputs.star_ids = inputs.tensor("input_ids_star_prompt").narrow(0, 0, 1);
    loss_inputs.class_ids = inputs.tensor("input_ids_class_prompt").narrow(0, 0, 1);
  }
};

void expect_no_model_gradients(ModelBundle& bundle) {
  for (auto* module : std::initializer_list<torch::nn::Module*>{bundle.unet.get(), bundle.text_encoder.get(), bundle.vae.get()})
    for (const auto& p : module->named_parameters())
      ASSERT_FALSE(p.value().grad().defined()) << p.key() << " received a gradient";
}

TEST(SingleInsertLosses, StageOneMatchesTrainPy) {
  Fixture f;
  EXPECT_TRUE(at::equal(f.schedule.alphas_cumprod, f.inputs.tensor("alphas_cumprod")));
  const SafetensorsFile golden = testing::golden_file("singleinsert_losses/stage1.safetensors");
  const LossOutputs out = singleinsert_losses(*f.bundle->unet, *f.bundle->text_encoder, f.schedule, nullptr,
                                              f.loss_inputs, LossSettings{});
  EXPECT_TENSOR_NEAR_ABS(out.x_t, f.inputs.tensor("x_t"), 1e-6);
  EXPECT_TENSOR_NEAR_ABS(out.enc_star[0], golden.tensor("enc_star")[0], kEpsTolerance);
  EXPECT_TENSOR_NEAR_ABS(out.enc_cls[0], golden.tensor("enc_cls")[0], kEpsTolerance);
  EXPECT_TENSOR_NEAR_ABS(out.eps_star, golden.tensor("eps_star"), kEpsTolerance);
  EXPECT_TENSOR_NEAR_ABS(out.eps_cls, golden.tensor("eps_cls"), kEpsTolerance);
  EXPECT_TENSOR_NEAR_REL(out.fg, golden.tensor("L_fg"), kLossTolerance);
  EXPECT_TENSOR_NEAR_REL(out.bg, golden.tensor("L_bg"), kLossTolerance);
  EXPECT_TENSOR_NEAR_REL(out.total, golden.tensor("loss"), kLossTolerance);
  out.total.backward();
  EXPECT_TENSOR_NEAR_REL(f.loss_inputs.star.grad(), golden.tensor("grad_star"), kLossTolerance);
  expect_no_model_gradients(*f.bundle);
}

TEST(SingleInsertLosses, StageTwoMatchesTrainPyInBothReadings) {
  Fixture f;
  const SafetensorsFile golden = testing::golden_file("singleinsert_losses/stage2.safetensors");
  const SafetensorsFile lora_file = testing::golden_file("singleinsert_losses/lora_singleinsert_format.safetensors");
  const LoraWeightMap weights = from_diffusers_processor_layout(read_all_tensors(lora_file), lora_file.path());
  EXPECT_EQ(weights.size(), 56u);  // 12 UNet attention modules x 4 + 2 text layers x 4
  auto layers = named_adaptable_layers(*f.bundle->unet, "unet");
  layers.merge(named_adaptable_layers(*f.bundle->text_encoder, "text_encoder"));
  auto lora = LoraNetwork::from_weights("golden", weights, layers, {f.bundle->unet.ptr(), f.bundle->text_encoder.ptr()},
                                        lora_file.path());
  for (auto& p : lora->parameters()) p.set_requires_grad(true);

  LossSettings settings;
  settings.stage2 = true;
  settings.sm_reference = SmReference::kLoraTextEncoder;  // what train.py does
  const LossOutputs out = singleinsert_losses(*f.bundle->unet, *f.bundle->text_encoder, f.schedule, lora.get(),
                                              f.loss_inputs, settings);
  EXPECT_TENSOR_NEAR_ABS(out.enc_star[0], golden.tensor("enc_star")[0], kEpsTolerance);
  EXPECT_TENSOR_NEAR_ABS(out.eps_star, golden.tensor("eps_star"), kEpsTolerance);
  EXPECT_TENSOR_NEAR_ABS(out.eps_cls, golden.tensor("eps_cls"), kEpsTolerance);
  EXPECT_TENSOR_NEAR_ABS(out.eps_ref, golden.tensor("eps_cls_ori"), kEpsTolerance);
  EXPECT_TENSOR_NEAR_REL(out.fg, golden.tensor("L_fg"), kLossTolerance);
  EXPECT_TENSOR_NEAR_REL(out.bg, golden.tensor("L_bg"), kLossTolerance);
  EXPECT_TENSOR_NEAR_REL(out.sm, golden.tensor("L_sm"), kLossTolerance);
  EXPECT_TENSOR_NEAR_REL(out.total, golden.tensor("loss"), kLossTolerance);
  out.total.backward();
  EXPECT_TENSOR_NEAR_REL(f.loss_inputs.star.grad(), golden.tensor("grad_star"), kLossTolerance);
  const SafetensorsFile grads = testing::golden_file("singleinsert_losses/stage2_lora_grads.safetensors");
  int checked = 0;
  for (const auto& [key, gradient] : to_diffusers_processor_layout(lora->gradients())) {
    ASSERT_TRUE(gradient.defined()) << key << " received no gradient";
    EXPECT_TENSOR_NEAR_REL(gradient, grads.tensor(key), kLoraGradTolerance);
    ++checked;
  }
  EXPECT_EQ(checked, 112);
  expect_no_model_gradients(*f.bundle);

  // The paper's reading: the reference uses the fully frozen model, text encoder included.
  settings.sm_reference = SmReference::kFrozen;
  const LossOutputs frozen = singleinsert_losses(*f.bundle->unet, *f.bundle->text_encoder, f.schedule, lora.get(),
                                                 f.loss_inputs, settings);
  EXPECT_TENSOR_NEAR_ABS(frozen.eps_ref, golden.tensor("variant_eps_cls_ori_frozen_te"), kEpsTolerance);
  EXPECT_TENSOR_NEAR_REL(frozen.bg, golden.tensor("variant_L_bg"), kLossTolerance);
  EXPECT_TENSOR_NEAR_REL(frozen.sm, golden.tensor("variant_L_sm"), kLossTolerance);
  EXPECT_TENSOR_NEAR_REL(frozen.total, golden.tensor("variant_loss"), kLossTolerance);
}

TEST(Lora, AttentionAdaptersMatchDiffusersAtEveryScale) {
  for (const std::string file : {"lora/attention_r4_a4.safetensors", "lora/attention_r4_a1.safetensors"}) {
    SCOPED_TRACE(file);
    const SafetensorsFile golden = testing::golden_file(file);
    AttentionOptions options;
    options.query_dim = 32;
    options.cross_attention_dim = 24;
    options.heads = 4;
    options.dim_head = 8;
    Attention attention(options);
    std::map<std::string, at::Tensor> base;
    LoraWeightMap lora_weights;
    const double alpha = std::stod(golden.metadata().at("network_alpha"));
    for (const auto& key : golden.keys()) {
      if (key.rfind("input.", 0) == 0 || key.rfind("output.", 0) == 0) continue;
      const size_t at = key.find(".lora_layer.");
      if (at == std::string::npos) {
        base[key] = golden.tensor(key);
      } else {
        auto& w = lora_weights["attention." + key.substr(0, at)];
        (key.find(".down.") != std::string::npos ? w.down : w.up) = golden.tensor(key);
        w.alpha = alpha;
      }
    }
    load_state_dict(*attention, base, file);
    auto network = LoraNetwork::from_weights("test", lora_weights, named_adaptable_layers(*attention, "attention"),
                                             {attention.ptr()}, file);
    at::NoGradGuard no_grad;
    for (const auto& [scale, name] : std::vector<std::pair<double, std::string>>{{1.0, "1_0"}, {0.5, "0_5"}, {0.0, "0_0"}}) {
      network->set_scale(scale);
      EXPECT_TENSOR_NEAR_REL(attention->forward(golden.tensor("input.hidden_states"), golden.tensor("input.encoder_hidden_states")),
                             golden.tensor("output.scale_" + name), 1e-5);
    }
    network->set_scale(1.0);
    {
      LoraDisabled off(network.get());
      EXPECT_TENSOR_NEAR_REL(attention->forward(golden.tensor("input.hidden_states"), golden.tensor("input.encoder_hidden_states")),
                             golden.tensor("output.scale_0_0"), 1e-6);
    }
  }
}

TEST(Lora, FreshAdaptersStartAsNoOpsAndDetach) {
  auto bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  auto layers = named_adaptable_layers(*bundle->unet, "unet");
  std::map<std::string, AdaptableLayer*> targets;
  for (const auto& [path, layer] : layers)
    if (is_unet_attention_projection(path)) targets[path] = layer;
  EXPECT_EQ(targets.size(), 48u);
  const SafetensorsFile io = testing::golden_file("unet_io.safetensors");
  at::NoGradGuard no_grad;
  const at::Tensor before = bundle->unet->forward(io.tensor("sample"), io.tensor("timestep_scalar"), io.tensor("encoder_hidden_states"));
  at::Generator generator = make_cpu_generator(0);
  {
    auto network = LoraNetwork::create("fresh", targets, {bundle->unet.ptr()}, 4, 4, generator);
    const at::Tensor with = bundle->unet->forward(io.tensor("sample"), io.tensor("timestep_scalar"), io.tensor("encoder_hidden_states"));
    EXPECT_TRUE(at::equal(with, before));  // up = 0
    EXPECT_NEAR(network->parameters()[0].std().item<double>(), 0.25, 0.05);  // down ~ N(0, 1/rank)
  }
  size_t attached = 0;
  for (const auto& [path, layer] : targets) attached += layer->adapters().size();
  EXPECT_EQ(attached, 0u);
}

}  // namespace
}  // namespace singleinsert
