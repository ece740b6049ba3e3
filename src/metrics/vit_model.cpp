#include "singleinsert/metrics/vit_model.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <map>

#include "singleinsert/core/error.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/core/tensor_format.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/metrics/metric_folder.h"

namespace singleinsert {
namespace {

// transformers nests a layer's parts in modules of their own; plain holders keep those keys.
std::shared_ptr<torch::nn::Module> holder(torch::nn::Module& owner, const std::string& name) {
  return owner.register_module(name, std::make_shared<torch::nn::Module>());
}

}  // namespace

VitLayerImpl::VitLayerImpl(const VitConfig& c) : heads_(c.num_attention_heads) {
  layernorm_before = register_module("layernorm_before", LayerNorm(c.hidden_size, c.layer_norm_eps));
  layernorm_after = register_module("layernorm_after", LayerNorm(c.hidden_size, c.layer_norm_eps));
  auto attention = holder(*this, "attention");
  auto self_attention = holder(*attention, "attention");
  query = self_attention->register_module("query", Linear(c.hidden_size, c.hidden_size, c.qkv_bias));
  key = self_attention->register_module("key", Linear(c.hidden_size, c.hidden_size, c.qkv_bias));
  value = self_attention->register_module("value", Linear(c.hidden_size, c.hidden_size, c.qkv_bias));
  attention_output = holder(*attention, "output")->register_module("dense", Linear(c.hidden_size, c.hidden_size));
  intermediate = holder(*this, "intermediate")->register_module("dense", Linear(c.hidden_size, c.intermediate_size));
  output = holder(*this, "output")->register_module("dense", Linear(c.intermediate_size, c.hidden_size));
}

at::Tensor VitLayerImpl::forward(const at::Tensor& x) {
  const int64_t batch = x.size(0), length = x.size(1), dim = x.size(2), head_dim = dim / heads_;
  auto split_heads = [&](const at::Tensor& t) {  // [B, L, D] -> [B, H, L, D/H]
    return t.view({batch, length, heads_, head_dim}).transpose(1, 2);
  };
  const at::Tensor normed = layernorm_before->forward(x);
  const at::Tensor attended = compat::scaled_dot_product_attention(
      split_heads(query->forward(normed)), split_heads(key->forward(normed)), split_heads(value->forward(normed)),
      1.0 / std::sqrt(static_cast<double>(head_dim)), c10::nullopt);
  const at::Tensor h = x + attention_output->forward(attended.transpose(1, 2).reshape({batch, length, dim}));
  return h + output->forward(at::gelu(intermediate->forward(layernorm_after->forward(h))));
}

VitModelImpl::VitModelImpl(const VitConfig& c) : config_(c) {
  if (c.patch_size <= 0 || c.image_size % c.patch_size != 0 || c.num_attention_heads <= 0 ||
      c.hidden_size % c.num_attention_heads != 0 || c.num_hidden_layers <= 0 || c.hidden_size <= 0 ||
      c.intermediate_size <= 0 || c.num_channels != 3)
    throw Error("ViT config: inconsistent sizes");
  if (c.hidden_act != "gelu") throw Error("ViT config: hidden_act '" + c.hidden_act + "' is not supported (gelu)");
  auto embeddings = holder(*this, "embeddings");
  cls_token = embeddings->register_parameter("cls_token", at::zeros({1, 1, c.hidden_size}));
  position_embeddings =
      embeddings->register_parameter("position_embeddings", at::zeros({1, 1 + c.num_patches(), c.hidden_size}));
  patch_projection = holder(*embeddings, "patch_embeddings")
                         ->register_module("projection", Conv2d(c.num_channels, c.hidden_size, c.patch_size,
                                                                c.patch_size, 0));
  layers.attach(*holder(*this, "encoder"), "layer");
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers.push_back(VitLayer(c));
  layernorm = register_module("layernorm", LayerNorm(c.hidden_size, c.layer_norm_eps));
}

at::Tensor VitModelImpl::forward(const at::Tensor& pixels) {
  const int64_t size = config_.image_size;
  if (pixels.dim() != 4 || pixels.size(1) != config_.num_channels || pixels.size(2) != size || pixels.size(3) != size)
    throw Error(fmt::format("ViT input has shape {} but the model takes [B, {}, {}, {}]", shape_string(pixels.sizes()),
                            config_.num_channels, size, size));
  at::NoGradGuard no_grad;
  const at::Tensor x = pixels.to(cls_token.scalar_type());
  const at::Tensor patches = patch_projection->forward(x).flatten(2).transpose(1, 2);  // [B, N, D]
  at::Tensor h = at::cat({cls_token.expand({x.size(0), 1, -1}), patches}, 1) + position_embeddings;
  for (auto& layer : layers) h = layer->forward(h);
  return layernorm->forward(h);
}

at::Tensor VitModelImpl::features(const at::Tensor& pixels) { return forward(pixels).select(1, 0); }

LoadedVit load_vit_model(const std::string& folder, at::ScalarType dtype) {
  const JsonConfig json = read_metric_config(folder, "ViT (DINO)", {"vit", "dino"});
  VitConfig c;
  c.hidden_size = json.get_int("hidden_size", 768);
  c.intermediate_size = json.get_int("intermediate_size", 3072);
  c.num_hidden_layers = json.get_int("num_hidden_layers", 12);
  c.num_attention_heads = json.get_int("num_attention_heads", 12);
  c.image_size = json.get_int("image_size", 224);
  c.patch_size = json.get_int("patch_size", 16);
  c.num_channels = json.get_int("num_channels", 3);
  c.hidden_act = json.get_string("hidden_act", "gelu");
  c.layer_norm_eps = json.get_double("layer_norm_eps", 1e-12);
  c.qkv_bias = json.get_bool("qkv_bias", true);
  LoadedVit loaded;
  try {
    loaded.model = VitModel(c);
  } catch (const Error& e) {
    throw Error(json.origin() + ": " + e.what());
  }
  const SafetensorsFile file = SafetensorsFile::open(metric_weights_file(folder, "ViT"));
  std::map<std::string, at::Tensor> tensors;
  for (std::string key : file.keys()) {
    const at::Tensor tensor = file.tensor(key);
    if (key.rfind("vit.", 0) == 0) key = key.substr(4);
    if (key.rfind("pooler.", 0) == 0 || key.rfind("classifier.", 0) == 0) continue;  // not part of the feature
    tensors[key] = tensor;
  }
  load_state_dict(*loaded.model, tensors, file.path());
  loaded.model->to(dtype);
  loaded.model->eval();
  loaded.processor = ImageProcessor::from_folder(folder, ImageProcessor::vit(c.image_size));
  return loaded;
}

}  // namespace singleinsert
