#include "singleinsert/models/resnet.h"

#include <ATen/ATen.h>

namespace singleinsert {

ResnetBlock2DImpl::ResnetBlock2DImpl(const ResnetOptions& o) : output_scale_factor(o.output_scale_factor) {
  norm1 = register_module("norm1", GroupNorm(o.groups, o.in_channels, o.eps));
  conv1 = register_module("conv1", Conv2d(o.in_channels, o.out_channels, 3, 1, 1));
  if (o.temb_channels > 0) time_emb_proj = register_module("time_emb_proj", Linear(o.temb_channels, o.out_channels));
  norm2 = register_module("norm2", GroupNorm(o.groups, o.out_channels, o.eps));
  conv2 = register_module("conv2", Conv2d(o.out_channels, o.out_channels, 3, 1, 1));
  if (o.in_channels != o.out_channels)
    conv_shortcut = register_module("conv_shortcut", Conv2d(o.in_channels, o.out_channels, 1));
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& x, const at::Tensor& temb) {
  at::Tensor h = conv1->forward(at::silu(norm1->forward(x)));  // [B, Cout, H, W]
  if (time_emb_proj && temb.defined()) {
    h = h + time_emb_proj->forward(at::silu(temb)).unsqueeze(-1).unsqueeze(-1);  // + [B, Cout, 1, 1]
  }
  h = conv2->forward(at::silu(norm2->forward(h)));
  const at::Tensor shortcut = conv_shortcut ? conv_shortcut->forward(x) : x;
  at::Tensor out = shortcut + h;
  return output_scale_factor == 1.0 ? out : out / output_scale_factor;
}

Downsample2DImpl::Downsample2DImpl(int64_t channels, int64_t padding_) : padding(padding_) {
  conv = register_module("conv", Conv2d(channels, channels, 3, /*stride=*/2, padding));
}

at::Tensor Downsample2DImpl::forward(const at::Tensor& x) {
  if (padding == 0) return conv->forward(at::constant_pad_nd(x, {0, 1, 0, 1}, 0.0));
  return conv->forward(x);
}

Upsample2DImpl::Upsample2DImpl(int64_t channels) {
  conv = register_module("conv", Conv2d(channels, channels, 3, 1, 1));
}

at::Tensor Upsample2DImpl::forward(const at::Tensor& x, c10::optional<std::array<int64_t, 2>> size) {
  const std::array<int64_t, 2> target = size.value_or(std::array<int64_t, 2>{x.size(2) * 2, x.size(3) * 2});
  // Nearest upsampling has no bfloat16 kernel on every backend; diffusers goes through float32 too.
  const bool via_float = x.scalar_type() == at::kBFloat16;
  at::Tensor up = at::upsample_nearest2d(via_float ? x.to(at::kFloat) : x, {target[0], target[1]});
  if (via_float) up = up.to(x.scalar_type());
  return conv->forward(up);  // [B, C, H', W']
}

}  // namespace singleinsert
