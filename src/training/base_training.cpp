#include "singleinsert/training/base_training.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/interrupt.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/staged_directory.h"
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

BasePhase read_phase(const nlohmann::json& json, BasePhase phase) {
  phase.steps = json.value("steps", phase.steps);
  phase.batch_size = json.value("batch_size", phase.batch_size);
  phase.lr = json.value("lr", phase.lr);
  phase.weight_decay = json.value("weight_decay", phase.weight_decay);
  return phase;
}

std::vector<at::Tensor> trainable(const std::vector<torch::nn::Module*>& modules) {
  std::vector<at::Tensor> parameters;
  for (torch::nn::Module* module : modules)
    for (const at::Tensor& p : module->parameters()) parameters.push_back(p);
  return parameters;
}

// Mean loss over the first and last tenth of a phase.
std::pair<double, double> first_and_last(const std::vector<double>& losses) {
  const size_t n = std::max<size_t>(1, losses.size() / 10);
  double first = 0, last = 0;
  for (size_t i = 0; i < n; ++i) first += losses[i], last += losses[losses.size() - 1 - i];
  return {first / n, last / n};
}

void check_finite(double loss, const char* phase, int step) {
  if (!std::isfinite(loss))
    throw Error(fmt::format("train-base: the {} loss is {} at step {} (try a lower lr)", phase, loss, step));
  if (interrupt_requested()) throw Error(fmt::format("train-base: interrupted in the {} phase at step {}", phase, step));
}

// One training loop: `loss_of(batch)` builds the loss, AdamW with gradient clipping at 1.0.
std::vector<double> run_phase(const char* name, const BasePhase& phase, uint64_t stream_offset,
                              const std::vector<at::Tensor>& parameters, const CaptionedSource& source,
                              const std::function<at::Tensor(const CaptionedBatch&)>& loss_of,
                              const ProgressCallback& progress) {
  AdamW optimizer(parameters, {phase.lr, 0.9, 0.999, 1e-8, phase.weight_decay});
  std::vector<double> losses;
  const auto start = std::chrono::steady_clock::now();
  for (int step = 0; step < phase.steps; ++step) {
    const CaptionedBatch batch =
        source(stream_offset + static_cast<uint64_t>(step) * phase.batch_size, phase.batch_size);
    const at::Tensor loss = loss_of(batch);
    const double value = loss.item<double>();
    check_finite(value, name, step + 1);
    loss.backward();
    clip_grad_norm(parameters, 1.0);
    optimizer.step();
    optimizer.zero_grad();
    losses.push_back(value);
    if (progress) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      progress({name, step + 1, phase.steps, elapsed, {{"loss", value}}});
    }
  }
  return losses;
}

}  // namespace

