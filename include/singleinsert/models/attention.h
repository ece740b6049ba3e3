#pragma once
// diffusers' Attention: to_q, to_k, to_v and to_out.0, multi-head scaled dot-product attention.
// The UNet uses it for self- and cross-attention; the VAE's mid block uses the variant with a
// GroupNorm in front and a residual connection.
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/nn/module.h>

#include "singleinsert/models/layers.h"

namespace singleinsert {

struct AttentionOptions {
  int64_t query_dim = 0;
  int64_t cross_attention_dim = 0;  // 0: self-attention (keys and values from the query input)
  int64_t heads = 8;
  int64_t dim_head = 64;
  bool bias = false;                // on to_q/to_k/to_v (to_out.0 always has one)
  bool upcast_attention = false;    // q k^T in float32 under reduced precision (SD v2.1)
  bool upcast_softmax = false;      // softmax in float32 under reduced precision (diffusers' VAE attention)
  // VAE-style: GroupNorm on [B, C, H, W] input, residual added after the projection.
  int64_t norm_num_groups = 0;
  double norm_eps = 1e-6;
  bool residual_connection = false;
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const AttentionOptions& options);
  // x [B, L, C] (or [B, C, H, W] for the VAE variant); context [B, Lc, Cc] or none.
  at::Tensor forward(const at::Tensor& x, const c10::optional<at::Tensor>& context = c10::nullopt);

  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  IndexedList<Linear> to_out;  // to_out.0 (diffusers keeps a Dropout at to_out.1)
  GroupNorm group_norm{nullptr};
  AttentionOptions options;
};
TORCH_MODULE(Attention);

}  // namespace singleinsert
