#include "singleinsert/training/base_training.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/interrupt.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/staged_directory.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/clip_tokenizer.h"
#include "singleinsert/models/unet.h"
#include "singleinsert/models/vae.h"
#include "singleinsert/pipeline/default_model.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/sampling/noise_schedule.h"
#include "singleinsert/training/adamw.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

enum Phase { kVaePhase = 1, kDiffusionPhase = 2 };

BasePhase read_phase(const nlohmann::json& json, BasePhase phase) {
  phase.steps = json.value("steps", phase.steps);
  phase.batch_size = json.value("batch_size", phase.batch_size);
  phase.lr = json.value("lr", phase.lr);
  phase.weight_decay = json.value("weight_decay", phase.weight_decay);
  phase.warmup_steps = json.value("warmup_steps", phase.warmup_steps);
  phase.final_lr_fraction = json.value("final_lr_fraction", phase.final_lr_fraction);
  return phase;
}

nlohmann::json phase_json(const BasePhase& phase) {
  return {{"steps", phase.steps},
          {"batch_size", phase.batch_size},
          {"lr", phase.lr},
          {"weight_decay", phase.weight_decay},
          {"warmup_steps", phase.warmup_steps},
          {"final_lr_fraction", phase.final_lr_fraction}};
}

std::vector<at::Tensor> parameters_of(const std::vector<torch::nn::Module*>& modules) {
  std::vector<at::Tensor> parameters;
  for (torch::nn::Module* module : modules)
    for (const at::Tensor& p : module->parameters()) parameters.push_back(p);
  return parameters;
}

// Mean loss over the first and last tenth of a phase.
std::pair<double, double> first_and_last(const std::vector<double>& losses) {
  if (losses.empty()) return {0.0, 0.0};
  const size_t n = std::max<size_t>(1, losses.size() / 10);
  double first = 0, last = 0;
  for (size_t i = 0; i < n; ++i) first += losses[i], last += losses[losses.size() - 1 - i];
  return {first / n, last / n};
}

// Exponential moving average of parameters, with the usual warm-up of the decay
// (min(decay, (1 + t) / (10 + t))) so that early weights do not linger.
class Ema {
 public:
  Ema(const std::vector<at::Tensor>& parameters, double decay) : parameters_(parameters), decay_(decay) {
    at::NoGradGuard no_grad;
    for (const auto& p : parameters_) averages_.push_back(p.detach().clone());
  }
  void update(int64_t updates) {
    at::NoGradGuard no_grad;
    const double d = std::min(decay_, (1.0 + updates) / (10.0 + updates));
    for (size_t i = 0; i < parameters_.size(); ++i) averages_[i].mul_(d).add_(parameters_[i].detach(), 1.0 - d);
  }
  void copy_to_parameters() {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < parameters_.size(); ++i) parameters_[i].copy_(averages_[i]);
  }
  NamedTensors state() const {
    NamedTensors out;
    for (size_t i = 0; i < averages_.size(); ++i) out.emplace_back(fmt::format("ema.{}", i), averages_[i]);
    return out;
  }
  void load(const SafetensorsFile& file) {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < averages_.size(); ++i) {
      const std::string key = fmt::format("ema.{}", i);
      if (!file.contains(key)) throw Error(file.path() + ": the checkpoint has no " + key);
      averages_[i].copy_(file.tensor(key));
    }
  }

 private:
  std::vector<at::Tensor> parameters_, averages_;
  double decay_;
};

NamedTensors prefixed(const std::string& prefix, const NamedTensors& tensors) {
  NamedTensors out;
  for (const auto& [name, tensor] : tensors) out.emplace_back(prefix + name, tensor);
  return out;
}

std::map<std::string, at::Tensor> with_prefix(const SafetensorsFile& file, const std::string& prefix) {
  std::map<std::string, at::Tensor> out;
  for (const std::string& key : file.keys())
    if (key.rfind(prefix, 0) == 0) out.emplace(key.substr(prefix.size()), file.tensor(key));
  return out;
}

struct Components {
  ClipTextModel text_encoder{nullptr};
  UNet2DConditionModel unet{nullptr};
  AutoencoderKL vae{nullptr};
};

