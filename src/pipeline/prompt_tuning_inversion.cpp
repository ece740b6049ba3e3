#include "singleinsert/pipeline/prompt_tuning_inversion.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <optional>

#include "singleinsert/core/error.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/pipeline/text_to_image.h"
#include "singleinsert/sampling/ddim_inversion.h"
#include "singleinsert/sampling/noise_schedule.h"
#include "singleinsert/training/adamw.h"

namespace singleinsert {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// eps of `latents` [1, C, h, w] at `t`: guided (uncond and cond in one batch, uncond first, as
// diffusers) when `uncond` is given and the scale is above 1.
at::Tensor guided_eps(ModelBundle& bundle, const at::Tensor& latents, int64_t t, const at::Tensor& cond,
                      const at::Tensor& uncond, double scale) {
  const auto dtype = bundle.execution.dtype;
  const at::Tensor timestep = at::scalar_tensor(t, at::kLong).to(latents.device());
  if (scale <= 1.0 || !uncond.defined())
    return bundle.unet->forward(latents.to(dtype), timestep, cond.to(dtype)).to(at::kFloat);
  const at::Tensor eps =
      bundle.unet->forward(at::cat({latents, latents}).to(dtype), timestep, at::cat({uncond, cond}).to(dtype)).to(at::kFloat);
  const auto halves = eps.chunk(2);
  return halves[0] + (halves[1] - halves[0]) * scale;
}

}  // namespace

void validate_edit_options(const EditOptions& o, int64_t train_timesteps) {
  if (o.prompt.empty()) throw Error("--prompt (the edit's target) is required");
  if (o.steps < 1 || o.steps > train_timesteps)
    throw Error(fmt::format("--steps must be between 1 and {}, got {}", train_timesteps, o.steps));
  if (!(o.eta >= 0 && o.eta <= 1)) throw Error(fmt::format("--eta must be between 0 and 1, got {}", o.eta));
  if (!(o.guidance_scale >= 0)) throw Error(fmt::format("--guidance must not be negative, got {}", o.guidance_scale));
  if (o.inversion_guidance && !(*o.inversion_guidance >= 0))
    throw Error(fmt::format("--inversion-guidance must not be negative, got {}", *o.inversion_guidance));
  if (o.inner_steps < 0) throw Error(fmt::format("--inner-steps must not be negative, got {}", o.inner_steps));
  if (!(o.learning_rate > 0)) throw Error(fmt::format("--lr must be positive, got {}", o.learning_rate));
}

at::Tensor ddim_invert(ModelBundle& bundle, const at::Tensor& latents, const at::Tensor& context,
                       const at::Tensor& uncond, int steps, double guidance_scale, const ProgressCallback& progress) {
  const auto start = std::chrono::steady_clock::now();
  at::NoGradGuard no_grad;
  const DdimInversion inversion(bundle.scheduler_config, steps);
  std::vector<at::Tensor> trajectory = {latents.to(at::kFloat)};
  at::Tensor z = trajectory.front();
  for (int k = 0; k < inversion.steps(); ++k) {
    const at::Tensor eps = guided_eps(bundle, z, inversion.timesteps()[k], context, uncond, guidance_scale);
    z = inversion.invert_step(eps, k, z);
    trajectory.push_back(z);
    if (progress) progress({"invert", k + 1, inversion.steps(), seconds_since(start), {}});
  }
  return at::cat(trajectory);  // [N + 1, C, h, w]
}

double psnr(const at::Tensor& a, const at::Tensor& b) {
  const double mse = (a.to(at::kDouble) - b.to(at::kDouble)).pow(2).mean().item<double>();
  return mse > 0 ? 10.0 * std::log10(1.0 / mse) : std::numeric_limits<double>::infinity();
}

namespace {

at::Tensor decode_latents(ModelBundle& bundle, const at::Tensor& z) {
  at::NoGradGuard no_grad;
  const float scaling = static_cast<float>(bundle.vae->config().scaling_factor);
  const auto vae_dtype = bundle.vae->decoder->conv_norm_out->weight.scalar_type();
  return postprocess_images(bundle.vae->decode((z / scaling).to(vae_dtype)));
}

}  // namespace

