#include "singleinsert/training/losses.h"

#include <ATen/ATen.h>

#include <optional>

#include "singleinsert/models/cross_attention.h"

namespace singleinsert {
namespace {

// Per-sample schedule coefficients broadcast over [B, C, h, w], in the batch's device and dtype.
at::Tensor per_sample(const at::Tensor& values, const at::Tensor& timesteps, const at::Tensor& like) {
  return values.to(like.device()).index_select(0, timesteps.to(like.device())).to(like.scalar_type()).view({-1, 1, 1, 1});
}

}  // namespace

at::Tensor add_noise(const NoiseSchedule& schedule, const at::Tensor& z0, const at::Tensor& noise,
                     const at::Tensor& timesteps) {
  const at::Tensor abar = schedule.alphas_cumprod;
  return per_sample(abar.pow(0.5), timesteps, z0) * z0 + per_sample((1.0 - abar).pow(0.5), timesteps, z0) * noise;
}

at::Tensor predict_x0(const NoiseSchedule& schedule, const at::Tensor& x_t, const at::Tensor& eps,
                      const at::Tensor& timesteps) {
  const at::Tensor abar = schedule.alphas_cumprod;
  return (x_t - per_sample((1.0 - abar).sqrt(), timesteps, x_t) * eps) / per_sample(abar.sqrt(), timesteps, x_t);
}

at::Tensor encode_with_star(ClipTextModelImpl& text_encoder, const at::Tensor& ids, const at::Tensor& star) {
  const at::Tensor words = text_encoder.token_embeddings(ids);  // [1, L, D]
  const at::Tensor star_row = star.to(words.scalar_type()).reshape({1, 1, -1}).expand({words.size(0), 1, words.size(2)});
  const at::Tensor embeds = at::cat({words.narrow(1, 0, 1), star_row, words.narrow(1, 2, words.size(1) - 2)}, 1);
  return text_encoder.forward_embeds(embeds, ids).last_hidden_state;
}

LossOutputs singleinsert_losses(UNet2DConditionModelImpl& unet, ClipTextModelImpl& text_encoder,
                                const NoiseSchedule& schedule, LoraNetwork* lora, const LossInputs& in,
                                const LossSettings& settings) {
  LossOutputs out;
  const int64_t batch = in.z0.size(0);
  out.x_t = add_noise(schedule, in.z0, in.noise, in.timesteps);
  // The prompts are the same for every row: encode once, broadcast over the batch.
  out.enc_star = encode_with_star(text_encoder, in.star_ids, in.star);
  out.enc_cls = text_encoder.forward(in.class_ids).last_hidden_state;
  auto rows = [batch](const at::Tensor& enc) { return enc.expand({batch, enc.size(1), enc.size(2)}); };

  // "* class" and "class" in one UNet call.
  const at::Tensor dtype_like = unet.conv_in->weight;
  std::optional<AttentionHookGuard> hooked;
  if (settings.star_hook) hooked.emplace(unet, *settings.star_hook);
  const at::Tensor eps = unet.forward(at::cat({out.x_t, out.x_t}).to(dtype_like.scalar_type()),
                                      at::cat({in.timesteps, in.timesteps}),
                                      at::cat({rows(out.enc_star), rows(out.enc_cls)}).to(dtype_like.scalar_type()))
                             .to(at::kFloat);
  hooked.reset();
  const auto halves = eps.chunk(2);
  out.eps_star = halves[0];
  out.eps_cls = halves[1];
  out.x0_star = predict_x0(schedule, out.x_t, out.eps_star, in.timesteps);
  out.x0_cls = predict_x0(schedule, out.x_t, out.eps_cls, in.timesteps);

  if (!settings.stage2) {
    out.eps_ref = out.eps_cls.detach();
    out.x0_ref = out.x0_cls.detach();
  } else {
    at::NoGradGuard no_grad;
    LoraDisabled base_model(lora);
    const at::Tensor enc_ref = settings.sm_reference == SmReference::kFrozen
                                   ? text_encoder.forward(in.class_ids).last_hidden_state
                                   : out.enc_cls.detach();
    out.eps_ref = unet.forward(out.x_t.to(dtype_like.scalar_type()), in.timesteps,
                               rows(enc_ref).to(dtype_like.scalar_type()))
                      .to(at::kFloat);
    out.x0_ref = predict_x0(schedule, out.x_t, out.eps_ref, in.timesteps);
  }

  const at::Tensor mask = in.mask.to(out.x_t.device(), at::kFloat);
  out.fg = ((out.x0_star - in.z0).pow(2) * mask).mean();
  out.bg = ((out.x0_star - out.x0_ref).pow(2) * (1.0 - mask)).mean();
  out.total = out.fg + out.bg * settings.bg_weight;
  if (settings.stage2) {
    out.sm = (out.x0_cls - out.x0_ref).pow(2).mean();
    out.total = out.total + out.sm * settings.sm_weight;
  } else {
    out.sm = at::zeros({}, out.fg.options());
  }
  return out;
}

}  // namespace singleinsert
