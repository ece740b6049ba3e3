#pragma once
// Beyond Inserting (Li, Yang, Wang, Dong 2024): textual inversion's single identity embedding,
// trained on the whole image with its templates, plus the paper's two parts, each switchable:
//
//   L = L_noise + attn_weight * L_attn                       (training/attention_loss.h)
//   per-stage key/value tokens from the identity (kv_tokens)  (training/kv_tokens.h)
//
// What differs from EmbeddingInversion is only the loss's forward pass: the text states are made
// once per stage and branch, and the UNet's cross-attention layers are hooked for the pass.
#include <ATen/core/Tensor.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "singleinsert/training/kv_tokens.h"
#include "singleinsert/training/textual_inversion.h"

namespace singleinsert {

// The prompts a run trains on and their reference prompts (the trigger replaced by
// attn_reference), with the positions the attention loss reads.
struct AttentionLossPrompts {
  at::Tensor reference_ids;       // [T, L]
  at::Tensor identity_positions;  // [T]: the trigger's token in each template
  at::Tensor class_positions;     // [T]: the class word's first token in each reference prompt
};

class BeyondInserting : public EmbeddingInversion {
 public:
  // As EmbeddingInversion, with `prompts` for the attention loss (needed when attn_weight > 0).
  BeyondInserting(BaseModel base, const EmbeddingInversionConfig& config, const at::Tensor& pixels,
                  at::Tensor template_ids, int64_t first_id, const at::Tensor& start,
                  const AttentionLossPrompts& prompts);

  std::vector<at::Tensor> parameters() override;
  LossTerms loss(int step, at::Generator& generator) override;
  void save_state(TrainingState& state) const override;
  void load_state(const TrainingState& state) override;
  std::vector<std::string> progress_terms() const override;

  // The per-stage tokens [2S, D] (keys first), or undefined without kv_tokens.
  at::Tensor kv_tokens() const;

 private:
  std::optional<KvTokenMapper> mapper_;
  std::set<std::string> attention_layers_;
  at::Tensor reference_states_;  // [T, L, D]: every reference prompt, encoded once
  at::Tensor identity_positions_, class_positions_;
};

}  // namespace singleinsert
