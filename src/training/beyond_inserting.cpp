#include "singleinsert/training/beyond_inserting.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "singleinsert/core/error.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/models/cross_attention.h"
#include "singleinsert/training/attention_loss.h"

namespace singleinsert {

BeyondInserting::BeyondInserting(BaseModel base, const EmbeddingInversionConfig& config, const at::Tensor& pixels,
                                 at::Tensor template_ids, int64_t first_id, const at::Tensor& start,
                                 const AttentionLossPrompts& prompts)
    : EmbeddingInversion(std::move(base), config, pixels, std::move(template_ids), first_id, start) {
  if (config_.kv_tokens) {
    at::Generator generator = make_cpu_generator(step_seed(config_.step.seed, 1, -1));
    mapper_.emplace(cross_attention_stage_count(base_.unet->config()), vectors_.size(1), generator);
    mapper_->to(base_.device);
  }
  if (config_.attn_weight > 0) {
    if (!prompts.reference_ids.defined()) throw Error("beyond-inserting: the attention loss needs reference prompts");
    attention_layers_ = attention_loss_layers(*base_.unet, config_.attn_layers);
    identity_positions_ = prompts.identity_positions.to(base_.device);
    class_positions_ = prompts.class_positions.to(base_.device);
    at::NoGradGuard no_grad;
    reference_states_ = base_.text_encoder->forward(prompts.reference_ids.to(base_.device)).last_hidden_state;
  }
}

std::vector<at::Tensor> BeyondInserting::parameters() {
  std::vector<at::Tensor> out = {vectors_};
  if (mapper_)
    for (const auto& p : mapper_->parameters()) out.push_back(p);
  return out;
}

LossTerms BeyondInserting::loss(int, at::Generator& generator) {
  const Draw d = draw(generator);
  std::optional<compat::AutocastGuard> mixed_precision;
  if (base_.dtype != at::kFloat) mixed_precision.emplace(base_.device.type(), base_.dtype);
  const at::Tensor ids = template_ids_.index_select(0, d.choice);
  auto& text_encoder = *base_.text_encoder;
  // Per-stage tokens: each stage's key and value states, from the tokens in the identity's place.
  std::optional<PerStageKeyValues> per_stage;
  at::Tensor states;
  if (mapper_) {
    const at::Tensor tokens = mapper_->forward(vectors_);  // [2S, D]
    const int64_t stages = mapper_->stages();
    std::vector<at::Tensor> keys, values;
    for (int64_t s = 0; s < stages; ++s) {
      keys.push_back(encode_with_vectors(text_encoder, ids, first_id_, tokens.narrow(0, s, 1)));
      values.push_back(encode_with_vectors(text_encoder, ids, first_id_, tokens.narrow(0, stages + s, 1)));
    }
    states = keys.front();  // every cross-attention layer reads its stage's instead
    per_stage.emplace(*base_.unet, std::move(keys), std::move(values));
  } else {
    states = encode_with_vectors(text_encoder, ids, first_id_, vectors_);
  }
  std::optional<AttentionLossHook> attention;
  if (config_.attn_weight > 0)
    attention.emplace(attention_layers_, reference_states_.index_select(0, d.choice),
                      identity_positions_.index_select(0, d.choice), class_positions_.index_select(0, d.choice),
                      per_stage ? &*per_stage : nullptr);
  AttentionHook* hook = attention ? static_cast<AttentionHook*>(&*attention)
                                  : per_stage ? static_cast<AttentionHook*>(&*per_stage) : nullptr;
  std::optional<AttentionHookGuard> guard;
  if (hook) guard.emplace(*base_.unet, *hook);
  const at::Tensor noise_loss = noise_prediction_loss(*base_.unet, schedule_, d.z0, d.noise, d.timesteps, states);
  if (!attention) return {noise_loss, {{"noise", noise_loss}}};
  const at::Tensor attn = attention->loss();
  return {noise_loss + attn * config_.attn_weight, {{"noise", noise_loss}, {"attn", attn}}};
}

void BeyondInserting::save_state(TrainingState& state) const {
  EmbeddingInversion::save_state(state);
  if (mapper_)
    for (auto& [name, tensor] : mapper_->state()) state.trainable.emplace_back("kv." + name, tensor);
}

void BeyondInserting::load_state(const TrainingState& state) {
  TrainingState own = state, mapper;
  own.trainable.clear();
  for (const auto& [name, tensor] : state.trainable) {
    if (name.rfind("kv.", 0) == 0) mapper.trainable.emplace_back(name.substr(3), tensor);
    else own.trainable.emplace_back(name, tensor);
  }
  EmbeddingInversion::load_state(own);
  if (mapper_) mapper_->load(mapper.trainable, "checkpoint");
  else if (!mapper.trainable.empty()) throw Error("checkpoint: per-stage tokens in a run without kv_tokens");
}

std::vector<std::string> BeyondInserting::progress_terms() const {
  return config_.attn_weight > 0 ? std::vector<std::string>{"attn"} : std::vector<std::string>{};
}

at::Tensor BeyondInserting::kv_tokens() const {
  if (!mapper_) return {};
  at::NoGradGuard no_grad;
  return mapper_->forward(vectors_).cpu();
}

}  // namespace singleinsert
