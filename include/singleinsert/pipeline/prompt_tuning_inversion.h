#pragma once
// Prompt Tuning Inversion (Dong, Xue, Duan, Han 2023): text-driven editing of a real image with
// no mask and no description of it.
//
//   1. Inversion: z*_0 = E(image); z*_k = DDIM inverse step of z*_{k-1} under the source prompt,
//      with the edit's guidance by default (sampling/ddim_inversion.h), the trajectory kept.
//   2. Reconstruction, walking back from z_N = z*_N: at each step k a conditional embedding c_k
//      (the text encoder's output, [1, 77, D]; warm-started from c_{k+1}, the first from the
//      source prompt's) is optimised with Adam so that the guided DDIM step lands on the kept
//      trajectory:  min_c || step_k(z_k, eps_u + w (eps(z_k, c) - eps_u)) - z*_{k-1} ||^2,
//      a few inner iterations with an early stop; then z_{k-1} = step_k with the final c_k.
//   3. Editing from z*_N: the same guided steps on c = eta * c_target + (1 - eta) * c_k.
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "singleinsert/core/progress.h"
#include "singleinsert/pipeline/model_bundle.h"

namespace singleinsert {

struct EditOptions {
  std::string prompt;         // the target
  std::string source_prompt;  // "" (none needed): the start of c and the inversion's condition
  double eta = 0.8;           // how far the edit moves towards the target
  int steps = 50;
  double guidance_scale = 7.5;
  // The inversion's guidance; none: the edit's. Measured in the world model (docs/methods.md), an
  // unguided pivot (1, null-text inversion's) reconstructs a little better but its tuned
  // embeddings sit further from any prompt's, so the edits keep less of the image.
  std::optional<double> inversion_guidance;
  int inner_steps = 10;       // Adam iterations per step, at most
  double learning_rate = 1e-2;
  double early_stop = 1e-5;   // stop a step's iterations once its loss is below this
};

struct EditResult {
  at::Tensor edited;          // float32 [1, H, W, 3] in [0, 1], CPU
  at::Tensor reconstruction;  // the reconstruction stage's result, likewise
  at::Tensor round_trip;      // the image through the VAE alone, likewise (the ceiling)
  at::Tensor trajectory;      // z*_0 ... z*_N [N + 1, C, h, w], CPU
  std::vector<double> step_losses;  // per reconstruction step, the final loss (N..1 order)
  std::vector<int> step_iterations;
  double seconds = 0;
};

void validate_edit_options(const EditOptions& options, int64_t train_timesteps);

// DDIM inversion of `latents` [1, C, h, w] (scaled) under `context` [1, 77, D] (and, with
// guidance > 1, `uncond` [1, 77, D]): z*_0 ... z*_N.
at::Tensor ddim_invert(ModelBundle& bundle, const at::Tensor& latents, const at::Tensor& context,
                       const at::Tensor& uncond, int steps, double guidance_scale,
                       const ProgressCallback& progress = nullptr);

// Stages 1 and 2, which do not depend on the target: `pixels` [1, 3, H, W] in [-1, 1] with H and
// W multiples of the VAE factor. The result's `edited` is left empty.
struct TunedInversion {
  EditResult result;
  std::vector<at::Tensor> embeddings;  // c_k [1, 77, D] per step, float32
  at::Tensor uncond;                   // [1, 77, D]
};
TunedInversion tune_inversion(ModelBundle& bundle, const at::Tensor& pixels, const EditOptions& options,
                              const ProgressCallback& progress = nullptr);
// Stage 3 for one target: float32 [1, H, W, 3] in [0, 1], CPU.
at::Tensor edit_tuned(ModelBundle& bundle, const TunedInversion& tuned, const std::string& prompt, double eta,
                      const EditOptions& options, const ProgressCallback& progress = nullptr);

// All three stages for options.prompt.
EditResult prompt_tuning_edit(ModelBundle& bundle, const at::Tensor& pixels, const EditOptions& options,
                              const ProgressCallback& progress = nullptr);

// 10 log10(1 / mse) for images in [0, 1].
double psnr(const at::Tensor& a, const at::Tensor& b);

}  // namespace singleinsert
