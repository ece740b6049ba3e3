#pragma once
// diffusers' UNet2DConditionModel for SD v1.x/v2.x: noise prediction eps(x_t, t, text).
// Registered names equal the keys of unet/diffusion_pytorch_model.safetensors.
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <map>
#include <string>
#include <vector>

#include "singleinsert/models/layers.h"
#include "singleinsert/models/resnet.h"
#include "singleinsert/models/transformer_2d.h"
#include "singleinsert/models/unet_config.h"

namespace singleinsert {

// Sinusoidal timestep features [B] -> [B, dim] (diffusers' get_timestep_embedding).
at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos, double freq_shift);

class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim);
  at::Tensor forward(const at::Tensor& x);  // [B, in] -> [B, T]
  Linear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

// CrossAttnDownBlock2D (with attentions) or DownBlock2D.
class UNetDownBlockImpl : public torch::nn::Module {
 public:
  UNetDownBlockImpl(const UNetConfig& config, size_t index, int64_t in_channels);
  // Returns the block output and appends every residual the up path will consume.
  at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& context, std::vector<at::Tensor>& residuals);

  IndexedList<ResnetBlock2D> resnets;
  IndexedList<Transformer2DModel> attentions;
  IndexedList<Downsample2D> downsamplers;
};
TORCH_MODULE(UNetDownBlock);

class UNetMidBlockImpl : public torch::nn::Module {
 public:
  explicit UNetMidBlockImpl(const UNetConfig& config);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context);

  IndexedList<Transformer2DModel> attentions;
  IndexedList<ResnetBlock2D> resnets;
};
TORCH_MODULE(UNetMidBlock);

// CrossAttnUpBlock2D (with attentions) or UpBlock2D.
class UNetUpBlockImpl : public torch::nn::Module {
 public:
  UNetUpBlockImpl(const UNetConfig& config, size_t index);
  // Pops its skip connections from the back of `residuals`.
  at::Tensor forward(at::Tensor x, std::vector<at::Tensor>& residuals, const at::Tensor& temb,
                     const at::Tensor& context, c10::optional<std::array<int64_t, 2>> upsample_size);

  IndexedList<ResnetBlock2D> resnets;
  IndexedList<Transformer2DModel> attentions;
  IndexedList<Upsample2D> upsamplers;
};
TORCH_MODULE(UNetUpBlock);

// Top-level activations recorded during forward, keyed like the golden's "intermediate.*".
using ActivationTrace = std::map<std::string, at::Tensor>;

class UNet2DConditionModelImpl : public torch::nn::Module {
 public:
  explicit UNet2DConditionModelImpl(const UNetConfig& config);

  // sample [B, C, H, W]; timesteps: a scalar or [B] (integer or float); context [B, L, D]
  // -> eps [B, C_out, H, W]. H and W need not be multiples of the downsampling factor.
  at::Tensor forward(const at::Tensor& sample, const at::Tensor& timesteps, const at::Tensor& context,
                     ActivationTrace* trace = nullptr);

  const UNetConfig& config() const { return config_; }

  TimestepEmbedding time_embedding{nullptr};
  Conv2d conv_in{nullptr}, conv_out{nullptr};
  IndexedList<UNetDownBlock> down_blocks;
  UNetMidBlock mid_block{nullptr};
  IndexedList<UNetUpBlock> up_blocks;
  GroupNorm conv_norm_out{nullptr};

 private:
  UNetConfig config_;
};
TORCH_MODULE(UNet2DConditionModel);

}  // namespace singleinsert
