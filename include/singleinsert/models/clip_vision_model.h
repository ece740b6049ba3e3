#pragma once
// transformers' CLIPVisionModelWithProjection: patch embedding with a class token, a pre-LN
// transformer, LayerNorm on the class token and a linear projection, registered as
// vision_model.{embeddings, pre_layrnorm, encoder, post_layernorm} and visual_projection.
// SingleInsert's image encoder is this ViT (B/32) with a 768x768 projection onto CLIP's word
// embedding space.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <vector>

#include "singleinsert/models/clip_config.h"
#include "singleinsert/models/clip_encoder.h"
#include "singleinsert/models/layers.h"

namespace singleinsert {

struct ClipVisionOutput {
  at::Tensor last_hidden_state;  // [B, 1 + patches, D] before post_layernorm
  at::Tensor pooler_output;      // [B, D]: post_layernorm(class token)
  at::Tensor image_embeds;       // [B, projection_dim]
  std::vector<at::Tensor> hidden_states;
};

class ClipVisionEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit ClipVisionEmbeddingsImpl(const ClipVisionConfig& config);
  at::Tensor forward(const at::Tensor& pixels);  // [B, 3, S, S] -> [B, 1 + (S/P)^2, D]

  at::Tensor class_embedding;  // [D]
  Conv2d patch_embedding{nullptr};
  Embedding position_embedding{nullptr};
};
TORCH_MODULE(ClipVisionEmbeddings);

class ClipVisionTransformerImpl : public torch::nn::Module {
 public:
  explicit ClipVisionTransformerImpl(const ClipVisionConfig& config);
  ClipVisionEmbeddings embeddings{nullptr};
  LayerNorm pre_layrnorm{nullptr};  // sic: transformers' key
  ClipEncoder encoder{nullptr};
  LayerNorm post_layernorm{nullptr};
};
TORCH_MODULE(ClipVisionTransformer);

class ClipVisionModelImpl : public torch::nn::Module {
 public:
  explicit ClipVisionModelImpl(const ClipVisionConfig& config);
  // pixels [B, 3, image_size, image_size], already normalised.
  ClipVisionOutput forward(const at::Tensor& pixels, bool output_hidden_states = false);

  // OpenAI CLIP's initialisation of a VisionTransformer (class and position embeddings and the
  // projection ~ N(0, width^-1/2), attention in-projections Xavier-uniform with zero biases),
  // which SingleInsert's authors train from.
  void init_like_openai(at::Generator& generator);

  const ClipVisionConfig& config() const { return config_; }
  ClipVisionTransformer vision_model{nullptr};
  Linear visual_projection{nullptr};

 private:
  ClipVisionConfig config_;
};
TORCH_MODULE(ClipVisionModel);

}  // namespace singleinsert