TunedInversion tune_inversion(ModelBundle& bundle, const at::Tensor& pixels, const EditOptions& options,
                              const ProgressCallback& progress) {
  const auto start = std::chrono::steady_clock::now();
  EditOptions checked = options;
  if (checked.prompt.empty()) checked.prompt = "-";  // the target comes later (edit_tuned)
  validate_edit_options(checked, NoiseScheduleConfig::from_json(bundle.scheduler_config).num_train_timesteps);
  if (!bundle.vae->has_encoder()) throw Error("edit needs the VAE's encoder");
  const auto device = bundle.execution.device;
  const auto dtype = bundle.execution.dtype;
  const float scaling = static_cast<float>(bundle.vae->config().scaling_factor);
  const auto vae_dtype = bundle.vae->decoder->conv_norm_out->weight.scalar_type();

  TunedInversion tuned;
  EditResult& out = tuned.result;
  at::Tensor z0, source;
  {
    at::NoGradGuard no_grad;
    z0 = bundle.vae->encode(pixels.to(device, vae_dtype)).mean.to(at::kFloat) * scaling;
    source = encode_prompts(bundle, {options.source_prompt}).to(at::kFloat);
    tuned.uncond = encode_prompts(bundle, {""}).to(at::kFloat);
  }
  const at::Tensor& uncond = tuned.uncond;
  out.round_trip = decode_latents(bundle, z0);
  const bool guided = options.guidance_scale > 1.0;
  // One precision for all three stages, so that each c_k is tuned for the numerics it is used in.
  std::optional<compat::AutocastGuard> mixed_precision;
  if (dtype != at::kFloat) mixed_precision.emplace(device.type(), dtype);
  out.trajectory = ddim_invert(bundle, z0, source, uncond, options.steps,
                               options.inversion_guidance.value_or(options.guidance_scale), progress);

  const DdimInversion inversion(bundle.scheduler_config, options.steps);
  const int n = inversion.steps();
  // Reconstruction: one embedding per step, fitted so the guided step stays on the trajectory.
  tuned.embeddings.resize(n);
  at::Tensor c = source.clone();
  at::Tensor z = out.trajectory[n].unsqueeze(0);
  for (int k = n - 1; k >= 0; --k) {
    const at::Tensor t = at::scalar_tensor(inversion.timesteps()[k], at::kLong).to(device);
    const at::Tensor goal = out.trajectory[k].unsqueeze(0);
    at::Tensor eps_uncond;
    if (guided) {
      at::NoGradGuard no_grad;
      eps_uncond = bundle.unet->forward(z.to(dtype), t, uncond.to(dtype)).to(at::kFloat);
    }
    auto step_with = [&](const at::Tensor& embedding) {
      const at::Tensor cond = bundle.unet->forward(z.to(dtype), t, embedding.to(dtype)).to(at::kFloat);
      const at::Tensor eps = guided ? eps_uncond + (cond - eps_uncond) * options.guidance_scale : cond;
      return inversion.denoise_step(eps, k, z);
    };
    at::Tensor parameter = c.detach().clone().requires_grad_(true);
    AdamW adam({parameter}, {options.learning_rate, 0.9, 0.999, 1e-8, 0.0});
    double loss_value = 0;
    int iterations = 0;
    for (; iterations < options.inner_steps; ++iterations) {
      const at::Tensor loss = (step_with(parameter) - goal).pow(2).mean();
      loss_value = loss.item<double>();
      if (loss_value < options.early_stop) break;
      adam.zero_grad();
      loss.backward();
      adam.step();
    }
    c = parameter.detach();
    tuned.embeddings[k] = c;
    {
      at::NoGradGuard no_grad;
      z = step_with(c);
      if (iterations == options.inner_steps) loss_value = (z - goal).pow(2).mean().item<double>();
    }
    out.step_losses.push_back(loss_value);
    out.step_iterations.push_back(iterations);
    if (progress) progress({"reconstruct", n - k, n, seconds_since(start), {{"loss", loss_value}}});
  }
  mixed_precision.reset();
  out.reconstruction = decode_latents(bundle, z);
  out.trajectory = out.trajectory.cpu();
  out.seconds = seconds_since(start);
  return tuned;
}

at::Tensor edit_tuned(ModelBundle& bundle, const TunedInversion& tuned, const std::string& prompt, double eta,
                      const EditOptions& options, const ProgressCallback& progress) {
  const auto start = std::chrono::steady_clock::now();
  at::NoGradGuard no_grad;
  const DdimInversion inversion(bundle.scheduler_config, options.steps);
  const int n = inversion.steps();
  if (static_cast<int>(tuned.embeddings.size()) != n)
    throw Error(fmt::format("the tuned inversion has {} steps, the edit {}", tuned.embeddings.size(), n));
  const at::Tensor target = encode_prompts(bundle, {prompt}).to(at::kFloat);
  std::optional<compat::AutocastGuard> mixed_precision;
  if (bundle.execution.dtype != at::kFloat) mixed_precision.emplace(bundle.execution.device.type(), bundle.execution.dtype);
  // Editing: the same steps from z*_N on the interpolated embedding.
  at::Tensor z = tuned.result.trajectory[n].unsqueeze(0).to(bundle.execution.device);
  for (int k = n - 1; k >= 0; --k) {
    const at::Tensor mixed = target * eta + tuned.embeddings[k] * (1.0 - eta);
    z = inversion.denoise_step(
        guided_eps(bundle, z, inversion.timesteps()[k], mixed, tuned.uncond, options.guidance_scale), k, z);
    if (progress) progress({"edit", n - k, n, seconds_since(start), {}});
  }
  mixed_precision.reset();
  return decode_latents(bundle, z);
}

EditResult prompt_tuning_edit(ModelBundle& bundle, const at::Tensor& pixels, const EditOptions& options,
                              const ProgressCallback& progress) {
  const auto start = std::chrono::steady_clock::now();
  validate_edit_options(options, NoiseScheduleConfig::from_json(bundle.scheduler_config).num_train_timesteps);
  TunedInversion tuned = tune_inversion(bundle, pixels, options, progress);
  tuned.result.edited = edit_tuned(bundle, tuned, options.prompt, options.eta, options, progress);
  tuned.result.seconds = seconds_since(start);
  return std::move(tuned.result);
}

}  // namespace singleinsert
