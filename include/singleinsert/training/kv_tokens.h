#pragma once
// Beyond Inserting's semantic-fidelity tokens (Li, Yang, Wang, Dong 2024): the identity is one
// learned embedding e [D] that a small self-attention module maps to a (key, value) token pair per
// UNet stage (models/cross_attention.h: five in SD v1.5):
//
//   x_j = e + p_j                                             j < 2S, p_j learned
//   t   = x + W_o softmax(Q K^T / sqrt(D)) V,   Q, K, V = W_q LN(x), W_k LN(x), W_v LN(x)
//   keys = t[0, S), values = t[S, 2S)                        [S, D] each
//
// Each token stands in for the identity's input word embedding and goes through the frozen text
// encoder; at stage s's cross-attention, to_k reads the states made with key token s and to_v
// those made with value token s. p and W_o start at zero, so every token starts as e: training
// starts from the single-token model, which the per-stage model reproduces exactly.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "singleinsert/core/safetensors.h"
#include "singleinsert/models/attention.h"
#include "singleinsert/models/unet.h"

namespace singleinsert {

class KvTokenMapper {
 public:
  KvTokenMapper(int stages, int64_t width, at::Generator& generator);
  // identity [D] or [1, D] -> tokens [2S, D] (keys first).
  at::Tensor forward(const at::Tensor& identity) const;
  std::vector<at::Tensor> parameters() const;
  NamedTensors state() const;  // detached CPU copies
  void load(const NamedTensors& state, const std::string& origin);
  void to(const c10::Device& device);
  int stages() const { return stages_; }

 private:
  int stages_;
  std::map<std::string, at::Tensor> tensors_;  // positions, norm.weight/bias, to_{q,k,v,out}.weight
};

// Per-stage key and value inputs for every cross-attention layer: keys[s] and values[s] are
// [B, L, Cc] text states (the whole batch, as the layer's context would be).
class PerStageKeyValues : public AttentionHook {
 public:
  PerStageKeyValues(UNet2DConditionModelImpl& unet, std::vector<at::Tensor> keys, std::vector<at::Tensor> values);
  std::pair<at::Tensor, at::Tensor> key_value_inputs(const std::string& path, const at::Tensor& context) override;

 private:
  std::map<std::string, int> stage_of_;
  std::vector<at::Tensor> keys_, values_;
};

}  // namespace singleinsert
