#include "singleinsert/pipeline/text_to_image.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <optional>

#include "singleinsert/core/error.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/tensor_format.h"
#include "singleinsert/models/cross_attention.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/sampling/noise_schedule.h"
#include "singleinsert/sampling/sampler.h"
#include "singleinsert/training/kv_tokens.h"

namespace singleinsert {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<std::string> per_prompt_negatives(const GenerateOptions& options) {
  if (options.negative_prompts.empty()) return std::vector<std::string>(options.prompts.size(), "");
  if (options.negative_prompts.size() == 1)
    return std::vector<std::string>(options.prompts.size(), options.negative_prompts[0]);
  return options.negative_prompts;
}

// Repeats each row `times` times in place: [a, b] -> [a, a, b, b] (diffusers' repeat + view).
at::Tensor repeat_rows(const at::Tensor& x, int64_t times) {
  return times == 1 ? x : x.repeat_interleave(times, 0);
}

// Text states [rows, 77, D] with every per-stage concept's token standing for its stage-s key
// (or value) token, laid out as `context` is.
at::Tensor stage_states(ModelBundle& bundle, const GenerateOptions& options, const std::vector<std::string>& negatives,
                        bool guided, int64_t stage, bool key) {
  // The rows go back whatever happens, so that the bundle's next run reads the concept's own.
  struct RowsRestored {
    at::Tensor table;
    std::vector<std::pair<int64_t, at::Tensor>> saved;
    ~RowsRestored() {
      for (auto it = saved.rbegin(); it != saved.rend(); ++it) table[it->first].copy_(it->second);
    }
  } rows{bundle.text_encoder->text_model->embeddings->token_embedding->weight, {}};
  for (const auto& tokens : bundle.stage_tokens) {
    rows.saved.emplace_back(tokens.token_id, rows.table[tokens.token_id].clone());
    rows.table[tokens.token_id].copy_((key ? tokens.keys : tokens.values)[stage]);
  }
  at::Tensor states = repeat_rows(encode_prompts(bundle, options.prompts), options.images_per_prompt);
  if (guided) states = at::cat({repeat_rows(encode_prompts(bundle, negatives), options.images_per_prompt), states});
  return states;
}

}  // namespace

void validate_generate_options(const GenerateOptions& options, int64_t factor, int64_t train_timesteps) {
  if (options.prompts.empty()) throw Error("no prompt given");
  if (options.negative_prompts.size() > 1 && options.negative_prompts.size() != options.prompts.size())
    throw Error(fmt::format("{} negative prompts for {} prompts (give one for all, or one per prompt)",
                            options.negative_prompts.size(), options.prompts.size()));
  if (options.images_per_prompt < 1) throw Error(fmt::format("--images-per-prompt must be at least 1, got {}", options.images_per_prompt));
  if (options.steps < 1) throw Error(fmt::format("--steps must be at least 1, got {}", options.steps));
  if (options.steps > train_timesteps)
    throw Error(fmt::format("--steps {} is more than the scheduler's {} training timesteps", options.steps,
                            train_timesteps));
  if (options.width <= 0 || options.height <= 0 || options.width % factor != 0 || options.height % factor != 0)
    throw Error(fmt::format("--width and --height must be positive multiples of {} (the VAE's downsampling factor), "
                            "got {}x{}",
                            factor, options.width, options.height));
  if (options.guidance_scale < 0) throw Error(fmt::format("--guidance must not be negative, got {}", options.guidance_scale));
  bool known = false;
  for (const auto& name : sampler_names()) known = known || name == options.sampler;
  if (!known) {
    std::string names;
    for (const auto& name : sampler_names()) names += (names.empty() ? "" : ", ") + name;
    throw Error(fmt::format("unknown sampler '{}' (choose one of: {})", options.sampler, names));
  }
}

at::Tensor seeded_latents(uint64_t seed, int64_t count, int64_t channels, int64_t height, int64_t width) {
  at::Generator generator = make_cpu_generator(seed);
  return randn_like_torch({count, channels, height, width}, generator);
}

at::Tensor postprocess_images(const at::Tensor& decoded) {
  return (decoded.to(at::kFloat) / 2 + 0.5).clamp(0, 1).permute({0, 2, 3, 1}).contiguous().cpu();
}

at::Tensor to_uint8_pixels(const at::Tensor& images) {
  // numpy_to_pil: (images * 255).round().astype("uint8"); round is half-to-even in both.
  return (images * 255).round().to(at::kByte);
}

