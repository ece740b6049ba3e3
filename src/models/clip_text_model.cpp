#include "singleinsert/models/clip_text_model.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <limits>

#include "singleinsert/core/error.h"

namespace singleinsert {

ClipTextEmbeddingsImpl::ClipTextEmbeddingsImpl(const ClipTextConfig& config) {
  token_embedding = register_module("token_embedding", Embedding(config.vocab_size, config.encoder.hidden_size));
  position_embedding =
      register_module("position_embedding", Embedding(config.max_position_embeddings, config.encoder.hidden_size));
}

ClipTextTransformerImpl::ClipTextTransformerImpl(const ClipTextConfig& config) {
  embeddings = register_module("embeddings", ClipTextEmbeddings(config));
  encoder = register_module("encoder", ClipEncoder(config.encoder));
  final_layer_norm =
      register_module("final_layer_norm", LayerNorm(config.encoder.hidden_size, config.encoder.layer_norm_eps));
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& config) : config_(config) {
  config_.validate();
  text_model = register_module("text_model", ClipTextTransformer(config_));
}

at::Tensor ClipTextModelImpl::token_embeddings(const at::Tensor& input_ids) {
  const int64_t rows = text_model->embeddings->token_embedding->weight.size(0);
  if (input_ids.numel() > 0 && (input_ids.max().item<int64_t>() >= rows || input_ids.min().item<int64_t>() < 0))
    throw Error(fmt::format("token id {} is outside the text encoder's {} embeddings",
                            input_ids.max().item<int64_t>(), rows));
  return text_model->embeddings->token_embedding->forward(input_ids);
}

ClipTextOutput ClipTextModelImpl::forward_embeds(const at::Tensor& inputs_embeds, const at::Tensor& input_ids,
                                                 const c10::optional<at::Tensor>& attention_mask,
                                                 bool output_hidden_states) {
  const int64_t batch = inputs_embeds.size(0), length = inputs_embeds.size(1);
  if (length > config_.max_position_embeddings)
    throw Error(fmt::format("{} tokens exceed the text encoder's {} positions", length,
                            config_.max_position_embeddings));
  const auto options = inputs_embeds.options();
  const at::Tensor positions = at::arange(length, options.dtype(at::kLong));
  const at::Tensor h = inputs_embeds + text_model->embeddings->position_embedding->forward(positions);  // [B, L, D]

  // Causal mask with the dtype's lowest value above the diagonal, as transformers builds it.
  double lowest = std::numeric_limits<float>::lowest();  // torch.finfo(dtype).min
  switch (inputs_embeds.scalar_type()) {
    case at::kDouble: lowest = std::numeric_limits<double>::lowest(); break;
    case at::kHalf: lowest = static_cast<double>(std::numeric_limits<c10::Half>::lowest()); break;
    case at::kBFloat16: lowest = static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest()); break;
    default: break;
  }
  at::Tensor mask = at::full({length, length}, lowest, options).triu(1).view({1, 1, length, length});
  if (attention_mask.has_value()) {
    // 0 where attended, the lowest value where padded (transformers' _prepare_4d_attention_mask).
    mask = mask + (1.0 - attention_mask->to(options.dtype())).view({batch, 1, 1, length}) * lowest;  // [B, 1, L, L]
  }
  std::vector<at::Tensor> states = text_model->encoder->forward(h, mask, output_hidden_states);
  ClipTextOutput out;
  out.last_hidden_state = text_model->final_layer_norm->forward(states.back());
  const at::Tensor eos_positions = config_.eos_token_id == 2
                                       ? input_ids.to(at::kLong).argmax(-1)
                                       : (input_ids.to(at::kLong) == config_.eos_token_id).to(at::kInt).argmax(-1);
  out.pooler_output = out.last_hidden_state.index({at::arange(batch, options.dtype(at::kLong)), eos_positions.to(inputs_embeds.device())});
  if (output_hidden_states) out.hidden_states = std::move(states);
  return out;
}

ClipTextOutput ClipTextModelImpl::forward(const at::Tensor& input_ids, const c10::optional<at::Tensor>& attention_mask,
                                          bool output_hidden_states) {
  return forward_embeds(token_embeddings(input_ids), input_ids, attention_mask, output_hidden_states);
}

void ClipTextModelImpl::resize_token_embeddings(int64_t count) {
  auto& table = text_model->embeddings->token_embedding->weight;
  const int64_t rows = table.size(0);
  if (count <= rows) return;
  at::NoGradGuard no_grad;
  at::Tensor grown = at::zeros({count, table.size(1)}, table.options());
  grown.narrow(0, 0, rows).copy_(table);
  table.set_data(grown);
  config_.vocab_size = count;
}

}  // namespace singleinsert
