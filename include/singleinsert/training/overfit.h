#pragma once
// The overfit ceiling of the toy world's evaluation: every UNet weight fine-tuned on one image
// (the latent of its VAE posterior mean) and its caption until the model redraws it. What
// generations of that caption then show is what the model can draw of the image at all, the
// upper end a concept is measured against.
#include <ATen/core/Tensor.h>

#include "singleinsert/core/progress.h"
#include "singleinsert/training/trainer.h"

namespace singleinsert {

struct OverfitOptions {
  int steps = 400;
  int batch = 8;
  double lr = 2e-4;
  // The share of each batch conditioned on the empty prompt, so that classifier-free guidance
  // does not push the overfit caption's prediction away from an unconditional one it never
  // taught (guidance 7.5 multiplies their difference).
  double unconditional_share = 0.5;
  uint64_t seed = 0;
};

struct OverfitResult {
  double loss_first = 0, loss_last = 0;  // means over the first and last tenth of the steps
  double seconds = 0;
};

// Trains `base.unet` in place (epsilon prediction on the model's noise schedule, AdamW, no
// weight decay) on `pixels` [1, 3, R, R] in [-1, 1] with the text encoder's output for
// `caption_ids` [1, 77] (and for `empty_ids` [1, 77], the empty prompt, on the batch's
// unconditional share); the text encoder and the VAE stay frozen.
OverfitResult overfit_unet(BaseModel base, const at::Tensor& pixels, const at::Tensor& caption_ids,
                           const at::Tensor& empty_ids, const OverfitOptions& options,
                           const ProgressCallback& progress = {});

}  // namespace singleinsert
