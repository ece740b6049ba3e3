#pragma once
// A LoRA network: low-rank adapters attached to named Linear/Conv2d layers of one or more
// models. Modules are addressed by a canonical path, "<component>.<registered path>", e.g.
// "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" or
// "text_encoder.text_model.encoder.layers.0.self_attn.q_proj". Several networks can be attached
// at once (their updates add); switching one off restores the base model exactly.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "singleinsert/models/layers.h"
#include "singleinsert/models/lora_adapter.h"

namespace singleinsert {

// The adaptable layers of a model under "<component>." + registered path.
std::map<std::string, AdaptableLayer*> named_adaptable_layers(torch::nn::Module& model, const std::string& component);

// SingleInsert's targets: the UNet's attention projections (to_q, to_k, to_v, to_out.0) and the
// text encoder's self-attention projections (q_proj, k_proj, v_proj, out_proj).
bool is_unet_attention_projection(const std::string& path);
bool is_text_attention_projection(const std::string& path);

// LoRA tensors by canonical module path: {down, up} plus the alpha (0 = none).
struct LoraWeights {
  at::Tensor down, up;
  double alpha = 0.0;
};
using LoraWeightMap = std::map<std::string, LoraWeights>;

class LoraNetwork {
 public:
  // Fresh adapters on `layers`: down ~ N(0, 1/rank), up = 0 (so the network starts as a no-op).
  // `owners` are the models the layers belong to; the network keeps them alive so that it can
  // always detach its adapters.
  static std::shared_ptr<LoraNetwork> create(const std::string& name, const std::map<std::string, AdaptableLayer*>& layers,
                                             std::vector<std::shared_ptr<torch::nn::Module>> owners, int64_t rank,
                                             double alpha, at::Generator& generator);
  // Adapters with given weights; every key must name one of `layers` and match its shape.
  static std::shared_ptr<LoraNetwork> from_weights(const std::string& name, const LoraWeightMap& weights,
                                                   const std::map<std::string, AdaptableLayer*>& layers,
                                                   std::vector<std::shared_ptr<torch::nn::Module>> owners,
                                                   const std::string& origin);
  ~LoraNetwork();  // detaches its adapters

  const std::string& name() const { return name_; }
  void set_enabled(bool enabled);
  void set_scale(double scale);
  void to(const c10::Device& device);
  std::vector<at::Tensor> parameters() const;  // down and up of every adapter
  LoraWeightMap weights() const;               // detached copies keyed by module path
  LoraWeightMap gradients() const;             // the gradients of down and up, keyed likewise
  size_t size() const { return adapters_.size(); }
  int64_t rank() const;
  double alpha() const;

 private:
  LoraNetwork() = default;
  std::string name_;
  std::vector<std::shared_ptr<torch::nn::Module>> owners_;
  std::map<std::string, std::pair<AdaptableLayer*, std::shared_ptr<LoraAdapter>>> adapters_;
};

// Switches a network off for a scope (the frozen base model without a second copy).
class LoraDisabled {
 public:
  explicit LoraDisabled(LoraNetwork* network) : network_(network) {
    if (network_) network_->set_enabled(false);
  }
  ~LoraDisabled() {
    if (network_) network_->set_enabled(true);
  }

 private:
  LoraNetwork* network_;
};

}  // namespace singleinsert
