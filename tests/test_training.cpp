// Training machinery: AdamW and gradient clipping against torch.optim.AdamW /
// clip_grad_norm_, the trainer's determinism, resuming after an interruption, and which weights
// each stage may change.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "golden.h"
#include "singleinsert/core/interrupt.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/training/adamw.h"
#include "singleinsert/training/trainer.h"

namespace singleinsert {
namespace {

TEST(AdamW, MatchesTorchOptimAdamWWithClipping) {
  // Reference: torch 1.13, AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01) with
  // clip_grad_norm_(params, 1.0) before each of three steps with these gradients.
  at::Tensor p = at::tensor({1.0f, -2.0f, 0.5f});
  at::Tensor q = at::tensor({0.3f, 0.1f, -0.2f, 0.4f}).view({2, 2});
  AdamWOptions options;
  options.lr = 0.1;
  AdamW optimizer({p, q}, options);
  const std::vector<std::pair<std::vector<float>, std::vector<float>>> grads = {
      {{0.5f, -1.0f, 2.0f}, {1.0f, 0.0f, 0.5f, -0.5f}},
      {{-0.25f, 0.75f, 1.0f}, {0.2f, 0.3f, -0.1f, 0.9f}},
      {{3.0f, -2.0f, 0.1f}, {-1.0f, 2.0f, 0.0f, 0.4f}}};
  const double reference_norms[] = {2.598076105117798, 1.6046806573867798, 4.262628078460693};
  for (size_t i = 0; i < grads.size(); ++i) {
    p.mutable_grad() = at::tensor(grads[i].first);
    q.mutable_grad() = at::tensor(grads[i].second).view({2, 2});
    EXPECT_NEAR(clip_grad_norm({p, q}, 1.0), reference_norms[i], 1e-6);
    optimizer.step();
    optimizer.zero_grad();
  }
  EXPECT_TENSOR_NEAR_ABS(p, at::tensor({0.8303661346435547f, -1.87899911403656f, 0.22194939851760864f}), 1e-6);
  EXPECT_TENSOR_NEAR_ABS(q, at::tensor({0.08682723343372345f, -0.05526971071958542f, -0.3715152442455292f,
                                        0.40286293625831604f}).view({2, 2}), 1e-6);
  EXPECT_EQ(optimizer.steps_taken(), 3);
}

// A small run on sd_tiny with a small image encoder, so that the test takes seconds.
struct TinyRun {
  std::shared_ptr<ModelBundle> bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  TrainingConfig config;
  PreparedSource source;
  at::Tensor trigger_ids, class_ids;

  TinyRun() {
    config.encoder.image_size = 32;
    config.encoder.patch_size = 16;
    config.encoder.encoder.hidden_size = 32;
    config.encoder.encoder.intermediate_size = 64;
    config.encoder.encoder.num_hidden_layers = 2;
    config.encoder.encoder.num_attention_heads = 4;
    config.stage1 = {4, 2, 1e-3};
    config.stage2 = {3, 2, 1e-3};
    config.checkpoint_every = 0;
    const SafetensorsFile inputs = testing::golden_file("singleinsert_losses/inputs.safetensors");
    // Half the golden's size (32 px, 16x16 latents) keeps the runs short.
    source.pixels = at::avg_pool2d(inputs.tensor("pixel_values").narrow(0, 0, 1), 2);
    source.mask_latent = at::avg_pool2d(inputs.tensor("mask_latent").narrow(0, 0, 1), 2);
    at::Generator generator = make_cpu_generator(11);
    source.cond_pixels = at::rand({1, 3, 32, 32}, generator) * 2 - 1;
    bundle->tokenizer.add_token("*");
    bundle->text_encoder->resize_token_embeddings(bundle->tokenizer.vocab_size());
    trigger_ids = tokenize_prompts(bundle->tokenizer, {"* teddy bear"});
    class_ids = tokenize_prompts(bundle->tokenizer, {"teddy bear"});
  }

  ClipVisionModel encoder() const {
    ClipVisionConfig c = config.encoder;
    c.projection_dim = 32;
    ClipVisionModel model(c);
    at::Generator generator = make_cpu_generator(config.seed);
    model->init_like_openai(generator);
    return model;
  }

  std::unique_ptr<SingleInsertTrainer> trainer() const {
    return std::make_unique<SingleInsertTrainer>(base_model(*bundle), encoder(), config, source, trigger_ids, class_ids);
  }
};

std::map<std::string, at::Tensor> clone_all(const torch::nn::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, tensor] : module_tensors(module)) out[name] = tensor.clone();
  return out;
}

void expect_unchanged(const torch::nn::Module& module, const std::map<std::string, at::Tensor>& before) {
  for (const auto& [name, tensor] : module_tensors(module)) ASSERT_TRUE(at::equal(tensor, before.at(name))) << name;
}

TEST(Trainer, StagesChangeOnlyTheirOwnWeightsAndAreDeterministic) {
  TinyRun run;
  const auto unet = clone_all(*run.bundle->unet), text = clone_all(*run.bundle->text_encoder),
             vae = clone_all(*run.bundle->vae);
  auto first = run.trainer();
  const at::Tensor initial = first->embedding();
  first->run_stage(1, {});
  EXPECT_GT((first->embedding() - initial).abs().max().item<double>(), 1e-4) << "stage I moves the embedding";
  EXPECT_EQ(first->lora(), nullptr);
  expect_unchanged(*run.bundle->unet, unet);
  expect_unchanged(*run.bundle->text_encoder, text);
  expect_unchanged(*run.bundle->vae, vae);

  first->run_stage(2, {});
  ASSERT_NE(first->lora(), nullptr);
  double largest_up = 0;
  for (const auto& [path, w] : first->lora_weights()) largest_up = std::max(largest_up, w.up.abs().max().item<double>());
  EXPECT_GT(largest_up, 1e-5) << "stage II trains the LoRA";
  expect_unchanged(*run.bundle->unet, unet);  // the base weights stay frozen: LoRA is on the side
  expect_unchanged(*run.bundle->text_encoder, text);

  const at::Tensor embedding = first->embedding();
  const std::vector<StepRecord> history = first->history();
  first.reset();  // detaches its LoRA from the shared base model

  auto second = run.trainer();  // same seed, same everything
  second->run_stage(1, {});
  second->run_stage(2, {});
  EXPECT_TRUE(at::equal(embedding, second->embedding()));
  ASSERT_EQ(history.size(), second->history().size());
  for (size_t i = 0; i < history.size(); ++i) EXPECT_EQ(history[i].loss, second->history()[i].loss);
}

