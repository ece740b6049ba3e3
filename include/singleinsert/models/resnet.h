#pragma once
// Convolutional building blocks shared by the UNet and the VAE, under diffusers' names:
// ResnetBlock2D (norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut), Downsample2D and
// Upsample2D (conv).
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/nn/module.h>

#include "singleinsert/models/layers.h"

namespace singleinsert {

struct ResnetOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t temb_channels = 0;  // 0: no time embedding (VAE)
  int64_t groups = 32;
  double eps = 1e-5;
  double output_scale_factor = 1.0;
};

class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  explicit ResnetBlock2DImpl(const ResnetOptions& options);
  // x [B, Cin, H, W], temb [B, T] (ignored when temb_channels is 0) -> [B, Cout, H, W]
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb = {});

  GroupNorm norm1{nullptr}, norm2{nullptr};
  Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  Linear time_emb_proj{nullptr};
  double output_scale_factor;
};
TORCH_MODULE(ResnetBlock2D);

class Downsample2DImpl : public torch::nn::Module {
 public:
  // padding 1: a 3x3 stride-2 conv with symmetric padding (UNet); padding 0: pad right and
  // bottom by one first (VAE encoder), as diffusers does.
  Downsample2DImpl(int64_t channels, int64_t padding);
  at::Tensor forward(const at::Tensor& x);  // [B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)]

  Conv2d conv{nullptr};
  int64_t padding;
};
TORCH_MODULE(Downsample2D);

class Upsample2DImpl : public torch::nn::Module {
 public:
  explicit Upsample2DImpl(int64_t channels);
  // Nearest-neighbour x2 (or to `size`, when the UNet input was not a multiple of its
  // overall downsampling factor), then a 3x3 conv.
  at::Tensor forward(const at::Tensor& x, c10::optional<std::array<int64_t, 2>> size = c10::nullopt);

  Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

}  // namespace singleinsert