GeneratedImages generate(ModelBundle& bundle, const GenerateOptions& options, const ProgressCallback& progress,
                         DenoiseTrace* trace) {
  if (!bundle.unet) throw Error("the UNet was released after an earlier run");
  const int64_t factor = bundle.vae_scale_factor();
  validate_generate_options(options, factor, NoiseScheduleConfig::from_json(bundle.scheduler_config).num_train_timesteps);
  const auto start = std::chrono::steady_clock::now();
  const auto device = bundle.execution.device;
  const auto dtype = bundle.execution.dtype;
  at::NoGradGuard no_grad;

  const auto negatives = per_prompt_negatives(options);
  const int64_t count = static_cast<int64_t>(options.prompts.size()) * options.images_per_prompt;
  const bool guided = options.guidance_scale > 1.0;
  // [uncond x count; cond x count] (diffusers' order), each prompt repeated per image.
  at::Tensor context = repeat_rows(encode_prompts(bundle, options.prompts), options.images_per_prompt);
  if (guided) context = at::cat({repeat_rows(encode_prompts(bundle, negatives), options.images_per_prompt), context});
  // Beyond Inserting's per-stage tokens: each stage's cross-attention reads its own key and value states.
  std::optional<PerStageKeyValues> per_stage;
  if (!bundle.stage_tokens.empty()) {
    std::vector<at::Tensor> keys, values;
    for (int64_t s = 0; s < bundle.stage_tokens.front().keys.size(0); ++s) {
      keys.push_back(stage_states(bundle, options, negatives, guided, s, true));
      values.push_back(stage_states(bundle, options, negatives, guided, s, false));
    }
    per_stage.emplace(*bundle.unet, std::move(keys), std::move(values));
  }
  if (options.release_models) bundle.release_text_encoder();
  std::optional<AttentionHookGuard> hooked;
  if (per_stage) hooked.emplace(*bundle.unet, *per_stage);

  if (trace) trace->context = context;
  auto sampler = make_sampler(options.sampler, bundle.scheduler_config);
  sampler->set_timesteps(options.steps);

  const int64_t channels = bundle.unet->config().in_channels;
  const int64_t h = options.height / factor, w = options.width / factor;
  at::Generator generator = make_cpu_generator(options.seed);
  at::Tensor latents;
  if (options.initial_latents.has_value()) {
    latents = options.initial_latents->to(at::kFloat).cpu();
    if (latents.sizes() != at::IntArrayRef({count, channels, h, w}))
      throw Error(fmt::format("initial latents have shape {} but this run needs {}", shape_string(latents.sizes()),
                              shape_string({count, channels, h, w})));
  } else {
    latents = randn_like_torch({count, channels, h, w}, generator);
  }
  // The scheduler runs in float32 on the model's device; only the UNet sees the model dtype.
  latents = (latents * sampler->init_noise_sigma()).to(device);

  const int64_t total = sampler->loop_length();
  for (int64_t i = 0; i < total; ++i) {
    at::Tensor input = guided ? at::cat({latents, latents}) : latents;
    input = sampler->scale_model_input(input, i);
    const at::Tensor t = sampler->timestep(i).to(device);
    at::Tensor eps = bundle.unet->forward(input.to(dtype), t, context).to(at::kFloat);
    if (trace) {
      trace->unet_inputs.push_back(input);
      trace->unet_timesteps.push_back(t);
      trace->unet_outputs.push_back(eps);
    }
    if (guided) {
      const auto halves = eps.chunk(2);
      eps = halves[0] + (halves[1] - halves[0]) * options.guidance_scale;
    }
    latents = sampler->step(eps, i, latents, &generator);
    if (trace) trace->latents.push_back(latents);
    if (progress) progress({"denoise", i + 1, total, seconds_since(start), {}});
  }

  hooked.reset();
  if (options.release_models) bundle.release_unet();
  GeneratedImages out;
  // The norms' dtype is the VAE's compute dtype (half-precision stored weights are upcast).
  const auto vae_dtype = bundle.vae->decoder->conv_norm_out->weight.scalar_type();
  const float scaling = static_cast<float>(bundle.vae->config().scaling_factor);
  std::vector<at::Tensor> decoded;
  for (int64_t i = 0; i < count; ++i) {
    decoded.push_back(bundle.vae->decode((latents.narrow(0, i, 1) / scaling).to(vae_dtype)));
    if (progress) progress({"decode", i + 1, count, seconds_since(start), {}});
  }
  out.images = postprocess_images(at::cat(decoded));
  out.pixels = to_uint8_pixels(out.images);
  out.latents = latents.cpu();
  for (size_t p = 0; p < options.prompts.size(); ++p)
    for (int k = 0; k < options.images_per_prompt; ++k) {
      out.prompts.push_back(options.prompts[p]);
      out.negative_prompts.push_back(negatives[p]);
    }
  out.seconds = seconds_since(start);
  return out;
}

}  // namespace singleinsert