TEST(Trainer, EmbeddingMaxNormBoundsTheEmbeddingItTrainsAndWrites) {
  TinyRun run;
  const double unbounded = run.trainer()->embedding().norm().item<double>();
  run.config.embedding_max_norm = 0.5 * unbounded;
  auto bounded = run.trainer();
  EXPECT_NEAR(bounded->embedding().norm().item<double>(), 0.5 * unbounded, 1e-5 * unbounded);
  bounded->run_stage(1, {});
  EXPECT_LE(bounded->embedding().norm().item<double>(), 0.5 * unbounded * (1 + 1e-5));
  // Recorded with the run, refused when negative; absent (as before it existed) when off.
  TrainingConfig reread;
  reread.apply_json(run.config.to_json(), "test");
  EXPECT_EQ(reread.embedding_max_norm, run.config.embedding_max_norm);
  EXPECT_EQ(TrainingConfig().to_json().find("embedding_max_norm"), std::string::npos);
  run.config.embedding_max_norm = -1;
  EXPECT_THROW(run.config.validate(), Error);
}

TEST(Trainer, ResumingAfterAnInterruptReproducesTheUninterruptedRun) {
  TinyRun run;
  auto reference = run.trainer();
  reference->run_stage(1, {});
  reference->run_stage(2, {});
  const at::Tensor expected_embedding = reference->embedding();
  const LoraWeightMap expected = reference->lora_weights();
  const double expected_loss = reference->history().back().loss;
  reference.reset();

  // Interrupt stage I after step 2 and stage II after step 1, resuming each from its checkpoint.
  TrainingState saved;
  TrainingCallbacks callbacks;
  callbacks.on_checkpoint = [&](const TrainingState& state) { saved = state; };
  int interrupt_at = 2;
  callbacks.on_step = [&](const StepRecord& record) {
    if (record.step == interrupt_at) raise(SIGINT);
  };
  install_interrupt_handler();
  auto interrupted = run.trainer();
  EXPECT_THROW(interrupted->run_stage(1, callbacks), TrainingInterrupted);
  clear_interrupt();
  EXPECT_EQ(saved.step, 2);
  interrupted.reset();
  auto resumed = run.trainer();
  resumed->run_stage(1, {}, &saved);
  interrupt_at = 1;
  EXPECT_THROW(resumed->run_stage(2, callbacks), TrainingInterrupted);
  clear_interrupt();
  resumed.reset();
  EXPECT_EQ(saved.stage, 2);
  EXPECT_EQ(saved.step, 1);
  auto resumed_again = run.trainer();
  load_state_dict(*resumed_again->encoder_module(), std::map<std::string, at::Tensor>(saved.trainable.begin(), saved.trainable.end()),
                  "checkpoint");
  resumed_again->run_stage(2, {}, &saved);

  // Bit-for-bit: the same per-step random draws, parameters and optimizer moments.
  EXPECT_TRUE(at::equal(resumed_again->embedding(), expected_embedding));
  const auto actual = resumed_again->lora_weights();
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [path, w] : expected) {
    EXPECT_TRUE(at::equal(actual.at(path).down, w.down)) << path;
    EXPECT_TRUE(at::equal(actual.at(path).up, w.up)) << path;
  }
  EXPECT_EQ(resumed_again->history().back().loss, expected_loss);
}

TEST(Trainer, Bf16AutocastKeepsTrainedWeightsAndMomentsInFloat32) {
  TinyRun run;
  auto fp32 = run.trainer();
  fp32->run_stage(1, {});
  const double fp32_first_loss = fp32->history().front().loss;
  fp32.reset();

  ExecutionOptions execution;
  execution.dtype = at::kBFloat16;
  run.bundle = load_model_bundle(testing::golden_path("sd_tiny"), execution);
  run.bundle->tokenizer.add_token("*");
  run.bundle->text_encoder->resize_token_embeddings(run.bundle->tokenizer.vocab_size());
  EXPECT_EQ(run.bundle->unet->conv_in->weight.scalar_type(), at::kBFloat16);
  auto bf16 = run.trainer();
  bf16->run_stage(1, {});
  bf16->run_stage(2, {});
  for (const auto& [name, tensor] : bf16->encoder_state()) ASSERT_EQ(tensor.scalar_type(), at::kFloat) << name;
  for (const auto& [path, w] : bf16->lora_weights()) ASSERT_EQ(w.up.scalar_type(), at::kFloat) << path;
  // The same step in bf16 gives nearly the same loss (same draws; bf16 has 8 bits of mantissa).
  EXPECT_NEAR(bf16->history().front().loss, fp32_first_loss, 0.05 * fp32_first_loss);
  ::testing::Test::RecordProperty("bf16_first_loss_relative_error",
                                  std::to_string(std::abs(bf16->history().front().loss / fp32_first_loss - 1)));
}

}  // namespace
}  // namespace singleinsert
