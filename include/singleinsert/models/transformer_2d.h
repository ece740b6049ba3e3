#pragma once
// diffusers' Transformer2DModel with BasicTransformerBlocks (self-attention, cross-attention,
// GEGLU feed-forward), as SD's UNet uses it on [B, C, H, W] feature maps.
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "singleinsert/models/attention.h"
#include "singleinsert/models/layers.h"

namespace singleinsert {

struct TransformerOptions {
  int64_t channels = 0;
  int64_t heads = 8;
  int64_t cross_attention_dim = 768;
  int64_t num_layers = 1;
  int64_t norm_num_groups = 32;
  bool use_linear_projection = false;
  bool upcast_attention = false;
};

// GEGLU: proj to 2x the inner width, then value * gelu(gate).
class GegluImpl : public torch::nn::Module {
 public:
  GegluImpl(int64_t dim_in, int64_t dim_out);
  at::Tensor forward(const at::Tensor& x);  // [B, L, in] -> [B, L, out]
  Linear proj{nullptr};
};
TORCH_MODULE(Geglu);

class FeedForwardImpl : public torch::nn::Module {
 public:
  explicit FeedForwardImpl(int64_t dim);
  at::Tensor forward(const at::Tensor& x);  // [B, L, D] -> [B, L, D]
  Geglu geglu{nullptr};  // net.0 (net.1 is a parameter-free Dropout)
  Linear out{nullptr};   // net.2
};
TORCH_MODULE(FeedForward);

class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  explicit BasicTransformerBlockImpl(const TransformerOptions& options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context);  // x [B, L, C], context [B, 77, Cc]

  LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  Attention attn1{nullptr}, attn2{nullptr};
  FeedForward ff{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

class Transformer2DModelImpl : public torch::nn::Module {
 public:
  explicit Transformer2DModelImpl(const TransformerOptions& options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context);  // [B, C, H, W] -> same

  GroupNorm norm{nullptr};
  // proj_in / proj_out: 1x1 convolutions, or Linear layers with use_linear_projection (SD v2).
  Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  IndexedList<BasicTransformerBlock> transformer_blocks;
  bool use_linear_projection;
};
TORCH_MODULE(Transformer2DModel);

}  // namespace singleinsert