BaseTrainingConfig BaseTrainingConfig::from_json(const JsonConfig& config) {
  const nlohmann::json& json = config.json();
  try {
    BaseTrainingConfig c;
    c.resolution = json.value("resolution", c.resolution);
    c.seed = json.value("seed", c.seed);
    const nlohmann::json& vae = json.at("vae");
    c.vae = read_phase(vae, c.vae);
    c.kl_weight = vae.value("kl_weight", c.kl_weight);
    c.vae_config = vae.at("config").dump();
    const nlohmann::json& diffusion = json.at("diffusion");
    c.diffusion = read_phase(diffusion, c.diffusion);
    c.caption_dropout = diffusion.value("caption_dropout", c.caption_dropout);
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
    if (phase.steps < 0 || phase.batch_size < 1 || !(phase.lr > 0))
      throw Error(fmt::format("train-base: the {} phase needs steps >= 0, batch_size >= 1 and lr > 0", name));
  if (caption_dropout < 0 || caption_dropout > 1) throw Error("train-base: caption_dropout must be in [0, 1]");
}

BaseTrainingSummary train_base_model(const BaseTrainingConfig& config, const std::vector<std::string>& vocabulary,
                                     const CaptionedSource& source, const std::string& out_dir,
                                     const ExecutionOptions& execution, c10::ScalarType save_dtype,
                                     const ProgressCallback& progress) {
  config.validate();
  const auto started = std::chrono::system_clock::now();
  BaseTrainingSummary summary;
  write_directory_atomic(out_dir, [&](const fs::path& staging) {
    write_small_clip_tokenizer((staging / "tokenizer").string(), vocabulary);
    const ClipTokenizer tokenizer = ClipTokenizer::load((staging / "tokenizer").string());
    ClipTextConfig text_config = ClipTextConfig::from_json(JsonConfig::parse(config.text_encoder_config, "text_encoder"));
    text_config.vocab_size = tokenizer.vocab_size();
    const VaeConfig vae_config = VaeConfig::from_json(JsonConfig::parse(config.vae_config, "vae"));
    const UNetConfig unet_config = UNetConfig::from_json(JsonConfig::parse(config.unet_config, "unet"));
    if (config.resolution % vae_config.downsampling_factor() != 0)
      throw Error(fmt::format("train-base: resolution {} is not a multiple of the VAE's factor {}", config.resolution,
                              vae_config.downsampling_factor()));

    at::Generator generator = make_cpu_generator(config.seed);
    ClipTextModel text_encoder(text_config);
    UNet2DConditionModel unet(unet_config);
    AutoencoderKL vae(vae_config);
    for (torch::nn::Module* module : std::initializer_list<torch::nn::Module*>{text_encoder.get(), unet.get(), vae.get()}) {
      init_parameters(*module, generator);
      module->to(execution.device);
    }
    {
      at::NoGradGuard no_grad;  // CLIP's small embedding init
      text_encoder->text_model->embeddings->token_embedding->weight.normal_(0.0, 0.02, generator);
      text_encoder->text_model->embeddings->position_embedding->weight.normal_(0.0, 0.01, generator);
    }
    const at::Device device = execution.device;
    auto noise_like = [&](const at::Tensor& like) { return randn_like_torch(like.sizes(), generator, device); };

    // Phase 1: the VAE alone.
    vae->train();
    auto t0 = std::chrono::steady_clock::now();
    const std::vector<double> vae_losses = run_phase(
        "vae", config.vae, 0, trainable({vae.get()}), source,
        [&](const CaptionedBatch& batch) {
          const at::Tensor images = batch.images.to(device);
          const VaePosterior posterior = vae->encode(images);
          const at::Tensor reconstruction = vae->decode(posterior.mean + posterior.std * noise_like(posterior.mean));
          const at::Tensor kl =
              0.5 * (posterior.mean.square() + posterior.std.square() - 1.0 - posterior.logvar).mean();
          return (reconstruction - images).square().mean() + config.kl_weight * kl;
        },
        progress);
    summary.vae_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    vae->eval();
    for (auto& p : vae->parameters()) p.set_requires_grad(false);

    // Unit-variance latents, as SD's 0.18215 does for its VAE: measured on examples no phase uses.
    {
      at::NoGradGuard no_grad;
      const CaptionedBatch probe = source(uint64_t{1} << 62, 64);
      summary.scaling_factor = 1.0 / vae->encode(probe.images.to(device)).mean.std().item<double>();
    }
    vae->set_scaling_factor(summary.scaling_factor);

    // Phase 2: text encoder and UNet, on latents of the frozen VAE.
    text_encoder->train();
    unet->train();
    const NoiseSchedule schedule(NoiseScheduleConfig::sd15());
    const at::Tensor alphas_cumprod = schedule.alphas_cumprod.to(device);
    t0 = std::chrono::steady_clock::now();
    const std::vector<double> diffusion_losses = run_phase(
        "diffusion", config.diffusion, uint64_t{1} << 48, trainable({text_encoder.get(), unet.get()}), source,
        [&](const CaptionedBatch& batch) {
          const int64_t count = batch.images.size(0);
          std::vector<std::string> captions = batch.captions;
          const at::Tensor keep = at::rand({count}, generator) >= config.caption_dropout;
          for (int64_t i = 0; i < count; ++i)
            if (!keep[i].item<bool>()) captions[i] = "";
          at::Tensor latents;
          {
            at::NoGradGuard no_grad;
            const VaePosterior posterior = vae->encode(batch.images.to(device));
            latents = (posterior.mean + posterior.std * noise_like(posterior.mean)) * summary.scaling_factor;
          }
          const at::Tensor timesteps = at::randint(0, schedule.num_train_timesteps(), {count}, generator).to(device);
          const at::Tensor noise = noise_like(latents);
          const at::Tensor a = alphas_cumprod.index_select(0, timesteps).view({count, 1, 1, 1});
          const at::Tensor noisy = a.sqrt() * latents + (1.0 - a).sqrt() * noise;
          const at::Tensor context =
              text_encoder->forward(tokenize_prompts(tokenizer, captions).to(device)).last_hidden_state;
          return (unet->forward(noisy, timesteps, context) - noise).square().mean();
        },
        progress);
    summary.diffusion_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!vae_losses.empty()) std::tie(summary.vae_loss_first, summary.vae_loss_last) = first_and_last(vae_losses);
    if (!diffusion_losses.empty())
      std::tie(summary.diffusion_loss_first, summary.diffusion_loss_last) = first_and_last(diffusion_losses);

    write_model_parts(staging.string(), *text_encoder, *unet, *vae, sd15_scheduler_config_json(), save_dtype);
    const nlohmann::json record = {
        {"started", std::chrono::duration_cast<std::chrono::seconds>(started.time_since_epoch()).count()},
        {"seed", config.seed},
        {"resolution", config.resolution},
        {"vae", {{"steps", config.vae.steps}, {"batch_size", config.vae.batch_size}, {"lr", config.vae.lr},
                 {"kl_weight", config.kl_weight}, {"seconds", summary.vae_seconds},
                 {"loss_first", summary.vae_loss_first}, {"loss_last", summary.vae_loss_last}}},
        {"diffusion", {{"steps", config.diffusion.steps}, {"batch_size", config.diffusion.batch_size},
                       {"lr", config.diffusion.lr}, {"caption_dropout", config.caption_dropout},
                       {"seconds", summary.diffusion_seconds}, {"loss_first", summary.diffusion_loss_first},
                       {"loss_last", summary.diffusion_loss_last}}},
        {"scaling_factor", summary.scaling_factor},
        {"device", device.str()}};
    write_file_atomic((staging / "train_base.json").string(), record.dump(2));
  });
  return summary;
}

}  // namespace singleinsert
