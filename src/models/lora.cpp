#include "singleinsert/models/lora.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "singleinsert/core/error.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {
namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::map<std::string, AdaptableLayer*> named_adaptable_layers(torch::nn::Module& model, const std::string& component) {
  std::map<std::string, AdaptableLayer*> out;
  for (const auto& [path, layer] : adaptable_layers(model)) out[component + "." + path] = layer;
  return out;
}

bool is_unet_attention_projection(const std::string& path) {
  if (path.rfind("unet.", 0) != 0) return false;
  return (path.find(".attn1.") != std::string::npos || path.find(".attn2.") != std::string::npos) &&
         (ends_with(path, ".to_q") || ends_with(path, ".to_k") || ends_with(path, ".to_v") ||
          ends_with(path, ".to_out.0"));
}

bool is_text_attention_projection(const std::string& path) {
  if (path.rfind("text_encoder.", 0) != 0 || path.find(".self_attn.") == std::string::npos) return false;
  return ends_with(path, ".q_proj") || ends_with(path, ".k_proj") || ends_with(path, ".v_proj") ||
         ends_with(path, ".out_proj");
}

std::shared_ptr<LoraNetwork> LoraNetwork::create(const std::string& name,
                                                 const std::map<std::string, AdaptableLayer*>& layers,
                                                 std::vector<std::shared_ptr<torch::nn::Module>> owners, int64_t rank,
                                                 double alpha, at::Generator& generator) {
  if (rank < 1) throw Error(fmt::format("LoRA rank must be at least 1, got {}", rank));
  if (layers.empty()) throw Error("no layers to attach LoRA adapters to");
  std::shared_ptr<LoraNetwork> network(new LoraNetwork());
  network->name_ = name;
  network->owners_ = std::move(owners);
  for (const auto& [path, layer] : layers) {
    auto adapter = std::make_shared<LoraAdapter>();
    adapter->name = name;
    adapter->alpha = alpha;
    const auto* conv = dynamic_cast<Conv2dImpl*>(layer);
    if (conv != nullptr) {
      adapter->down = at::empty({rank, layer->in_features(), conv->weight.size(2), conv->weight.size(3)});
      adapter->up = at::zeros({layer->out_features(), rank, 1, 1});
      adapter->stride = conv->stride;
      adapter->padding = conv->padding;
    } else {
      adapter->down = at::empty({rank, layer->in_features()});
      adapter->up = at::zeros({layer->out_features(), rank});
    }
    adapter->down.normal_(0.0, 1.0 / static_cast<double>(rank), generator);  // diffusers' LoRALinearLayer
    const auto device = conv ? conv->weight.device() : dynamic_cast<LinearImpl*>(layer)->weight.device();
    adapter->down = adapter->down.to(device).set_requires_grad(true);
    adapter->up = adapter->up.to(device).set_requires_grad(true);
    layer->add_adapter(adapter);
    network->adapters_[path] = {layer, adapter};
  }
  return network;
}

std::shared_ptr<LoraNetwork> LoraNetwork::from_weights(const std::string& name, const LoraWeightMap& weights,
                                                       const std::map<std::string, AdaptableLayer*>& layers,
                                                       std::vector<std::shared_ptr<torch::nn::Module>> owners,
                                                       const std::string& origin) {
  std::vector<std::string> unknown;
  for (const auto& [path, w] : weights)
    if (!layers.count(path)) unknown.push_back(path);
  if (!unknown.empty()) {
    std::string listed;
    for (size_t i = 0; i < unknown.size() && i < 3; ++i) listed += (i ? ", " : "") + unknown[i];
    throw Error(fmt::format("{}: {} LoRA target(s) do not exist in the model: {}{}", origin, unknown.size(), listed,
                            unknown.size() > 3 ? ", ..." : ""));
  }
  std::shared_ptr<LoraNetwork> network(new LoraNetwork());
  network->name_ = name;
  network->owners_ = std::move(owners);
  for (const auto& [path, w] : weights) {
    AdaptableLayer* layer = layers.at(path);
    const auto* conv = dynamic_cast<Conv2dImpl*>(layer);
    const at::Tensor& base = conv ? conv->weight : dynamic_cast<LinearImpl*>(layer)->weight;
    if (w.down.dim() < 2 || w.up.dim() < 2 || w.down.size(0) != w.up.size(1) || w.down.size(1) != base.size(1) ||
        w.up.size(0) != base.size(0))
      throw Error(fmt::format("{}: LoRA for '{}' has down {} and up {}, which do not fit the layer's weight {}", origin,
                              path, shape_string(w.down.sizes()), shape_string(w.up.sizes()),
                              shape_string(base.sizes())));
    auto adapter = std::make_shared<LoraAdapter>();
    adapter->name = name;
    adapter->alpha = w.alpha;
    adapter->down = w.down.to(base.device(), at::kFloat).clone();
    adapter->up = w.up.to(base.device(), at::kFloat).clone();
    if (conv) {
      adapter->stride = conv->stride;
      adapter->padding = adapter->down.dim() == 4 && adapter->down.size(2) == 1 ? 0 : conv->padding;
      if (adapter->down.dim() == 2) adapter->down = adapter->down.view({adapter->down.size(0), adapter->down.size(1), 1, 1});
      if (adapter->up.dim() == 2) adapter->up = adapter->up.view({adapter->up.size(0), adapter->up.size(1), 1, 1});
    }
    layer->add_adapter(adapter);
    network->adapters_[path] = {layer, adapter};
  }
  return network;
}

LoraNetwork::~LoraNetwork() {
  for (auto& [path, entry] : adapters_) entry.first->remove_adapter(entry.second.get());
}

void LoraNetwork::set_enabled(bool enabled) {
  for (auto& [path, entry] : adapters_) entry.second->enabled = enabled;
}

void LoraNetwork::set_scale(double scale) {
  for (auto& [path, entry] : adapters_) entry.second->scale = scale;
}

void LoraNetwork::to(const c10::Device& device) {
  for (auto& [path, entry] : adapters_) {
    auto& adapter = *entry.second;
    const bool grad = adapter.down.requires_grad();
    adapter.down = adapter.down.detach().to(device).set_requires_grad(grad);
    adapter.up = adapter.up.detach().to(device).set_requires_grad(grad);
  }
}

std::vector<at::Tensor> LoraNetwork::parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& [path, entry] : adapters_) {
    out.push_back(entry.second->down);
    out.push_back(entry.second->up);
  }
  return out;
}

LoraWeightMap LoraNetwork::weights() const {
  LoraWeightMap out;
  for (const auto& [path, entry] : adapters_)
    out[path] = {entry.second->down.detach().cpu().clone(), entry.second->up.detach().cpu().clone(), entry.second->alpha};
  return out;
}

LoraWeightMap LoraNetwork::gradients() const {
  LoraWeightMap out;
  for (const auto& [path, entry] : adapters_)
    out[path] = {entry.second->down.grad(), entry.second->up.grad(), entry.second->alpha};
  return out;
}

int64_t LoraNetwork::rank() const { return adapters_.empty() ? 0 : adapters_.begin()->second.second->rank(); }

double LoraNetwork::alpha() const { return adapters_.empty() ? 0.0 : adapters_.begin()->second.second->alpha; }

}  // namespace singleinsert
