#include "singleinsert/models/clip_vision_model.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {

ClipVisionEmbeddingsImpl::ClipVisionEmbeddingsImpl(const ClipVisionConfig& c) {
  class_embedding = register_parameter("class_embedding", at::empty({c.encoder.hidden_size}));
  patch_embedding = register_module(
      "patch_embedding", Conv2d(c.num_channels, c.encoder.hidden_size, c.patch_size, c.patch_size, 0, /*bias=*/false));
  position_embedding = register_module("position_embedding", Embedding(c.num_positions(), c.encoder.hidden_size));
}

at::Tensor ClipVisionEmbeddingsImpl::forward(const at::Tensor& pixels) {
  const int64_t batch = pixels.size(0);
  const at::Tensor patches = patch_embedding->forward(pixels).flatten(2).transpose(1, 2);  // [B, N, D]
  const at::Tensor cls = class_embedding.to(patches.scalar_type()).expand({batch, 1, patches.size(2)});
  const at::Tensor tokens = at::cat({cls, patches}, 1);  // [B, 1 + N, D]
  const at::Tensor positions = at::arange(tokens.size(1), at::TensorOptions().dtype(at::kLong).device(pixels.device()));
  return tokens + position_embedding->forward(positions);
}

ClipVisionTransformerImpl::ClipVisionTransformerImpl(const ClipVisionConfig& c) {
  embeddings = register_module("embeddings", ClipVisionEmbeddings(c));
  pre_layrnorm = register_module("pre_layrnorm", LayerNorm(c.encoder.hidden_size, c.encoder.layer_norm_eps));
  encoder = register_module("encoder", ClipEncoder(c.encoder));
  post_layernorm = register_module("post_layernorm", LayerNorm(c.encoder.hidden_size, c.encoder.layer_norm_eps));
}

ClipVisionModelImpl::ClipVisionModelImpl(const ClipVisionConfig& config) : config_(config) {
  config_.validate();
  vision_model = register_module("vision_model", ClipVisionTransformer(config_));
  visual_projection = register_module("visual_projection",
                                      Linear(config_.encoder.hidden_size, config_.projection_dim, /*bias=*/false));
}

ClipVisionOutput ClipVisionModelImpl::forward(const at::Tensor& pixels, bool output_hidden_states) {
  const int64_t size = config_.image_size;
  if (pixels.dim() != 4 || pixels.size(1) != config_.num_channels || pixels.size(2) != size || pixels.size(3) != size)
    throw Error(fmt::format("image encoder input has shape {} but the model takes [B, {}, {}, {}]",
                            shape_string(pixels.sizes()), config_.num_channels, size, size));
  const at::Tensor h = vision_model->pre_layrnorm->forward(vision_model->embeddings->forward(pixels));
  std::vector<at::Tensor> states = vision_model->encoder->forward(h, c10::nullopt, output_hidden_states);
  ClipVisionOutput out;
  out.last_hidden_state = states.back();
  out.pooler_output = vision_model->post_layernorm->forward(out.last_hidden_state.select(1, 0));  // [B, D]
  out.image_embeds = visual_projection->forward(out.pooler_output);
  if (output_hidden_states) out.hidden_states = std::move(states);
  return out;
}

void ClipVisionModelImpl::init_like_openai(at::Generator& generator) {
  init_parameters(*this, generator);  // PyTorch defaults for convolutions, linears and norms
  at::NoGradGuard no_grad;
  const double scale = 1.0 / std::sqrt(static_cast<double>(config_.encoder.hidden_size));
  auto& embeddings = vision_model->embeddings;
  embeddings->class_embedding.normal_(0.0, scale, generator);
  embeddings->position_embedding->weight.normal_(0.0, scale, generator);
  visual_projection->weight.normal_(0.0, scale, generator);
  for (auto& layer : vision_model->encoder->layers) {
    // nn.MultiheadAttention: one Xavier-uniform [3D, D] in-projection, zero biases.
    auto& attention = layer->self_attn;
    const int64_t d = attention->q_proj->weight.size(0);
    const double bound = std::sqrt(6.0 / static_cast<double>(d + 3 * d));
    for (auto* projection : {&attention->q_proj, &attention->k_proj, &attention->v_proj}) {
      (*projection)->weight.uniform_(-bound, bound, generator);
      (*projection)->bias.zero_();
    }
    attention->out_proj->bias.zero_();
  }
}

}  // namespace singleinsert
