#include "singleinsert/training/trainer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/interrupt.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/core/torch_compat.h"

#include <optional>

namespace singleinsert {

std::map<std::string, AdaptableLayer*> singleinsert_lora_targets(UNet2DConditionModelImpl& unet,
                                                                 ClipTextModelImpl& text_encoder) {
  std::map<std::string, AdaptableLayer*> targets;
  for (const auto& [path, layer] : named_adaptable_layers(unet, "unet"))
    if (is_unet_attention_projection(path)) targets[path] = layer;
  for (const auto& [path, layer] : named_adaptable_layers(text_encoder, "text_encoder"))
    if (is_text_attention_projection(path)) targets[path] = layer;
  return targets;
}

SingleInsertTrainer::SingleInsertTrainer(BaseModel base, ClipVisionModel encoder, const TrainingConfig& config,
                                         const PreparedSource& source, at::Tensor trigger_ids, at::Tensor class_ids)
    : base_(std::move(base)), encoder_(std::move(encoder)), config_(config), schedule_(base_.schedule) {
  const auto device = base_.device;
  encoder_->to(device, at::kFloat);
  encoder_->train();
  cond_pixels_ = source.cond_pixels.to(device);
  mask_ = source.mask_latent.to(device);
  trigger_ids_ = trigger_ids.to(device);
  class_ids_ = class_ids.to(device);
  // The VAE posterior of the source never changes: encode once, sample it every step.
  at::NoGradGuard no_grad;
  const auto vae_dtype = base_.vae->encoder->conv_in->weight.scalar_type();
  const VaePosterior posterior = base_.vae->encode(source.pixels.to(device, vae_dtype));
  posterior_mean_ = posterior.mean.to(at::kFloat);
  posterior_std_ = posterior.std.to(at::kFloat);
}

SingleInsertTrainer::~SingleInsertTrainer() = default;

void SingleInsertTrainer::run_stage(int stage, const TrainingCallbacks& callbacks, const TrainingState* resume,
                                    const LoraWeightMap* initial_lora) {
  const StageConfig& stage_config = stage == 1 ? config_.stage1 : config_.stage2;
  const auto device = base_.device;
  std::vector<at::Tensor> parameters = encoder_->parameters();
  for (auto& p : parameters) p.set_requires_grad(true);
  if (stage == 2 && !lora_) {
    auto targets = singleinsert_lora_targets(*base_.unet, *base_.text_encoder);
    const std::vector<std::shared_ptr<torch::nn::Module>> owners = {base_.unet.ptr(), base_.text_encoder.ptr()};
    const LoraWeightMap* start = resume ? &resume->lora : initial_lora;
    if (start && !start->empty()) {
      lora_ = LoraNetwork::from_weights("singleinsert", *start, targets, owners, "checkpoint");
    } else {
      at::Generator generator = make_cpu_generator(step_seed(config_.seed, 2, -1));
      lora_ = LoraNetwork::create("singleinsert", targets, owners, config_.lora_rank, config_.lora_alpha, generator);
    }
    lora_->to(device);
    for (auto& p : lora_->parameters()) p.set_requires_grad(true);
  }
  if (stage == 2) {
    const auto lora_parameters = lora_->parameters();
    parameters.insert(parameters.end(), lora_parameters.begin(), lora_parameters.end());
  }
  AdamWOptions adam;
  adam.lr = stage_config.lr;
  adam.beta1 = config_.beta1;
  adam.beta2 = config_.beta2;
  adam.eps = config_.adam_eps;
  adam.weight_decay = config_.weight_decay;
  AdamW optimizer(parameters, adam);

  int start_step = 0;
  if (resume) {
    if (resume->stage != stage) throw Error(fmt::format("the checkpoint is from stage {}, not {}", resume->stage, stage));
    load_state_dict(*encoder_, std::map<std::string, at::Tensor>(resume->encoder.begin(), resume->encoder.end()),
                    "checkpoint encoder");
    optimizer.load_state(std::map<std::string, at::Tensor>(resume->optimizer.begin(), resume->optimizer.end()),
                         "checkpoint optimizer");
    start_step = resume->step;
    history_ = resume->history;
  }

  auto snapshot = [&](int step) {
    TrainingState state;
    state.stage = stage;
    state.step = step;
    state.encoder = encoder_state();
    if (lora_) state.lora = lora_->weights();
    state.optimizer = optimizer.state();
    state.history = history_;
    return state;
  };

  LossSettings settings;
  settings.stage2 = stage == 2;
  settings.bg_weight = config_.bg_weight;
  settings.sm_weight = config_.sm_weight;
  settings.sm_reference = config_.sm_reference;
  const int64_t batch = stage_config.batch;
  const auto latent_shape = std::vector<int64_t>{batch, posterior_mean_.size(1), posterior_mean_.size(2), posterior_mean_.size(3)};
  const auto start = std::chrono::steady_clock::now();
  const float scaling = static_cast<float>(base_.vae->config().scaling_factor);

  for (int step = start_step; step < stage_config.steps; ++step) {
    at::Generator generator = make_cpu_generator(step_seed(config_.seed, stage, step));
    const at::Tensor vae_noise = randn_like_torch(latent_shape, generator, device);
    LossInputs inputs;
    inputs.noise = randn_like_torch(latent_shape, generator, device);
    inputs.timesteps = at::randint(0, schedule_.num_train_timesteps(), {batch}, generator, at::kLong).to(device);
    inputs.z0 = (posterior_mean_ + posterior_std_ * vae_noise) * scaling;
    inputs.mask = mask_;
    inputs.star = encoder_->forward(cond_pixels_).image_embeds[0];  // one encoder pass, shared by the batch (fp32)
    inputs.star_ids = trigger_ids_;
    inputs.class_ids = class_ids_;

    std::optional<compat::AutocastGuard> mixed_precision;
    if (base_.dtype != at::kFloat) mixed_precision.emplace(device.type(), base_.dtype);
    const LossOutputs losses = singleinsert_losses(*base_.unet, *base_.text_encoder, schedule_, lora_.get(),
                                                   inputs, settings);
    mixed_precision.reset();
    const double loss = losses.total.item<double>();
    if (!std::isfinite(loss))
      throw TrainingDiverged(fmt::format("the loss became {} at stage {} step {}", std::isnan(loss) ? "NaN" : "infinite",
                                         stage == 1 ? "I" : "II", step + 1),
                             stage, step + 1);
    losses.total.backward();
    StepRecord record;
    record.stage = stage;
    record.step = step + 1;
    record.loss = loss;
    record.fg = losses.fg.item<double>();
    record.bg = losses.bg.item<double>();
    record.sm = losses.sm.item<double>();
    record.grad_norm = clip_grad_norm(parameters, config_.max_grad_norm);
    record.lr = stage_config.lr;
    optimizer.step();
    optimizer.zero_grad();
    record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    history_.push_back(record);
    if (callbacks.on_step) callbacks.on_step(record);
    if (callbacks.progress)
      callbacks.progress({stage == 1 ? "stage I" : "stage II", record.step, stage_config.steps, record.seconds,
                          {{"loss", record.loss}, {"fg", record.fg}, {"bg", record.bg}}});
    const bool periodic = config_.checkpoint_every > 0 && record.step % config_.checkpoint_every == 0 &&
                          record.step < stage_config.steps;
    if (interrupt_requested()) {
      if (callbacks.on_checkpoint) callbacks.on_checkpoint(snapshot(record.step));
      throw TrainingInterrupted(stage, record.step);
    }
    if (periodic && callbacks.on_checkpoint) callbacks.on_checkpoint(snapshot(record.step));
  }
  for (auto& p : parameters) p.set_requires_grad(false);
}

at::Tensor SingleInsertTrainer::embedding() {
  at::NoGradGuard no_grad;
  encoder_->eval();
  const at::Tensor embedding = encoder_->forward(cond_pixels_).image_embeds.cpu();  // [1, D]
  encoder_->train();
  return embedding;
}

NamedTensors SingleInsertTrainer::encoder_state() const {
  NamedTensors out;
  for (const auto& [name, tensor] : state_dict(*encoder_)) out.emplace_back(name, tensor.cpu().clone());
  return out;
}

LoraWeightMap SingleInsertTrainer::lora_weights() const { return lora_ ? lora_->weights() : LoraWeightMap{}; }

}  // namespace singleinsert
