#include "singleinsert/training/cross_init.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "singleinsert/core/error.h"

namespace singleinsert {

at::Tensor cross_init_from_names(ClipTextModelImpl& text_encoder, const ClipTokenizer& tokenizer,
                                 const std::vector<std::string>& names, int count, const std::string& origin) {
  at::NoGradGuard no_grad;
  const at::Tensor table = text_encoder.text_model->embeddings->token_embedding->weight;
  // Column k gathers token k of every name long enough to have one.
  std::vector<std::vector<at::Tensor>> columns(count);
  int usable = 0;
  for (const auto& name : names) {
    std::vector<int64_t> ids = tokenizer.encode(name);
    if (static_cast<int64_t>(ids.size()) > tokenizer.max_length() - 2) ids.resize(tokenizer.max_length() - 2);
    if (std::all_of(ids.begin(), ids.end(), [&](int64_t id) { return id == tokenizer.unk_id(); })) {
      spdlog::warn("{}: '{}' is no known word; skipped", origin, name);
      continue;
    }
    ++usable;
    for (int k = 0; k < count && k < static_cast<int>(ids.size()); ++k) columns[k].push_back(table[ids[k]]);
  }
  if (usable == 0) throw Error(fmt::format("no name in {} tokenizes to a known word", origin));
  for (int k = 0; k < count; ++k)
    if (columns[k].empty())
      throw Error(fmt::format("no name in {} has {} tokens, so it cannot start {} vectors (lower --num-vectors)",
                              origin, k + 1, count));

  // [BOS, PAD x count, EOS, PAD ...]: the 77 ids whose rows 1..count are replaced by the means.
  const int64_t length = tokenizer.max_length();
  std::vector<int64_t> ids(length, tokenizer.pad_id());
  ids[0] = tokenizer.bos_id();
  ids[count + 1] = tokenizer.eos_id();
  const at::Tensor input_ids = at::tensor(ids, at::kLong).view({1, length}).to(table.device());
  at::Tensor embeds = text_encoder.token_embeddings(input_ids).clone();  // [1, 77, D]
  for (int k = 0; k < count; ++k) embeds[0][k + 1].copy_(at::stack(columns[k]).mean(0));
  const at::Tensor states = text_encoder.forward_embeds(embeds, input_ids).last_hidden_state;
  return states[0].narrow(0, 1, count).to(at::kFloat).cpu().clone();
}

at::Tensor cross_init_from_words(ClipTextModelImpl& text_encoder, const ClipTokenizer& tokenizer,
                                 const std::string& words, int count) {
  at::NoGradGuard no_grad;
  std::vector<int64_t> ids = tokenizer.encode(words);
  if (static_cast<int>(ids.size()) != count)
    throw Error(fmt::format("--init-words '{}' is {} tokens; {} vectors start from {} (or change --num-vectors)", words,
                            ids.size(), count, count));
  ids.insert(ids.begin(), tokenizer.bos_id());
  ids.push_back(tokenizer.eos_id());
  const auto device = text_encoder.text_model->embeddings->token_embedding->weight.device();
  const at::Tensor input_ids = at::tensor(ids, at::kLong).view({1, -1}).to(device);
  const at::Tensor states = text_encoder.forward(input_ids).last_hidden_state;
  return states[0].narrow(0, 1, count).to(at::kFloat).cpu().clone();
}

}  // namespace singleinsert
