#include "singleinsert/models/clip_encoder.h"

#include <ATen/ATen.h>

#include "singleinsert/core/error.h"
#include "singleinsert/core/torch_compat.h"

namespace singleinsert {

at::Tensor quick_gelu(const at::Tensor& x) { return x * at::sigmoid(x * 1.702); }

ClipAttentionImpl::ClipAttentionImpl(int64_t hidden_size, int64_t heads_) : heads(heads_) {
  q_proj = register_module("q_proj", Linear(hidden_size, hidden_size));
  k_proj = register_module("k_proj", Linear(hidden_size, hidden_size));
  v_proj = register_module("v_proj", Linear(hidden_size, hidden_size));
  out_proj = register_module("out_proj", Linear(hidden_size, hidden_size));
}

at::Tensor ClipAttentionImpl::forward(const at::Tensor& x, const c10::optional<at::Tensor>& additive_mask) {
  const int64_t batch = x.size(0), length = x.size(1), dim = x.size(2), head_dim = dim / heads;
  auto split_heads = [&](const at::Tensor& t) {  // [B, L, D] -> [B, H, L, D/H]
    return t.view({batch, length, heads, head_dim}).transpose(1, 2);
  };
  const at::Tensor attended = compat::scaled_dot_product_attention(
      split_heads(q_proj->forward(x)), split_heads(k_proj->forward(x)), split_heads(v_proj->forward(x)),
      1.0 / std::sqrt(static_cast<double>(head_dim)), additive_mask);  // [B, H, L, D/H]
  return out_proj->forward(attended.transpose(1, 2).reshape({batch, length, dim}));
}

ClipMlpImpl::ClipMlpImpl(int64_t hidden_size, int64_t intermediate_size, std::string activation_)
    : activation(std::move(activation_)) {
  if (activation != "quick_gelu" && activation != "gelu")
    throw Error("unsupported CLIP activation '" + activation + "' (expected quick_gelu or gelu)");
  fc1 = register_module("fc1", Linear(hidden_size, intermediate_size));
  fc2 = register_module("fc2", Linear(intermediate_size, hidden_size));
}

at::Tensor ClipMlpImpl::forward(const at::Tensor& x) {
  const at::Tensor h = fc1->forward(x);  // [B, L, I]
  return fc2->forward(activation == "quick_gelu" ? quick_gelu(h) : at::gelu(h));
}

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipEncoderConfig& config) {
  self_attn = register_module("self_attn", ClipAttention(config.hidden_size, config.num_attention_heads));
  layer_norm1 = register_module("layer_norm1", LayerNorm(config.hidden_size, config.layer_norm_eps));
  mlp = register_module("mlp", ClipMlp(config.hidden_size, config.intermediate_size, config.hidden_act));
  layer_norm2 = register_module("layer_norm2", LayerNorm(config.hidden_size, config.layer_norm_eps));
}

at::Tensor ClipEncoderLayerImpl::forward(const at::Tensor& x, const c10::optional<at::Tensor>& additive_mask) {
  const at::Tensor h = x + self_attn->forward(layer_norm1->forward(x), additive_mask);
  return h + mlp->forward(layer_norm2->forward(h));
}

ClipEncoderImpl::ClipEncoderImpl(const ClipEncoderConfig& config) {
  layers.attach(*this, "layers");
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers.push_back(ClipEncoderLayer(config));
}

std::vector<at::Tensor> ClipEncoderImpl::forward(const at::Tensor& x, const c10::optional<at::Tensor>& additive_mask,
                                                 bool keep_all) {
  std::vector<at::Tensor> states{x};
  at::Tensor h = x;
  for (auto& layer : layers) {
    h = layer->forward(h, additive_mask);
    if (keep_all) states.push_back(h);
  }
  if (!keep_all) states.push_back(h);
  return states;
}

}  // namespace singleinsert
