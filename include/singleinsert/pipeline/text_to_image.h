#pragma once
// Text to image as diffusers' StableDiffusionPipeline does it: seeded latents, classifier-free
// guidance with negative prompts, any sampler, VAE decoding.
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <string>
#include <vector>

#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/core/progress.h"

namespace singleinsert {

struct GenerateOptions {
  std::vector<std::string> prompts;
  std::vector<std::string> negative_prompts;  // none (""), one for every prompt, or one per prompt
  int images_per_prompt = 1;
  int steps = 50;
  double guidance_scale = 7.5;  // classifier-free guidance is off at 1 or below
  std::string sampler = "ddim";
  uint64_t seed = 0;
  int width = 512;
  int height = 512;
  // Starting latents [prompts x images, C, H/f, W/f] instead of seeded noise (reproducing a
  // run from elsewhere); they are scaled by the sampler's init_noise_sigma like noise is.
  c10::optional<at::Tensor> initial_latents;
  // A one-shot run: free the text encoder once the prompts are encoded and the UNet once the
  // latents are sampled (ModelBundle::release_text_encoder / release_unet).
  bool release_models = false;
};

struct GeneratedImages {
  at::Tensor pixels;     // uint8 [N, H, W, 3], CPU: round(255 * image) as diffusers' numpy_to_pil
  at::Tensor images;     // float32 [N, H, W, 3] in [0, 1], CPU
  at::Tensor latents;    // final latents [N, C, h, w], CPU float32
  std::vector<std::string> prompts;           // per image, prompt-major
  std::vector<std::string> negative_prompts;  // per image
  double seconds = 0;
};

// Throws Error for options that cannot run (sizes, steps, counts, unknown sampler).
void validate_generate_options(const GenerateOptions& options, int64_t vae_scale_factor,
                               int64_t train_timesteps = 1000);

// The seeded starting noise: one float32 randn of [count, channels, h, w] on a CPU
// torch.Generator seeded with `seed` (what diffusers draws for the same seed).
at::Tensor seeded_latents(uint64_t seed, int64_t count, int64_t channels, int64_t height, int64_t width);

// What went in and out of the UNet at every step (for parity tests and debugging).
struct DenoiseTrace {
  at::Tensor context;                     // [2N or N, 77, D] (unconditional rows first)
  std::vector<at::Tensor> unet_inputs;    // scaled model inputs per step
  std::vector<at::Tensor> unet_timesteps;
  std::vector<at::Tensor> unet_outputs;   // raw UNet outputs (before guidance)
  std::vector<at::Tensor> latents;        // latents after each step
};

GeneratedImages generate(ModelBundle& bundle, const GenerateOptions& options,
                         const ProgressCallback& progress = nullptr, DenoiseTrace* trace = nullptr);

// Decoded VAE output [N, 3, H, W] in about [-1, 1] -> float [N, H, W, 3] in [0, 1].
at::Tensor postprocess_images(const at::Tensor& decoded);
at::Tensor to_uint8_pixels(const at::Tensor& images);

}  // namespace singleinsert
