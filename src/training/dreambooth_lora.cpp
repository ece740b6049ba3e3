#include "singleinsert/training/dreambooth_lora.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <optional>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/training/losses.h"
#include "singleinsert/training/textual_inversion.h"

namespace singleinsert {

void DreamBoothLoraConfig::apply_json(const std::string& text, const std::string& origin) {
  const JsonConfig json = JsonConfig::parse(text, origin);
  const std::string method = json.get_string("method", "dreambooth-lora");
  if (method != "dreambooth-lora") throw Error(fmt::format("{}: a {} preset, not dreambooth-lora", origin, method));
  std::vector<std::string> known = {"description", "method", "resolution", "steps", "batch", "learning_rate",
                                     "lora_rank", "train_text_encoder", "prior_images", "prior_loss_weight"};
  known.insert(known.end(), StepSettings::keys().begin(), StepSettings::keys().end());
  json.require_known_keys(known);
  resolution = json.get_int("resolution", resolution);
  steps = json.get_int("steps", steps);
  batch = json.get_int("batch", batch);
  learning_rate = json.get_double("learning_rate", learning_rate);
  lora_rank = json.get_int("lora_rank", lora_rank);
  train_text_encoder = json.get_bool("train_text_encoder", train_text_encoder);
  prior_images = json.get_int("prior_images", prior_images);
  prior_loss_weight = json.get_double("prior_loss_weight", prior_loss_weight);
  step.read(json);
}

std::string DreamBoothLoraConfig::to_json() const {
  nlohmann::json json = {{"method", "dreambooth-lora"},
                         {"resolution", resolution},
                         {"steps", steps},
                         {"batch", batch},
                         {"learning_rate", learning_rate},
                         {"lora_rank", lora_rank},
                         {"train_text_encoder", train_text_encoder},
                         {"prior_images", prior_images},
                         {"prior_loss_weight", prior_loss_weight}};
  step.write(json);
  return json.dump(2);
}

void DreamBoothLoraConfig::validate() const {
  if (steps < 0 || batch < 1 || !(learning_rate > 0))
    throw Error(fmt::format("steps {} must be >= 0, batch {} >= 1 and the learning rate {} > 0", steps, batch,
                            learning_rate));
  if (resolution < 8) throw Error(fmt::format("--resolution {} is too small", resolution));
  if (lora_rank < 1) throw Error(fmt::format("--lora-rank must be at least 1, got {}", lora_rank));
  if (prior_images < 0 || prior_images > 10000)
    throw Error(fmt::format("--prior-images must be between 0 and 10000, got {}", prior_images));
  if (!(prior_loss_weight >= 0)) throw Error("prior_loss_weight must not be negative");
  step.validate();
}

DreamBoothLosses dreambooth_loss(UNet2DConditionModelImpl& unet, const NoiseSchedule& schedule, const at::Tensor& z0,
                                 const at::Tensor& noise, const at::Tensor& timesteps, const at::Tensor& states,
                                 int64_t instance_rows, double prior_loss_weight) {
  const at::ScalarType dtype = unet.conv_in->weight.scalar_type();
  const at::Tensor x_t = add_noise(schedule, z0, noise, timesteps);
  const at::Tensor eps = unet.forward(x_t.to(dtype), timesteps, states.to(dtype)).to(at::kFloat);
  DreamBoothLosses out;
  const int64_t rows = z0.size(0);
  out.instance = (eps.narrow(0, 0, instance_rows) - noise.narrow(0, 0, instance_rows)).pow(2).mean();
  if (rows > instance_rows) {
    const int64_t prior_rows = rows - instance_rows;
    out.prior = (eps.narrow(0, instance_rows, prior_rows) - noise.narrow(0, instance_rows, prior_rows)).pow(2).mean();
    out.total = out.instance + out.prior * prior_loss_weight;
  } else {
    out.prior = at::zeros({}, out.instance.options());
    out.total = out.instance;
  }
  return out;
}

std::map<std::string, AdaptableLayer*> dreambooth_lora_targets(UNet2DConditionModelImpl& unet,
                                                               ClipTextModelImpl* text_encoder) {
  std::map<std::string, AdaptableLayer*> targets;
  for (const auto& [path, layer] : named_adaptable_layers(unet, "unet"))
    if (is_unet_attention_projection(path)) targets[path] = layer;
  if (text_encoder)
    for (const auto& [path, layer] : named_adaptable_layers(*text_encoder, "text_encoder"))
      if (is_text_attention_projection(path)) targets[path] = layer;
  return targets;
}

DreamBoothLora::DreamBoothLora(BaseModel base, const DreamBoothLoraConfig& config, const at::Tensor& instance,
                               const at::Tensor& class_images, at::Tensor instance_ids, at::Tensor class_ids,
                               int64_t first_id, at::Tensor vectors, const LoraWeightMap* lora)
    : base_(std::move(base)), config_(config), schedule_(base_.schedule), first_id_(first_id) {
  const auto device = base_.device;
  instance_ids_ = instance_ids.to(device);
  class_ids_ = class_ids.to(device);
  if (vectors.defined()) vectors_ = vectors.to(device, at::kFloat);
  const auto targets =
      dreambooth_lora_targets(*base_.unet, config_.train_text_encoder ? base_.text_encoder.get() : nullptr);
  const std::vector<std::shared_ptr<torch::nn::Module>> owners = {base_.unet.ptr(), base_.text_encoder.ptr()};
  if (lora && !lora->empty()) {
    lora_ = LoraNetwork::from_weights("dreambooth", *lora, targets, owners, "checkpoint");
  } else {
    at::Generator generator = make_cpu_generator(step_seed(config_.step.seed, 2, -1));
    lora_ = LoraNetwork::create("dreambooth", targets, owners, config_.lora_rank, config_.lora_rank, generator);
  }
  lora_->to(device);
  // The posteriors never change: encode every image once, sample them every step.
  at::NoGradGuard no_grad;
  if (!config_.train_text_encoder) {  // nor, with a frozen text encoder, do the prompts' states
    instance_states_ = prompt_states(instance_ids_);
    class_states_ = prompt_states(class_ids_);
  }
  const auto vae_dtype = base_.vae->encoder->conv_in->weight.scalar_type();
  const VaePosterior instance_posterior = base_.vae->encode(instance.to(device, vae_dtype));
  instance_mean_ = instance_posterior.mean.to(at::kFloat);
  instance_std_ = instance_posterior.std.to(at::kFloat);
  if (class_images.defined() && class_images.size(0) > 0) {
    // One at a time: a hundred class images at 512 px would not fit the encoder at once.
    std::vector<at::Tensor> means, stds;
    for (int64_t i = 0; i < class_images.size(0); ++i) {
      const VaePosterior posterior = base_.vae->encode(class_images.narrow(0, i, 1).to(device, vae_dtype));
      means.push_back(posterior.mean.to(at::kFloat));
      stds.push_back(posterior.std.to(at::kFloat));
    }
    class_mean_ = at::cat(means);
    class_std_ = at::cat(stds);
  }
}

DreamBoothLora::~DreamBoothLora() = default;

at::Tensor DreamBoothLora::prompt_states(const at::Tensor& ids) {
  std::optional<compat::AutocastGuard> mixed_precision;
  if (base_.dtype != at::kFloat) mixed_precision.emplace(base_.device.type(), base_.dtype);
  return vectors_.defined() ? encode_with_vectors(*base_.text_encoder, ids, first_id_, vectors_)
                            : base_.text_encoder->forward(ids).last_hidden_state;  // [1, L, D]
}

LossTerms DreamBoothLora::loss(int step, at::Generator& generator) {
  const auto device = base_.device;
  const int64_t batch = config_.batch;
  const bool prior = class_mean_.defined();
  // The class images in turn (the reference's sampler shuffles them each epoch; every image is
  // used as often either way).
  at::Tensor mean = instance_mean_.expand({batch, -1, -1, -1}), std = instance_std_.expand({batch, -1, -1, -1});
  // Each prompt is encoded once and shared by its rows.
  const at::Tensor instance_states = instance_states_.defined() ? instance_states_ : prompt_states(instance_ids_);
  at::Tensor states = instance_states.expand({batch, -1, -1});
  if (prior) {
    const int64_t count = class_mean_.size(0);
    const at::Tensor which = (at::arange(batch, at::kLong) + static_cast<int64_t>(step) * batch).remainder(count).to(device);
    mean = at::cat({mean, class_mean_.index_select(0, which)});
    std = at::cat({std, class_std_.index_select(0, which)});
    const at::Tensor class_states = class_states_.defined() ? class_states_ : prompt_states(class_ids_);
    states = at::cat({states, class_states.expand({batch, -1, -1})});
  }
  const int64_t rows = mean.size(0);
  const std::vector<int64_t> latent_shape = {rows, mean.size(1), mean.size(2), mean.size(3)};
  const at::Tensor vae_noise = randn_like_torch(latent_shape, generator, device);
  const at::Tensor noise = randn_like_torch(latent_shape, generator, device);
  const at::Tensor timesteps = at::randint(0, schedule_.num_train_timesteps(), {rows}, generator, at::kLong).to(device);
  const float scaling = static_cast<float>(base_.vae->config().scaling_factor);
  const at::Tensor z0 = (mean + std * vae_noise) * scaling;

  std::optional<compat::AutocastGuard> mixed_precision;
  if (base_.dtype != at::kFloat) mixed_precision.emplace(device.type(), base_.dtype);
  const DreamBoothLosses losses =
      dreambooth_loss(*base_.unet, schedule_, z0, noise, timesteps, states, batch, config_.prior_loss_weight);
  if (!prior) return {losses.total, {{"instance", losses.instance}}};
  return {losses.total, {{"instance", losses.instance}, {"prior", losses.prior}}};
}

void DreamBoothLora::save_state(TrainingState& state) const {
  state.lora = lora_->weights();
  if (vectors_.defined()) state.trainable = {{"vectors", vectors_.cpu().clone()}};
}

void DreamBoothLora::load_state(const TrainingState& state) {
  if (state.lora.size() != lora_->size())
    throw Error(fmt::format("checkpoint: {} LoRA modules, the run has {}", state.lora.size(), lora_->size()));
  // The network was built from these weights when resuming; nothing else to restore.
}

std::vector<std::string> DreamBoothLora::progress_terms() const {
  return class_mean_.defined() ? std::vector<std::string>{"instance", "prior"} : std::vector<std::string>{"instance"};
}

StepLoopOptions DreamBoothLora::step_options() const {
  return config_.step.options(2, config_.steps, config_.learning_rate, "dreambooth-lora");
}

}  // namespace singleinsert
