#pragma once
// The pre-LayerNorm transformer shared by CLIP's text and vision towers, registered under
// transformers' names: layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}.
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/nn/module.h>

#include <vector>

#include "singleinsert/models/clip_config.h"
#include "singleinsert/models/layers.h"

namespace singleinsert {

class ClipAttentionImpl : public torch::nn::Module {
 public:
  ClipAttentionImpl(int64_t hidden_size, int64_t heads);
  // x [B, L, D]; additive_mask broadcastable to [B, H, L, L]
  at::Tensor forward(const at::Tensor& x, const c10::optional<at::Tensor>& additive_mask);

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
  int64_t heads;
};
TORCH_MODULE(ClipAttention);

class ClipMlpImpl : public torch::nn::Module {
 public:
  ClipMlpImpl(int64_t hidden_size, int64_t intermediate_size, std::string activation);
  at::Tensor forward(const at::Tensor& x);  // [B, L, D] -> [B, L, D]

  Linear fc1{nullptr}, fc2{nullptr};
  std::string activation;
};
TORCH_MODULE(ClipMlp);

class ClipEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit ClipEncoderLayerImpl(const ClipEncoderConfig& config);
  at::Tensor forward(const at::Tensor& x, const c10::optional<at::Tensor>& additive_mask);

  LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  ClipAttention self_attn{nullptr};
  ClipMlp mlp{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

class ClipEncoderImpl : public torch::nn::Module {
 public:
  explicit ClipEncoderImpl(const ClipEncoderConfig& config);
  // Returns every layer's input and the last output: hidden_states[0] is the input and
  // hidden_states[i] the output of layer i (transformers' output_hidden_states).
  std::vector<at::Tensor> forward(const at::Tensor& x, const c10::optional<at::Tensor>& additive_mask,
                                  bool keep_all = false);

  IndexedList<ClipEncoderLayer> layers;
};
TORCH_MODULE(ClipEncoder);

at::Tensor quick_gelu(const at::Tensor& x);

}  // namespace singleinsert
