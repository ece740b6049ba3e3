#pragma once
// diffusers' Attention: to_q, to_k, to_v and to_out.0, multi-head scaled dot-product attention.
// The UNet uses it for self- and cross-attention; the VAE's mid block uses the variant with a
// GroupNorm in front and a residual connection.
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/nn/module.h>

#include <string>
#include <utility>

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

class AttentionImpl;

// Reads or steers a cross-attention layer from outside the model: per-layer key and value inputs
// (Beyond Inserting's per-stage tokens) and the layer's queries and keys (its attention loss). A
// hook is a non-owning pointer on the layer, not a registered module, so weight keys never
// change; AttentionHookGuard (models/cross_attention.h) installs one for a scope.
class AttentionHook {
 public:
  virtual ~AttentionHook() = default;
  // The inputs of to_k and to_v for this call ([B, Lc, Cc] each); both read `context` by default.
  virtual std::pair<at::Tensor, at::Tensor> key_value_inputs(const std::string& path, const at::Tensor& context) {
    return {context, context};
  }
  // The layer's queries and keys [B, H, L, D] after projection, before attention.
  virtual void observe(const std::string& path, AttentionImpl& layer, const at::Tensor& query, const at::Tensor& key) {}
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
  AttentionHook* hook = nullptr;  // cross-attention only; see AttentionHook
  std::string hook_path;          // the layer's canonical path, given to the hook
};
TORCH_MODULE(Attention);

}  // namespace singleinsert
