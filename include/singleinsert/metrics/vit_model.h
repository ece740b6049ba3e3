#pragma once
// transformers' ViTModel, the layout DINO checkpoints ship in (facebook/dino-vits16: ViT-S/16):
// registered as embeddings.{cls_token, position_embeddings, patch_embeddings.projection},
// encoder.layer.N.{layernorm_before, attention.attention.{query, key, value},
// attention.output.dense, layernorm_after, intermediate.dense, output.dense} and layernorm.
// A DINO feature is the class token of the last hidden state; the pooler is not used.
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <string>

#include "singleinsert/metrics/image_processing.h"
#include "singleinsert/models/layers.h"

namespace singleinsert {

struct VitConfig {
  int64_t hidden_size = 768, intermediate_size = 3072, num_hidden_layers = 12, num_attention_heads = 12;
  int64_t image_size = 224, patch_size = 16, num_channels = 3;
  std::string hidden_act = "gelu";
  double layer_norm_eps = 1e-12;
  bool qkv_bias = true;
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
};

class VitLayerImpl : public torch::nn::Module {
 public:
  explicit VitLayerImpl(const VitConfig& config);
  at::Tensor forward(const at::Tensor& x);  // [B, L, D] -> [B, L, D]

  LayerNorm layernorm_before{nullptr}, layernorm_after{nullptr};
  Linear query{nullptr}, key{nullptr}, value{nullptr}, attention_output{nullptr};
  Linear intermediate{nullptr}, output{nullptr};

 private:
  int64_t heads_;
};
TORCH_MODULE(VitLayer);

class VitModelImpl : public torch::nn::Module {
 public:
  explicit VitModelImpl(const VitConfig& config);
  // pixels [B, 3, S, S], normalised -> last_hidden_state [B, 1 + patches, D] (after layernorm)
  at::Tensor forward(const at::Tensor& pixels);
  // The class token of the last hidden state, [B, D]: the DINO feature.
  at::Tensor features(const at::Tensor& pixels);

  const VitConfig& config() const { return config_; }
  at::Tensor cls_token, position_embeddings;  // embeddings.*: [1, 1, D], [1, 1 + patches, D]
  Conv2d patch_projection{nullptr};           // embeddings.patch_embeddings.projection
  IndexedList<VitLayer> layers;               // encoder.layer
  LayerNorm layernorm{nullptr};

 private:
  VitConfig config_;
};
TORCH_MODULE(VitModel);

// A ViTModel folder (config.json, model.safetensors; "vit." prefixes of ViTForImageClassification
// and the pooler are accepted and ignored), with its preprocessor_config.json (else
// ViTImageProcessor's defaults). Throws Error naming the folder for another kind of model or a
// missing tensor.
struct LoadedVit {
  VitModel model{nullptr};
  ImageProcessor processor;
};
LoadedVit load_vit_model(const std::string& folder, at::ScalarType dtype = at::kFloat);

}  // namespace singleinsert
