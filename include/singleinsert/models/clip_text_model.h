#pragma once
// transformers' CLIPTextModel: token + position embeddings, a causal pre-LN transformer and a
// final LayerNorm, registered as text_model.{embeddings, encoder, final_layer_norm}.
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/nn/module.h>

#include <vector>

#include "singleinsert/models/clip_config.h"
#include "singleinsert/models/clip_encoder.h"
#include "singleinsert/models/layers.h"

namespace singleinsert {

struct ClipTextOutput {
  at::Tensor last_hidden_state;  // [B, L, D] after final_layer_norm
  at::Tensor pooler_output;      // [B, D] at each sequence's EOS
  std::vector<at::Tensor> hidden_states;  // embeddings, then each layer's output (when asked)
};

class ClipTextEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit ClipTextEmbeddingsImpl(const ClipTextConfig& config);
  Embedding token_embedding{nullptr}, position_embedding{nullptr};
};
TORCH_MODULE(ClipTextEmbeddings);

class ClipTextTransformerImpl : public torch::nn::Module {
 public:
  explicit ClipTextTransformerImpl(const ClipTextConfig& config);
  ClipTextEmbeddings embeddings{nullptr};
  ClipEncoder encoder{nullptr};
  LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(ClipTextTransformer);

class ClipTextModelImpl : public torch::nn::Module {
 public:
  explicit ClipTextModelImpl(const ClipTextConfig& config);

  // ids [B, L] -> input word embeddings [B, L, D]; callers may edit rows before forward_embeds
  // (SingleInsert replaces the embedding of the token after BOS).
  at::Tensor token_embeddings(const at::Tensor& input_ids);

  // inputs_embeds [B, L, D] (word embeddings, positions are added here); input_ids [B, L] locate
  // the EOS for pooling; attention_mask [B, L] of 0/1 masks padding (SD pipelines pass none).
  ClipTextOutput forward_embeds(const at::Tensor& inputs_embeds, const at::Tensor& input_ids,
                                const c10::optional<at::Tensor>& attention_mask = c10::nullopt,
                                bool output_hidden_states = false);
  ClipTextOutput forward(const at::Tensor& input_ids,
                         const c10::optional<at::Tensor>& attention_mask = c10::nullopt,
                         bool output_hidden_states = false);

  // Grows the token table to `count` rows (textual-inversion tokens); new rows are zero.
  void resize_token_embeddings(int64_t count);

  const ClipTextConfig& config() const { return config_; }
  ClipTextTransformer text_model{nullptr};

 private:
  ClipTextConfig config_;
};
TORCH_MODULE(ClipTextModel);

}  // namespace singleinsert
