#include "singleinsert/training/textual_inversion.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/tensor_format.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/training/attention_loss.h"
#include "singleinsert/training/losses.h"
#include "singleinsert/training/presets.h"

namespace singleinsert {

void EmbeddingInversionConfig::apply_json(const std::string& text, const std::string& origin) {
  const JsonConfig json = JsonConfig::parse(text, origin);
  method = json.get_string("method", method);
  if (method != "textual-inversion" && method != "cross-init" && method != "beyond-inserting")
    throw Error(fmt::format("{}: a {} preset, not textual-inversion, cross-init or beyond-inserting", origin, method));
  std::vector<std::string> known = {"description", "method", "resolution", "steps", "batch", "learning_rate",
                                     "scale_lr", "num_vectors", "flip_p", "templates", "subject", "reg_weight"};
  if (method == "beyond-inserting")
    known.insert(known.end(), {"attn_weight", "attn_layers", "attn_reference", "kv_tokens"});
  known.insert(known.end(), StepSettings::keys().begin(), StepSettings::keys().end());
  json.require_known_keys(known);
  resolution = json.get_int("resolution", resolution);
  steps = json.get_int("steps", steps);
  batch = json.get_int("batch", batch);
  learning_rate = json.get_double("learning_rate", learning_rate);
  scale_lr = json.get_bool("scale_lr", scale_lr);
  num_vectors = json.get_int("num_vectors", num_vectors);
  flip_p = json.get_double("flip_p", flip_p);
  templates = json.get_string("templates", templates);
  subject = json.get_string("subject", subject);
  reg_weight = json.get_double("reg_weight", reg_weight);
  attn_weight = json.get_double("attn_weight", attn_weight);
  attn_layers = json.get_string("attn_layers", attn_layers);
  attn_reference = json.get_string("attn_reference", attn_reference);
  kv_tokens = json.get_bool("kv_tokens", kv_tokens);
  step.read(json);
}

std::string EmbeddingInversionConfig::to_json() const {
  nlohmann::json json = {{"method", method},           {"resolution", resolution},
                         {"steps", steps},             {"batch", batch},
                         {"learning_rate", learning_rate}, {"scale_lr", scale_lr},
                         {"num_vectors", num_vectors}, {"flip_p", flip_p},
                         {"templates", templates},     {"subject", subject},
                         {"reg_weight", reg_weight}};
  if (method == "beyond-inserting") {
    json["attn_weight"] = attn_weight;
    json["attn_layers"] = attn_layers;
    json["attn_reference"] = attn_reference;
    json["kv_tokens"] = kv_tokens;
  }
  step.write(json);
  return json.dump(2);
}

void EmbeddingInversionConfig::validate() const {
  if (method != "textual-inversion" && method != "cross-init" && method != "beyond-inserting")
    throw Error(fmt::format("unknown method '{}' (textual-inversion, cross-init or beyond-inserting)", method));
  if (method == "beyond-inserting") {
    if (num_vectors != 1) throw Error("beyond-inserting learns one identity embedding: num_vectors must be 1");
    if (reg_weight != 0) throw Error("reg_weight is Cross Initialization's; beyond-inserting has no pull towards its start");
    validate_attention_loss_settings(attn_weight, attn_layers, attn_reference);
  }
  if (steps < 0 || batch < 1 || !(learning_rate > 0))
    throw Error(fmt::format("steps {} must be >= 0, batch {} >= 1 and the learning rate {} > 0", steps, batch,
                            learning_rate));
  if (num_vectors < 1 || num_vectors > 75)
    throw Error(fmt::format("--num-vectors must be between 1 and 75 (a prompt holds 75 tokens), got {}", num_vectors));
  if (resolution < 8) throw Error(fmt::format("--resolution {} is too small", resolution));
  if (!(flip_p >= 0 && flip_p <= 1)) throw Error(fmt::format("flip_p {} is not a probability", flip_p));
  if (!(reg_weight >= 0)) throw Error("reg_weight must not be negative");
  step.validate();
  inversion_templates(templates);
  // One "{}" and no other braces: the subject is formatted into every template.
  if (std::count(subject.begin(), subject.end(), '{') != 1 || std::count(subject.begin(), subject.end(), '}') != 1 ||
      subject.find("{}") == std::string::npos)
    throw Error(fmt::format("subject '{}' must hold \"{{}}\" once, where the tokens go", subject));
}

std::string method_preset_json(const std::string& name_or_path) {
  for (const auto& [name, text] : compiled_presets())
    if (name == "methods/" + name_or_path) return text;
  if (std::filesystem::exists(name_or_path)) return read_file(name_or_path);
  std::string names;
  for (const auto& [name, text] : compiled_presets())
    if (name.rfind("methods/", 0) == 0) names += (names.empty() ? "" : ", ") + name.substr(8);
  throw Error(fmt::format("unknown preset '{}' (built in: {}; or give a JSON file)", name_or_path, names));
}

const std::vector<std::string>& inversion_templates(const std::string& name) {
  // diffusers' imagenet_templates_small (textual_inversion.py), for objects.
  static const std::vector<std::string> object = {
      "a photo of a {}",          "a rendering of a {}",     "a cropped photo of the {}", "the photo of a {}",
      "a photo of a clean {}",    "a photo of a dirty {}",   "a dark photo of the {}",    "a photo of my {}",
      "a photo of the cool {}",   "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
      "a photo of the {}",        "a good photo of the {}",  "a photo of one {}",         "a close-up photo of the {}",
      "a rendition of the {}",    "a photo of the clean {}", "a rendition of a {}",       "a photo of a nice {}",
      "a good photo of a {}",     "a photo of the nice {}",  "a photo of the small {}",   "a photo of the weird {}",
      "a photo of the large {}",  "a photo of a cool {}",    "a photo of a small {}"};
  // CrossInitialization's textual_inversion_dataset.py: the object templates, then "illustration"
  // and "depiction" variants (duplicates kept: they weight the draw).
  static const std::vector<std::string> cross_init = {
      "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
      "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
      "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}",
      "a cropped photo of a {}", "a photo of the {}", "a good photo of the {}", "a photo of one {}",
      "a close-up photo of the {}", "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}",
      "a photo of a nice {}", "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}",
      "a photo of the weird {}", "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
      "an illustration of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
      "an illustration of a clean {}", "an illustration of a dirty {}", "a dark photo of the {}",
      "an illustration of my {}", "an illustration of the cool {}", "a close-up photo of a {}",
      "a bright photo of the {}", "a cropped photo of a {}", "an illustration of the {}",
      "a good photo of the {}", "an illustration of one {}", "a close-up photo of the {}",
      "a rendition of the {}", "an illustration of the clean {}", "a rendition of a {}",
      "an illustration of a nice {}", "a good photo of a {}", "an illustration of the nice {}",
      "an illustration of the small {}", "an illustration of the weird {}", "an illustration of the large {}",
      "an illustration of a cool {}", "an illustration of a small {}", "a depiction of a {}",
      "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}", "a depiction of a clean {}",
      "a depiction of a dirty {}", "a dark photo of the {}", "a depiction of my {}",
      "a depiction of the cool {}", "a close-up photo of a {}", "a bright photo of the {}",
      "a cropped photo of a {}", "a depiction of the {}", "a good photo of the {}", "a depiction of one {}",
      "a close-up photo of the {}", "a rendition of the {}", "a depiction of the clean {}",
      "a rendition of a {}", "a depiction of a nice {}", "a good photo of a {}", "a depiction of the nice {}",
      "a depiction of the small {}", "a depiction of the weird {}", "a depiction of the large {}",
      "a depiction of a cool {}", "a depiction of a small {}"};
  // The toy world's captions know only a few words: the object templates its vocabulary can spell.
  static const std::vector<std::string> world = {"a photo of a {}",   "the photo of a {}",   "a photo of the {}",
                                                 "a picture of a {}", "the picture of a {}", "a picture of the {}"};
  if (name == "object") return object;
  if (name == "cross-init") return cross_init;
  if (name == "world") return world;
  throw Error(fmt::format("unknown prompt templates '{}' (object, cross-init or world)", name));
}

std::vector<std::string> inversion_prompts(const EmbeddingInversionConfig& config, const std::string& tokens,
                                           const std::string& class_word) {
  std::string subject = fmt::format(fmt::runtime(config.subject), tokens);
  for (size_t at = subject.find("<class>"); at != std::string::npos; at = subject.find("<class>", at)) {
    if (class_word.empty()) throw Error(fmt::format("subject '{}' names <class> but no class word was given", config.subject));
    subject.replace(at, 7, class_word);
    at += class_word.size();
  }
  // Two spaces where "{}" held an empty word (the reference prompt with no reference word).
  for (size_t at = subject.find("  "); at != std::string::npos; at = subject.find("  ")) subject.erase(at, 1);
  while (!subject.empty() && subject.front() == ' ') subject.erase(0, 1);
  while (!subject.empty() && subject.back() == ' ') subject.pop_back();
  std::vector<std::string> prompts;
  for (const auto& text : inversion_templates(config.templates)) prompts.push_back(fmt::format(fmt::runtime(text), subject));
  return prompts;
}

at::Tensor encode_with_vectors(ClipTextModelImpl& text_encoder, const at::Tensor& ids, int64_t first_id,
                               const at::Tensor& vectors) {
  const int64_t count = vectors.size(0);
  const at::Tensor words = text_encoder.token_embeddings(ids);  // [B, L, D]
  const at::Tensor learned = (ids >= first_id).logical_and(ids < first_id + count);
  const at::Tensor rows = (ids - first_id).clamp(0, count - 1);
  const at::Tensor substituted = vectors.to(words.scalar_type()).index_select(0, rows.flatten()).view(words.sizes());
  return text_encoder.forward_embeds(at::where(learned.unsqueeze(-1), substituted, words), ids).last_hidden_state;
}

at::Tensor noise_prediction_loss(UNet2DConditionModelImpl& unet, const NoiseSchedule& schedule, const at::Tensor& z0,
                                 const at::Tensor& noise, const at::Tensor& timesteps, const at::Tensor& states) {
  const at::ScalarType dtype = unet.conv_in->weight.scalar_type();
  const at::Tensor x_t = add_noise(schedule, z0, noise, timesteps);
  const at::Tensor eps = unet.forward(x_t.to(dtype), timesteps, states.to(dtype)).to(at::kFloat);
  return (eps - noise).pow(2).mean();
}

at::Tensor distance_to_start(const at::Tensor& vectors, const at::Tensor& start) {
  // torch.nn.functional.pairwise_distance, as the official code calls it: ||x1 - x2 + 1e-6||_2.
  return (vectors - start + 1e-6).norm(2, {1}).mean();
}

EmbeddingInversion::EmbeddingInversion(BaseModel base, const EmbeddingInversionConfig& config,
                                       const at::Tensor& pixels, at::Tensor template_ids, int64_t first_id,
                                       const at::Tensor& start)
    : base_(std::move(base)), config_(config), schedule_(base_.schedule), first_id_(first_id) {
  const auto device = base_.device;
  template_ids_ = template_ids.to(device);
  start_ = start.to(device, at::kFloat).detach().clone();
  vectors_ = start_.clone();
  // The posteriors of the image and its mirror never change: encode both once.
  at::NoGradGuard no_grad;
  const auto vae_dtype = base_.vae->encoder->conv_in->weight.scalar_type();
  const at::Tensor both = at::cat({pixels, pixels.flip({3})}).to(device, vae_dtype);
  const VaePosterior posterior = base_.vae->encode(both);
  posterior_mean_ = posterior.mean.to(at::kFloat);
  posterior_std_ = posterior.std.to(at::kFloat);
}

EmbeddingInversion::Draw EmbeddingInversion::draw(at::Generator& generator) const {
  const auto device = base_.device;
  const int64_t batch = config_.batch;
  // Each row: a template and whether the image is mirrored, then the reference's draws.
  const at::Tensor choice = at::randint(0, template_ids_.size(0), {batch}, generator, at::kLong).to(device);
  const at::Tensor mirrored = (at::rand({batch}, generator) < config_.flip_p).to(at::kLong).to(device);
  const std::vector<int64_t> latent_shape = {batch, posterior_mean_.size(1), posterior_mean_.size(2),
                                             posterior_mean_.size(3)};
  const at::Tensor vae_noise = randn_like_torch(latent_shape, generator, device);
  const at::Tensor noise = randn_like_torch(latent_shape, generator, device);
  const at::Tensor timesteps =
      at::randint(0, schedule_.num_train_timesteps(), {batch}, generator, at::kLong).to(device);
  const float scaling = static_cast<float>(base_.vae->config().scaling_factor);
  const at::Tensor z0 =
      (posterior_mean_.index_select(0, mirrored) + posterior_std_.index_select(0, mirrored) * vae_noise) * scaling;
  return {choice, z0, noise, timesteps};
}

LossTerms EmbeddingInversion::loss(int, at::Generator& generator) {
  const Draw d = draw(generator);
  std::optional<compat::AutocastGuard> mixed_precision;
  if (base_.dtype != at::kFloat) mixed_precision.emplace(base_.device.type(), base_.dtype);
  const at::Tensor states =
      encode_with_vectors(*base_.text_encoder, template_ids_.index_select(0, d.choice), first_id_, vectors_);
  const at::Tensor noise_loss = noise_prediction_loss(*base_.unet, schedule_, d.z0, d.noise, d.timesteps, states);
  if (config_.reg_weight == 0) return {noise_loss, {{"noise", noise_loss}}};
  const at::Tensor reg = distance_to_start(vectors_, start_);
  return {noise_loss + reg * config_.reg_weight, {{"noise", noise_loss}, {"reg", reg}}};
}

void EmbeddingInversion::save_state(TrainingState& state) const {
  state.trainable = {{"vectors", vectors_.detach().cpu().clone()}, {"start", start_.cpu().clone()}};
}

void EmbeddingInversion::load_state(const TrainingState& state) {
  for (const auto& [name, tensor] : state.trainable) {
    if (name != "vectors" && name != "start") throw Error(fmt::format("checkpoint: unexpected tensor '{}'", name));
    at::Tensor& target = name == "vectors" ? vectors_ : start_;
    if (!tensor.sizes().equals(target.sizes()))
      throw Error(fmt::format("checkpoint: '{}' is {} but the run has {}", name, shape_string(tensor.sizes()),
                              shape_string(target.sizes())));
    at::NoGradGuard no_grad;
    target.copy_(tensor);
  }
}

std::vector<std::string> EmbeddingInversion::progress_terms() const {
  return config_.reg_weight == 0 ? std::vector<std::string>{} : std::vector<std::string>{"reg"};
}

StepLoopOptions EmbeddingInversion::step_options() const {
  return config_.step.options(1, config_.steps, config_.lr(), config_.method);
}

}  // namespace singleinsert
