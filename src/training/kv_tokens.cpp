#include "singleinsert/training/kv_tokens.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/tensor_format.h"
#include "singleinsert/models/cross_attention.h"

namespace singleinsert {

KvTokenMapper::KvTokenMapper(int stages, int64_t width, at::Generator& generator) : stages_(stages) {
  if (stages < 1) throw Error(fmt::format("{} stages: need at least one", stages));
  const auto options = at::TensorOptions().dtype(at::kFloat);
  // W_q, W_k, W_v as torch's Linear default draws them (uniform, bound 1/sqrt(D)); W_o and p zero.
  const double bound = 1.0 / std::sqrt(static_cast<double>(width));
  for (const char* name : {"to_q.weight", "to_k.weight", "to_v.weight"})
    tensors_[name] = at::empty({width, width}, options).uniform_(-bound, bound, generator);
  tensors_["to_out.weight"] = at::zeros({width, width}, options);
  tensors_["positions"] = at::zeros({2 * stages, width}, options);
  tensors_["norm.weight"] = at::ones({width}, options);
  tensors_["norm.bias"] = at::zeros({width}, options);
  for (auto& [name, tensor] : tensors_) tensor.requires_grad_(true);
}

at::Tensor KvTokenMapper::forward(const at::Tensor& identity) const {
  const at::Tensor e = identity.reshape({1, -1}).to(at::kFloat);
  const int64_t width = e.size(1);
  const at::Tensor x = e + tensors_.at("positions");  // [2S, D]
  const at::Tensor normed = at::layer_norm(x, {width}, tensors_.at("norm.weight"), tensors_.at("norm.bias"), 1e-5);
  const at::Tensor q = at::linear(normed, tensors_.at("to_q.weight"));
  const at::Tensor k = at::linear(normed, tensors_.at("to_k.weight"));
  const at::Tensor v = at::linear(normed, tensors_.at("to_v.weight"));
  const at::Tensor mixed = (at::matmul(q, k.t()) / std::sqrt(static_cast<double>(width))).softmax(-1).matmul(v);
  return x + at::linear(mixed, tensors_.at("to_out.weight"));  // [2S, D]
}

std::vector<at::Tensor> KvTokenMapper::parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& [name, tensor] : tensors_) out.push_back(tensor);
  return out;
}

NamedTensors KvTokenMapper::state() const {
  NamedTensors out;
  for (const auto& [name, tensor] : tensors_) out.emplace_back(name, tensor.detach().cpu().clone());
  return out;
}

void KvTokenMapper::load(const NamedTensors& state, const std::string& origin) {
  if (state.size() != tensors_.size())
    throw Error(fmt::format("{}: {} token-mapper tensors, expected {}", origin, state.size(), tensors_.size()));
  at::NoGradGuard no_grad;
  for (const auto& [name, tensor] : state) {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) throw Error(fmt::format("{}: unexpected token-mapper tensor '{}'", origin, name));
    if (!tensor.sizes().equals(it->second.sizes()))
      throw Error(fmt::format("{}: '{}' is {} but the run has {}", origin, name, shape_string(tensor.sizes()),
                              shape_string(it->second.sizes())));
    it->second.copy_(tensor);
  }
}

void KvTokenMapper::to(const c10::Device& device) {
  for (auto& [name, tensor] : tensors_) tensor = tensor.detach().to(device).requires_grad_(true);
}

PerStageKeyValues::PerStageKeyValues(UNet2DConditionModelImpl& unet, std::vector<at::Tensor> keys,
                                     std::vector<at::Tensor> values)
    : keys_(std::move(keys)), values_(std::move(values)) {
  const int stages = cross_attention_stage_count(unet.config());
  if (static_cast<int>(keys_.size()) != stages || static_cast<int>(values_.size()) != stages)
    throw Error(fmt::format("{} key and {} value inputs for a UNet with {} stages", keys_.size(), values_.size(), stages));
  for (const auto& layer : cross_attention_layers(unet)) stage_of_[layer.path] = layer.stage;
}

std::pair<at::Tensor, at::Tensor> PerStageKeyValues::key_value_inputs(const std::string& path, const at::Tensor& context) {
  const auto it = stage_of_.find(path);
  if (it == stage_of_.end()) return {context, context};
  const at::Tensor& key = keys_[it->second];
  const at::Tensor& value = values_[it->second];
  return {key.to(context.scalar_type()), value.to(context.scalar_type())};
}

}  // namespace singleinsert
