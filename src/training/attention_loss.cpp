#include "singleinsert/training/attention_loss.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/models/cross_attention.h"

namespace singleinsert {

void validate_attention_loss_settings(double weight, const std::string& layers, const std::string& reference) {
  if (!(weight >= 0)) throw Error("--attn-weight must not be negative");
  if (layers != "bottom" && layers != "all")
    throw Error(fmt::format("attention loss layers '{}': choose bottom or all", layers));
  if (reference.find_first_of(" \t") != std::string::npos)
    throw Error(fmt::format("attn_reference '{}' must be one word (or empty)", reference));
}

std::set<std::string> attention_loss_layers(UNet2DConditionModelImpl& unet, const std::string& which) {
  validate_attention_loss_settings(0, which, "");
  const int bottom = bottom_stage(unet.config());
  std::set<std::string> paths;
  for (const auto& layer : cross_attention_layers(unet))
    if (which == "all" || layer.stage == bottom) paths.insert(layer.path);
  return paths;
}

at::Tensor token_attention_map(const at::Tensor& query, const at::Tensor& key, const at::Tensor& positions,
                               double scale) {
  const at::Tensor scores = at::matmul(query.to(at::kFloat), key.to(at::kFloat).transpose(-1, -2)) * scale;
  const at::Tensor probs = scores.softmax(-1);  // [B, H, Lq, Lk]
  const int64_t batch = probs.size(0), heads = probs.size(1), queries = probs.size(2);
  const at::Tensor index = positions.to(probs.device()).view({batch, 1, 1, 1}).expand({batch, heads, queries, 1});
  return probs.gather(-1, index).squeeze(-1).mean(1);  // [B, Lq]
}

AttentionLossHook::AttentionLossHook(std::set<std::string> layers, at::Tensor reference_context,
                                     at::Tensor identity_positions, at::Tensor class_positions, AttentionHook* inner)
    : layers_(std::move(layers)),
      reference_context_(reference_context.detach()),
      identity_positions_(std::move(identity_positions)),
      class_positions_(std::move(class_positions)),
      inner_(inner) {}

std::pair<at::Tensor, at::Tensor> AttentionLossHook::key_value_inputs(const std::string& path,
                                                                      const at::Tensor& context) {
  return inner_ ? inner_->key_value_inputs(path, context) : AttentionHook::key_value_inputs(path, context);
}

void AttentionLossHook::observe(const std::string& path, AttentionImpl& layer, const at::Tensor& query,
                                const at::Tensor& key) {
  if (inner_) inner_->observe(path, layer, query, key);
  if (!layers_.count(path)) return;
  const double scale = 1.0 / std::sqrt(static_cast<double>(layer.options.dim_head));
  const int64_t batch = reference_context_.size(0);
  const at::Tensor q = query.narrow(0, 0, batch);
  const at::Tensor trained = token_attention_map(q, key.narrow(0, 0, batch), identity_positions_, scale);
  at::Tensor reference;
  {
    at::NoGradGuard no_grad;
    const int64_t heads = query.size(1), dim = query.size(3);
    const at::Tensor context = reference_context_.to(layer.to_k->weight.scalar_type());
    const at::Tensor reference_key =
        layer.to_k->forward(context).view({batch, context.size(1), heads, dim}).transpose(1, 2);
    reference = token_attention_map(q.detach(), reference_key, class_positions_, scale);
  }
  distances_.push_back((trained - reference).pow(2).sum(1).mean());
  maps_.push_back({path, {trained, reference}});
}

at::Tensor AttentionLossHook::loss() const {
  if (distances_.empty()) return at::zeros({}, identity_positions_.options().dtype(at::kFloat));
  return at::stack(distances_).mean();
}

}  // namespace singleinsert
