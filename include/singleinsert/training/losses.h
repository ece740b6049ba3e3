#pragma once
// SingleInsert's losses (Wu et al. 2023) for one training step, computed as the authors' train.py
// computes them: all in latent space, plain means over every element (not divided by the mask
// area), x0 recovered from each noise prediction.
//
//   L_fg = mean(M * (x0(eps(x_t, "* class")) - z0)^2)
//   L_bg = mean((1 - M) * (x0(eps(x_t, "* class")) - x0_ref)^2)
//   L_sm = mean((x0(eps(x_t, "class")) - x0_ref)^2)                       (stage II)
//
// x0_ref is the class prompt's prediction, detached: in stage I from the same (frozen) model;
// in stage II from the base model with every LoRA switched off, conditioned on the frozen text
// encoder's class embedding (the paper) or on the LoRA text encoder's (the authors' code).
#include <ATen/core/Tensor.h>

#include "singleinsert/models/attention.h"
#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/lora.h"
#include "singleinsert/models/unet.h"
#include "singleinsert/sampling/noise_schedule.h"

namespace singleinsert {

enum class SmReference { kFrozen, kLoraTextEncoder };

struct LossInputs {
  at::Tensor z0;         // [B, C, h, w] scaled source latents (posterior samples)
  at::Tensor noise;      // [B, C, h, w]
  at::Tensor timesteps;  // [B] int64
  at::Tensor mask;       // [1 or B, 1, h, w] soft foreground mask in [0, 1]
  at::Tensor star;       // [D]: the trigger's input word embedding (gradients flow to it)
  at::Tensor star_ids;   // [1, L]: "<trigger> <class>", the trigger right after BOS
  at::Tensor class_ids;  // [1, L]: "<class>"
};

struct LossSettings {
  bool stage2 = false;
  double bg_weight = 1.0;   // gamma
  double sm_weight = 1.0;   // eta (stage II)
  SmReference sm_reference = SmReference::kFrozen;
  AttentionHook* star_hook = nullptr;  // on the UNet's cross-attention for the "* class" pass only
};

struct LossOutputs {
  at::Tensor x_t;
  at::Tensor enc_star, enc_cls;          // [1, L, D]
  at::Tensor eps_star, eps_cls, eps_ref; // [B, C, h, w]
  at::Tensor x0_star, x0_cls, x0_ref;
  at::Tensor fg, bg, sm, total;          // 0-d
};

// diffusers' DDPMScheduler.add_noise: sqrt(abar_t) z0 + sqrt(1 - abar_t) noise.
at::Tensor add_noise(const NoiseSchedule& schedule, const at::Tensor& z0, const at::Tensor& noise,
                     const at::Tensor& timesteps);
// (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (train.py's Getx0FromPred).
at::Tensor predict_x0(const NoiseSchedule& schedule, const at::Tensor& x_t, const at::Tensor& eps,
                      const at::Tensor& timesteps);
// Text encoder states with the word embedding after BOS replaced by `star`.
at::Tensor encode_with_star(ClipTextModelImpl& text_encoder, const at::Tensor& ids, const at::Tensor& star);

// `lora` is the network being trained (stage II); it is switched off for the reference.
LossOutputs singleinsert_losses(UNet2DConditionModelImpl& unet, ClipTextModelImpl& text_encoder,
                                const NoiseSchedule& schedule, LoraNetwork* lora, const LossInputs& inputs,
                                const LossSettings& settings);

}  // namespace singleinsert
