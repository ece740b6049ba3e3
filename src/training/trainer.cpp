#include "singleinsert/training/trainer.h"

#include <ATen/ATen.h>

#include <optional>

#include "singleinsert/core/random.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/training/attention_loss.h"
#include "singleinsert/training/losses.h"

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

// One stage as the step loop sees it: the encoder (and in stage II the LoRA) trained on
// SingleInsert's losses.
class SingleInsertTrainer::Stage : public TrainingMethod {
 public:
  Stage(SingleInsertTrainer& trainer, int stage) : t_(trainer), stage_(stage) {}

  std::vector<at::Tensor> parameters() override {
    std::vector<at::Tensor> parameters = t_.encoder_->parameters();
    if (stage_ == 2)
      for (const auto& p : t_.lora_->parameters()) parameters.push_back(p);
    return parameters;
  }

  LossTerms loss(int, at::Generator& generator) override {
    const auto device = t_.base_.device;
    const int64_t batch = (stage_ == 1 ? t_.config_.stage1 : t_.config_.stage2).batch;
    const auto& mean = t_.posterior_mean_;
    const std::vector<int64_t> latent_shape = {batch, mean.size(1), mean.size(2), mean.size(3)};
    const float scaling = static_cast<float>(t_.base_.vae->config().scaling_factor);
    const at::Tensor vae_noise = randn_like_torch(latent_shape, generator, device);
    LossInputs inputs;
    inputs.noise = randn_like_torch(latent_shape, generator, device);
    inputs.timesteps = at::randint(0, t_.schedule_.num_train_timesteps(), {batch}, generator, at::kLong).to(device);
    inputs.z0 = (mean + t_.posterior_std_ * vae_noise) * scaling;
    inputs.mask = t_.mask_;
    inputs.star = t_.bounded(t_.encoder_->forward(t_.cond_pixels_).image_embeds[0]);  // one pass, shared by the batch (fp32)
    inputs.star_ids = t_.trigger_ids_;
    inputs.class_ids = t_.class_ids_;

    LossSettings settings;
    settings.stage2 = stage_ == 2;
    settings.bg_weight = t_.config_.bg_weight;
    settings.sm_weight = t_.config_.sm_weight;
    settings.sm_reference = t_.config_.sm_reference;
    std::optional<AttentionLossHook> attention;
    if (t_.config_.attn_weight > 0) {
      if (!t_.reference_states_.defined()) throw Error("--attn-weight needs the reference prompt (set_attention_reference)");
      const auto positions = at::TensorOptions().dtype(at::kLong).device(device);
      attention.emplace(t_.attention_layers_, t_.reference_states_.expand({batch, -1, -1}), at::full({batch}, 1, positions),
                        at::full({batch}, t_.class_position_, positions));
      settings.star_hook = &*attention;
    }
    std::optional<compat::AutocastGuard> mixed_precision;
    if (t_.base_.dtype != at::kFloat) mixed_precision.emplace(device.type(), t_.base_.dtype);
    const LossOutputs losses = singleinsert_losses(*t_.base_.unet, *t_.base_.text_encoder, t_.schedule_,
                                                   t_.lora_.get(), inputs, settings);
    if (!attention) return {losses.total, {{"fg", losses.fg}, {"bg", losses.bg}, {"sm", losses.sm}}};
    const at::Tensor attn = attention->loss();
    return {losses.total + attn * t_.config_.attn_weight,
            {{"fg", losses.fg}, {"bg", losses.bg}, {"sm", losses.sm}, {"attn", attn}}};
  }

  void save_state(TrainingState& state) const override {
    state.trainable = t_.encoder_state();
    if (t_.lora_) state.lora = t_.lora_->weights();
  }

  void load_state(const TrainingState& state) override {
    load_state_dict(*t_.encoder_, std::map<std::string, at::Tensor>(state.trainable.begin(), state.trainable.end()),
                    "checkpoint encoder");
  }

  std::vector<std::string> progress_terms() const override {
    return t_.config_.attn_weight > 0 ? std::vector<std::string>{"fg", "bg", "attn"} : std::vector<std::string>{"fg", "bg"};
  }

 private:
  SingleInsertTrainer& t_;
  int stage_;
};

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

void SingleInsertTrainer::set_attention_reference(const at::Tensor& reference_ids, int64_t class_position) {
  at::NoGradGuard no_grad;
  LoraDisabled frozen(lora_.get());
  reference_states_ = base_.text_encoder->forward(reference_ids.to(base_.device)).last_hidden_state.to(at::kFloat);
  class_position_ = class_position;
  attention_layers_ = attention_loss_layers(*base_.unet, config_.attn_layers);
}

void SingleInsertTrainer::run_stage(int stage, const TrainingCallbacks& callbacks, const TrainingState* resume,
                                    const LoraWeightMap* initial_lora) {
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
    lora_->to(base_.device);
  }
  const StageConfig& stage_config = stage == 1 ? config_.stage1 : config_.stage2;
  StepLoopOptions options;
  options.stage = stage;
  options.steps = stage_config.steps;
  options.adam = {stage_config.lr, config_.beta1, config_.beta2, config_.adam_eps, config_.weight_decay};
  options.max_grad_norm = config_.max_grad_norm;
  options.seed = config_.seed;
  options.checkpoint_every = config_.checkpoint_every;
  options.label = stage == 1 ? "stage I" : "stage II";
  Stage method(*this, stage);
  std::vector<StepRecord> records = run_steps(method, options, callbacks, resume);
  if (resume) history_ = std::move(records);  // a checkpoint's history holds this stage's records so far
  else history_.insert(history_.end(), records.begin(), records.end());
}

at::Tensor SingleInsertTrainer::bounded(const at::Tensor& embedding) const {
  const double max_norm = config_.embedding_max_norm;
  if (max_norm <= 0) return embedding;
  // Scaled, not clipped per element: the direction is kept, and the gradient reaches the norm too.
  return embedding * (max_norm / embedding.norm(2, -1, true).clamp_min(max_norm));
}

at::Tensor SingleInsertTrainer::embedding() {
  at::NoGradGuard no_grad;
  encoder_->eval();
  const at::Tensor embedding = bounded(encoder_->forward(cond_pixels_).image_embeds).cpu();  // [1, D]
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
