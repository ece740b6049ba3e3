#pragma once
// Beyond Inserting's face-wise attention loss (Li, Yang, Wang, Dong 2024), as an attention hook:
//
//   A_l(c, j) = mean_heads softmax(q_l k_l(c)^T / sqrt(d))[:, :, j]      [B, H_l W_l], layer l
//   L_attn    = mean_l mean_b sum_positions (A_l(trained, id_b) - sg(A_l(reference, class_b)))^2
//
// q_l are layer l's queries in the trained prompt's pass (the UNet's own, so gradients reach the
// identity through them as well as through its keys). The reference prompt is the trained one with
// the identity's token replaced by a reference word ("a photo of the face of person" for "a photo
// of the face of V*"); its map is read at the class word's token with the same queries and is a
// fixed target. Sum over positions, mean over layers: the term does not shrink with the number of
// layers chosen, and lambda = 0.003 (the paper's best) weighs it against a noise loss of ~0.1.
#include <ATen/core/Tensor.h>

#include <set>
#include <string>
#include <vector>

#include "singleinsert/models/attention.h"
#include "singleinsert/models/unet.h"

namespace singleinsert {

// The attention loss's layers: "bottom" (the lowest-resolution stage: SD v1.5's 16x16 and 8x8
// layers, where cross-attention maps are most semantic) or "all".
std::set<std::string> attention_loss_layers(UNet2DConditionModelImpl& unet, const std::string& which);
// The settings every method with the loss shares: a weight >= 0, bottom or all, one word or none.
void validate_attention_loss_settings(double weight, const std::string& layers, const std::string& reference);

// mean over heads of softmax(q k^T * scale) at key `positions[b]` for each row b:
// q [B, H, Lq, D], k [B, H, Lk, D], positions [B] int64 -> [B, Lq] float32.
at::Tensor token_attention_map(const at::Tensor& query, const at::Tensor& key, const at::Tensor& positions,
                               double scale);

class AttentionLossHook : public AttentionHook {
 public:
  // reference_context [R, L, Cc]: the reference prompt's text states (fixed); identity_positions
  // and class_positions [R] int64. The loss reads the first R rows of each pass (SingleInsert runs
  // its class prompt's rows after them). `inner` (optional) supplies key/value inputs, e.g.
  // per-stage tokens.
  AttentionLossHook(std::set<std::string> layers, at::Tensor reference_context, at::Tensor identity_positions,
                    at::Tensor class_positions, AttentionHook* inner = nullptr);

  std::pair<at::Tensor, at::Tensor> key_value_inputs(const std::string& path, const at::Tensor& context) override;
  void observe(const std::string& path, AttentionImpl& layer, const at::Tensor& query, const at::Tensor& key) override;

  // L_attn over the layers observed so far (0 when none).
  at::Tensor loss() const;
  // The maps of every observed layer call, in order, by layer path: {trained, reference} [B, Lq] each.
  const std::vector<std::pair<std::string, std::pair<at::Tensor, at::Tensor>>>& maps() const { return maps_; }

 private:
  std::set<std::string> layers_;
  at::Tensor reference_context_, identity_positions_, class_positions_;
  AttentionHook* inner_;
  std::vector<at::Tensor> distances_;
  std::vector<std::pair<std::string, std::pair<at::Tensor, at::Tensor>>> maps_;
};

}  // namespace singleinsert