// The three models of a config, weights uninitialised.
Components build_components(const BaseTrainingConfig& config, int64_t vocab_size) {
  ClipTextConfig text_config = ClipTextConfig::from_json(JsonConfig::parse(config.text_encoder_config, "text_encoder"));
  text_config.vocab_size = vocab_size;
  const VaeConfig vae_config = VaeConfig::from_json(JsonConfig::parse(config.vae_config, "vae"));
  const UNetConfig unet_config = UNetConfig::from_json(JsonConfig::parse(config.unet_config, "unet"));
  if (config.resolution % vae_config.downsampling_factor() != 0)
    throw Error(fmt::format("train-base: resolution {} is not a multiple of the VAE's factor {}", config.resolution,
                            vae_config.downsampling_factor()));
  return {ClipTextModel(text_config), UNet2DConditionModel(unet_config), AutoencoderKL(vae_config)};
}

// What a checkpoint records beside the tensors.
struct RunState {
  int phase = kVaePhase;
  int step = 0;  // steps done in `phase`
  std::vector<double> vae_losses, diffusion_losses;
  double vae_seconds = 0, diffusion_seconds = 0, scaling_factor = 0;
  int parts = 1;  // processes the run has taken so far
};

}  // namespace

double BasePhase::lr_at(int step) const {
  if (step < warmup_steps) return lr * (step + 1) / warmup_steps;
  const int span = std::max(1, steps - warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  return lr * (final_lr_fraction + (1.0 - final_lr_fraction) * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

BaseTrainingConfig BaseTrainingConfig::from_json(const JsonConfig& config) {
  const nlohmann::json& json = config.json();
  try {
    BaseTrainingConfig c;
    c.resolution = json.value("resolution", c.resolution);
    c.seed = json.value("seed", c.seed);
    c.precision = json.value("precision", c.precision);
    c.checkpoint_every = json.value("checkpoint_every", c.checkpoint_every);
    const nlohmann::json& vae = json.at("vae");
    c.vae = read_phase(vae, c.vae);
    c.kl_weight = vae.value("kl_weight", c.kl_weight);
    c.vae_config = vae.at("config").dump();
    const nlohmann::json& diffusion = json.at("diffusion");
    c.diffusion = read_phase(diffusion, c.diffusion);
    c.caption_dropout = diffusion.value("caption_dropout", c.caption_dropout);
    c.ema_decay = diffusion.value("ema_decay", c.ema_decay);
    c.min_snr_gamma = diffusion.value("min_snr_gamma", c.min_snr_gamma);
    c.noise_offset = diffusion.value("noise_offset", c.noise_offset);
    c.coarse_noise = diffusion.value("coarse_noise", c.coarse_noise);
    c.detail_weight = diffusion.value("detail_weight", c.detail_weight);
    c.min_timestep = diffusion.value("min_timestep", c.min_timestep);
    c.unet_config = json.at("unet").dump();
    c.text_encoder_config = json.at("text_encoder").dump();
    c.validate();
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: {}", config.origin(), e.what()));
  }
}

void BaseTrainingConfig::validate() const {
  if (resolution < 16) throw Error(fmt::format("train-base: resolution {} is below 16", resolution));
  for (const auto& [name, phase] : {std::pair{"vae", vae}, std::pair{"diffusion", diffusion}})
    if (phase.steps < 0 || phase.batch_size < 1 || !(phase.lr > 0) || phase.warmup_steps < 0 ||
        phase.final_lr_fraction < 0 || phase.final_lr_fraction > 1)
      throw Error(fmt::format("train-base: the {} phase needs steps >= 0, batch_size >= 1, lr > 0, warmup_steps >= 0 "
                              "and final_lr_fraction in [0, 1]",
                              name));
  if (caption_dropout < 0 || caption_dropout > 1) throw Error("train-base: caption_dropout must be in [0, 1]");
  if (ema_decay < 0 || ema_decay >= 1) throw Error("train-base: ema_decay must be in [0, 1)");
  if (min_snr_gamma < 0) throw Error("train-base: min_snr_gamma must be >= 0");
  if (noise_offset < 0 || noise_offset > 1) throw Error("train-base: noise_offset must be in [0, 1]");
  if (coarse_noise < 0 || coarse_noise > 1) throw Error("train-base: coarse_noise must be in [0, 1]");
  if (!(detail_weight >= 0 && detail_weight <= 100)) throw Error("train-base: detail_weight must be in [0, 100]");
  if (min_timestep < 0 || min_timestep > 999) throw Error("train-base: min_timestep must be in [0, 999]");
  if (init_vae_only && init_model.empty()) throw Error("train-base: --init-vae needs a model folder");
  if (precision != "fp32" && precision != "bf16")
    throw Error("train-base: precision must be fp32 or bf16, not '" + precision + "'");
  if (checkpoint_every < 0) throw Error("train-base: checkpoint_every must be >= 0");
}

std::string BaseTrainingConfig::to_json() const {
  nlohmann::json vae_json = phase_json(vae), diffusion_json = phase_json(diffusion);
  vae_json["kl_weight"] = kl_weight;
  vae_json["config"] = nlohmann::json::parse(vae_config);
  diffusion_json["caption_dropout"] = caption_dropout;
  diffusion_json["ema_decay"] = ema_decay;
  diffusion_json["min_snr_gamma"] = min_snr_gamma;
  // Keys that default to "off" are written only when set, so that checkpoints of earlier
  // configs still resume.
  if (noise_offset > 0) diffusion_json["noise_offset"] = noise_offset;
  if (coarse_noise > 0) diffusion_json["coarse_noise"] = coarse_noise;
  if (detail_weight > 0) diffusion_json["detail_weight"] = detail_weight;
  if (min_timestep > 0) diffusion_json["min_timestep"] = min_timestep;
  nlohmann::json json{{"resolution", resolution},
                      {"seed", seed},
                      {"precision", precision},
                      {"vae", vae_json},
                      {"diffusion", diffusion_json},
                      {"unet", nlohmann::json::parse(unet_config)},
                      {"text_encoder", nlohmann::json::parse(text_encoder_config)}};
  if (!init_model.empty()) json["init_model"] = init_model;
  if (init_vae_only) json["init_vae_only"] = true;
  return json.dump();
}

namespace {

// A continued run carries the record of the run it started from, so the model says all of its
// history; a run that took only the VAE carries the record of the run that trained it.
void add_init_history(const BaseTrainingConfig& config, nlohmann::json& record) {
  const fs::path init_record = fs::path(config.init_model) / "train_base.json";
  if (!config.init_model.empty() && fs::exists(init_record))
    record[config.init_vae_only ? "vae_from" : "continued_from"] = nlohmann::json::parse(read_file(init_record.string()));
}

}  // namespace

std::string base_checkpoint_path(const std::string& out_dir) {
  std::string path = fs::path(out_dir).lexically_normal().string();
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path + ".checkpoint.safetensors";
}

BaseTrainingSummary train_base_model(const BaseTrainingConfig& config, const std::vector<std::string>& vocabulary,
                                     const CaptionedSource& source, const std::string& out_dir,
                                     const ExecutionOptions& execution, c10::ScalarType save_dtype,
                                     const ProgressCallback& progress, bool resume) {
  config.validate();
  const std::string checkpoint_path = base_checkpoint_path(out_dir);
  if (!resume && fs::exists(checkpoint_path))
    throw Error(fmt::format("train-base: {} holds an interrupted run: pass --resume to continue it, or delete it",
                            checkpoint_path));
  if (resume && !fs::exists(checkpoint_path))
    throw Error(fmt::format("train-base: --resume, but there is no checkpoint at {}", checkpoint_path));
  const auto started = std::chrono::system_clock::now();
  BaseTrainingSummary summary;
  write_directory_atomic(out_dir, [&](const fs::path& staging) {
    write_small_clip_tokenizer((staging / "tokenizer").string(), vocabulary);
    const ClipTokenizer tokenizer = ClipTokenizer::load((staging / "tokenizer").string());

    const at::Device device = execution.device;
    at::Generator init_generator = make_cpu_generator(config.seed);
    Components components = build_components(config, tokenizer.vocab_size());
    ClipTextModel text_encoder = components.text_encoder;
    UNet2DConditionModel unet = components.unet;
    AutoencoderKL vae = components.vae;
    for (torch::nn::Module* module : std::initializer_list<torch::nn::Module*>{text_encoder.get(), unet.get(), vae.get()})
      init_parameters(*module, init_generator);
    {
      at::NoGradGuard no_grad;  // CLIP's small embedding init
      text_encoder->text_model->embeddings->token_embedding->weight.normal_(0.0, 0.02, init_generator);
      text_encoder->text_model->embeddings->position_embedding->weight.normal_(0.0, 0.01, init_generator);
    }
    for (torch::nn::Module* module : std::initializer_list<torch::nn::Module*>{text_encoder.get(), unet.get(), vae.get()})
      module->to(device);
    const std::vector<at::Tensor> vae_parameters = parameters_of({vae.get()});
    const std::vector<at::Tensor> diffusion_parameters = parameters_of({text_encoder.get(), unet.get()});
    std::optional<Ema> ema;

    RunState state;
    if (!config.init_model.empty()) {
      // Start from a trained model: its weights replace the fresh ones (the architectures must
      // match), and its VAE is taken as it is.
      const auto init = load_model_bundle(config.init_model);
      if (init->tokenizer.vocab_size() != tokenizer.vocab_size())
        throw Error(fmt::format("train-base: {} has another tokenizer ({} tokens, this world has {})",
                                config.init_model, init->tokenizer.vocab_size(), tokenizer.vocab_size()));
      auto copy_from = [&](torch::nn::Module& to, const torch::nn::Module& from, const char* part) {
        std::map<std::string, at::Tensor> weights;
        for (auto& [name, tensor] : state_dict(from)) weights.emplace(name, tensor.to(at::kFloat));
        load_state_dict(to, weights, config.init_model + "/" + part);
      };
      copy_from(*vae, *init->vae, "vae");
      if (!config.init_vae_only) {
        copy_from(*text_encoder, *init->text_encoder, "text_encoder");
        copy_from(*unet, *init->unet, "unet");
      }
      state.scaling_factor = init->vae->config().scaling_factor;
      state.phase = kDiffusionPhase;
    }
    if (config.ema_decay > 0) ema.emplace(diffusion_parameters, config.ema_decay);  // from the starting weights
    std::optional<SafetensorsFile> checkpoint;
    if (resume) {
      checkpoint = SafetensorsFile::open(checkpoint_path);
      const nlohmann::json saved = nlohmann::json::parse(checkpoint->metadata().at("state"));
      if (saved.at("config").get<std::string>() != config.to_json())
        throw Error(fmt::format("train-base: {} was made with other settings than this config", checkpoint_path));
      state.phase = saved.at("phase");
      state.step = saved.at("step");
      state.vae_losses = saved.at("vae_losses").get<std::vector<double>>();
      state.diffusion_losses = saved.at("diffusion_losses").get<std::vector<double>>();
      state.vae_seconds = saved.at("vae_seconds");
      state.diffusion_seconds = saved.at("diffusion_seconds");
      state.scaling_factor = saved.at("scaling_factor");
      state.parts = saved.at("parts").get<int>() + 1;
      load_state_dict(*vae, with_prefix(*checkpoint, "vae."), checkpoint_path);
      load_state_dict(*text_encoder, with_prefix(*checkpoint, "text_encoder."), checkpoint_path);
      load_state_dict(*unet, with_prefix(*checkpoint, "unet."), checkpoint_path);
      if (ema) ema->load(*checkpoint);
      summary.resumed_from_step = (state.phase == kVaePhase ? 0 : config.vae.steps) + state.step;
    }

    auto save_checkpoint = [&](const AdamW& optimizer) {
      NamedTensors tensors = prefixed("vae.", state_dict(*vae));
      for (auto& entry : prefixed("text_encoder.", state_dict(*text_encoder))) tensors.push_back(std::move(entry));
      for (auto& entry : prefixed("unet.", state_dict(*unet))) tensors.push_back(std::move(entry));
      if (ema)
        for (auto& entry : ema->state()) tensors.push_back(std::move(entry));
      for (auto& entry : prefixed("optimizer.", optimizer.state())) tensors.push_back(std::move(entry));
      const nlohmann::json saved = {{"config", config.to_json()},
                                    {"phase", state.phase},
                                    {"step", state.step},
                                    {"vae_losses", state.vae_losses},
                                    {"diffusion_losses", state.diffusion_losses},
                                    {"vae_seconds", state.vae_seconds},
                                    {"diffusion_seconds", state.diffusion_seconds},
                                    {"scaling_factor", state.scaling_factor},
                                    {"parts", state.parts}};
      save_safetensors(checkpoint_path, tensors, {{"singleinsert", "train-base checkpoint"}, {"state", saved.dump()}});
    };

    // One phase's loop: per-step seeds, the schedule, clipping at 1.0, checkpoints and Ctrl-C.
    auto run_phase = [&](Phase phase, const BasePhase& settings, const std::vector<at::Tensor>& parameters,
                         const std::function<at::Tensor(const CaptionedBatch&, at::Generator&)>& loss_of) {
      const char* name = phase == kVaePhase ? "vae" : "diffusion";
      std::vector<double>& losses = phase == kVaePhase ? state.vae_losses : state.diffusion_losses;
      double& seconds = phase == kVaePhase ? state.vae_seconds : state.diffusion_seconds;
      AdamW optimizer(parameters, {settings.lr, 0.9, 0.999, 1e-8, settings.weight_decay});
      int start = 0;
      if (state.phase == phase && state.step > 0) {
        optimizer.load_state(with_prefix(*checkpoint, "optimizer."), checkpoint_path);
        start = state.step;
      }
      state.phase = phase;
      const double seconds_before = seconds;
      const auto begin = std::chrono::steady_clock::now();
      auto elapsed = [&] {
        return seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
      };
      for (int step = start; step < settings.steps; ++step) {
        at::Generator generator = make_cpu_generator(step_seed(config.seed, phase, step));
        const CaptionedBatch batch = source(
            (phase == kVaePhase ? 0 : uint64_t{1} << 48) + static_cast<uint64_t>(step) * settings.batch_size,
            settings.batch_size, phase == kDiffusionPhase && config.detail_weight > 0);
        optimizer.set_lr(settings.lr_at(step));
        const at::Tensor loss = loss_of(batch, generator);
        const double value = loss.item<double>();
        if (!std::isfinite(value))
          throw Error(fmt::format("train-base: the {} loss is {} at step {} (try a lower lr); the last checkpoint is "
                                  "kept at {}", name, value, step + 1, checkpoint_path));
        loss.backward();
        clip_grad_norm(parameters, 1.0);
        optimizer.step();
        optimizer.zero_grad();
        if (phase == kDiffusionPhase && ema) ema->update(optimizer.steps_taken());
        losses.push_back(value);
        state.step = step + 1;
        seconds = elapsed();
        if (progress) progress({name, step + 1, settings.steps, seconds, {{"loss", value}}});
        const bool interrupted = interrupt_requested();
        if (interrupted || (config.checkpoint_every > 0 && state.step % config.checkpoint_every == 0 &&
                            state.step < settings.steps))
          save_checkpoint(optimizer);
        if (interrupted)
          throw Error(fmt::format("train-base: interrupted in the {} phase at step {}; continue with --resume "
                                  "(checkpoint {})", name, state.step, checkpoint_path));
      }
    };
    const bool bf16 = config.precision == "bf16";

    // Phase 1: the VAE alone.
    if (state.phase == kVaePhase) {
      vae->train();
      run_phase(kVaePhase, config.vae, vae_parameters, [&](const CaptionedBatch& batch, at::Generator& generator) {
        const at::Tensor images = batch.images.to(device);
        std::optional<compat::AutocastGuard> autocast;
        if (bf16) autocast.emplace(device.type(), at::kBFloat16);
        const VaePosterior posterior = vae->encode(images);
        const at::Tensor noise = randn_like_torch(posterior.mean.sizes(), generator, device);
        const at::Tensor reconstruction = vae->decode(posterior.mean + posterior.std * noise).to(at::kFloat);
        const at::Tensor kl = 0.5 * (posterior.mean.square() + posterior.std.square() - 1.0 - posterior.logvar)
                                        .to(at::kFloat)
                                        .mean();
        return (reconstruction - images).square().mean() + config.kl_weight * kl;
      });
      // Unit-variance latents, as SD's 0.18215 does for its VAE: measured on examples no phase uses.
      at::NoGradGuard no_grad;
      vae->eval();
      const CaptionedBatch probe = source(uint64_t{1} << 62, 64, false);
      state.scaling_factor = 1.0 / vae->encode(probe.images.to(device)).mean.std().item<double>();
      state.phase = kDiffusionPhase;
      state.step = 0;
    }
    vae->eval();
    for (auto& p : vae_parameters) p.set_requires_grad(false);
    vae->set_scaling_factor(state.scaling_factor);

    // Phase 2: text encoder and UNet, on latents of the frozen VAE.
    text_encoder->train();
    unet->train();
    const NoiseSchedule schedule(NoiseScheduleConfig::sd15());
    const at::Tensor alphas_cumprod = schedule.alphas_cumprod.to(device);
    run_phase(kDiffusionPhase, config.diffusion, diffusion_parameters,
              [&](const CaptionedBatch& batch, at::Generator& generator) {
      const int64_t count = batch.images.size(0);
      std::vector<std::string> captions = batch.captions;
      const at::Tensor keep = at::rand({count}, generator) >= config.caption_dropout;
      for (int64_t i = 0; i < count; ++i)
        if (!keep[i].item<bool>()) captions[i] = "";
      at::Tensor latents;
      {
        at::NoGradGuard no_grad;
        std::optional<compat::AutocastGuard> autocast;
        if (bf16) autocast.emplace(device.type(), at::kBFloat16);
        const VaePosterior posterior = vae->encode(batch.images.to(device));
        const at::Tensor noise = randn_like_torch(posterior.mean.sizes(), generator, device);
        latents = ((posterior.mean + posterior.std * noise) * state.scaling_factor).to(at::kFloat);
      }
      const at::Tensor timesteps =
          at::randint(config.min_timestep, schedule.num_train_timesteps(), {count}, generator).to(device);
      at::Tensor noise = randn_like_torch(latents.sizes(), generator, device);
      const int64_t channels = latents.size(1), height = latents.size(2), width = latents.size(3);
      if (config.noise_offset > 0)
        noise = noise + config.noise_offset * randn_like_torch({count, channels, 1, 1}, generator, device);
      if (config.coarse_noise > 0)
        for (int64_t grid : {2, 4})
          noise = noise + config.coarse_noise * at::upsample_bilinear2d(
                                                    randn_like_torch({count, channels, grid, grid}, generator, device),
                                                    {height, width}, /*align_corners=*/false);
      const at::Tensor a = alphas_cumprod.index_select(0, timesteps).view({count, 1, 1, 1});
      const at::Tensor noisy = a.sqrt() * latents + (1.0 - a).sqrt() * noise;
      std::optional<compat::AutocastGuard> autocast;
      if (bf16) autocast.emplace(device.type(), at::kBFloat16);
      const at::Tensor context =
          text_encoder->forward(tokenize_prompts(tokenizer, captions).to(device)).last_hidden_state;
      const at::Tensor predicted = unet->forward(noisy, timesteps, context).to(at::kFloat);
      at::Tensor squared = (predicted - noise).square();  // [B, C, h, w]
      if (config.detail_weight > 0 && batch.detail.defined()) {
        // A latent position counts as detail when any pixel it encodes is.
        const at::Tensor detail = std::get<0>(at::adaptive_max_pool2d(batch.detail.to(device), {height, width}));
        squared = squared * (1.0 + config.detail_weight * detail);
      }
      const at::Tensor per_sample = squared.mean({1, 2, 3});
      if (config.min_snr_gamma <= 0) return per_sample.mean();
      // min-SNR-gamma for epsilon prediction: weight min(SNR, gamma) / SNR.
      const at::Tensor snr = a.view({count}) / (1.0 - a.view({count}));
      return (per_sample * snr.clamp_max(config.min_snr_gamma) / snr).mean();
    });
    if (ema) ema->copy_to_parameters();

    std::tie(summary.vae_loss_first, summary.vae_loss_last) = first_and_last(state.vae_losses);
    std::tie(summary.diffusion_loss_first, summary.diffusion_loss_last) = first_and_last(state.diffusion_losses);
    summary.vae_seconds = state.vae_seconds;
    summary.diffusion_seconds = state.diffusion_seconds;
    summary.scaling_factor = state.scaling_factor;

    write_model_parts(staging.string(), *text_encoder, *unet, *vae, sd15_scheduler_config_json(), save_dtype);
    nlohmann::json record = {
        {"started", std::chrono::duration_cast<std::chrono::seconds>(started.time_since_epoch()).count()},
        {"config", nlohmann::json::parse(config.to_json())},
        {"parts", state.parts},
        {"vae", {{"seconds", summary.vae_seconds}, {"loss_first", summary.vae_loss_first},
                 {"loss_last", summary.vae_loss_last}}},
        {"diffusion", {{"seconds", summary.diffusion_seconds}, {"loss_first", summary.diffusion_loss_first},
                       {"loss_last", summary.diffusion_loss_last}}},
        {"scaling_factor", summary.scaling_factor},
        {"device", device.str()},
        {"threads", at::get_num_threads()},
        {"torch", TORCH_VERSION}};
    add_init_history(config, record);
    write_file_atomic((staging / "train_base.json").string(), record.dump(2));
  });
  std::error_code ignored;
  fs::remove(checkpoint_path, ignored);
  return summary;
}

void export_base_snapshot(const BaseTrainingConfig& config, const std::vector<std::string>& vocabulary,
                          const std::string& out_dir, const std::string& snapshot_dir, c10::ScalarType save_dtype) {
  const std::string checkpoint_path = base_checkpoint_path(out_dir);
  if (!fs::exists(checkpoint_path))
    throw Error(fmt::format("train-base: no checkpoint at {} to take a snapshot of", checkpoint_path));
  const SafetensorsFile checkpoint = SafetensorsFile::open(checkpoint_path);
  const nlohmann::json saved = nlohmann::json::parse(checkpoint.metadata().at("state"));
  if (saved.at("config").get<std::string>() != config.to_json())
    throw Error(fmt::format("train-base: {} was made with other settings than this config", checkpoint_path));
  if (saved.at("phase").get<int>() != kDiffusionPhase)
    throw Error("train-base: the run is still in its VAE phase; a snapshot needs diffusion steps");
  write_directory_atomic(snapshot_dir, [&](const fs::path& staging) {
    write_small_clip_tokenizer((staging / "tokenizer").string(), vocabulary);
    Components components = build_components(config, ClipTokenizer::load((staging / "tokenizer").string()).vocab_size());
    load_state_dict(*components.vae, with_prefix(checkpoint, "vae."), checkpoint_path);
    load_state_dict(*components.text_encoder, with_prefix(checkpoint, "text_encoder."), checkpoint_path);
    load_state_dict(*components.unet, with_prefix(checkpoint, "unet."), checkpoint_path);
    if (config.ema_decay > 0) {
      Ema ema(parameters_of({components.text_encoder.get(), components.unet.get()}), config.ema_decay);
      ema.load(checkpoint);
      ema.copy_to_parameters();
    }
    components.vae->set_scaling_factor(saved.at("scaling_factor").get<double>());
    write_model_parts(staging.string(), *components.text_encoder, *components.unet, *components.vae,
                      sd15_scheduler_config_json(), save_dtype);
    nlohmann::json record = {{"snapshot_of", checkpoint_path},
                             {"diffusion_step", saved.at("step")},
                             {"config", nlohmann::json::parse(config.to_json())},
                             {"scaling_factor", saved.at("scaling_factor")},
                             {"vae_seconds", saved.at("vae_seconds")},
                             {"diffusion_seconds", saved.at("diffusion_seconds")},
                             {"threads", at::get_num_threads()},
                             {"torch", TORCH_VERSION}};
    add_init_history(config, record);
    write_file_atomic((staging / "train_base.json").string(), record.dump(2));
  });
}

}  // namespace singleinsert
