#include "singleinsert/pipeline/prompt_encoding.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

namespace singleinsert {

at::Tensor tokenize_prompts(const ClipTokenizer& tokenizer, const std::vector<std::string>& prompts) {
  std::vector<int64_t> ids;
  for (const std::string& prompt : prompts) {
    const TokenizedPrompt tokens = tokenizer.tokenize(prompt);
    if (!tokens.truncated_text.empty())
      spdlog::warn("the prompt has {} tokens; CLIP reads {}, so this part was dropped: \"{}\"",
                   tokens.untruncated_length, tokenizer.max_length(), tokens.truncated_text);
    ids.insert(ids.end(), tokens.ids.begin(), tokens.ids.end());
  }
  return at::tensor(ids, at::kLong).view({static_cast<int64_t>(prompts.size()), tokenizer.max_length()});
}

at::Tensor encode_prompts(ModelBundle& bundle, const std::vector<std::string>& prompts) {
  at::NoGradGuard no_grad;
  const at::Tensor ids = tokenize_prompts(bundle.tokenizer, prompts).to(bundle.execution.device);
  return bundle.text_encoder->forward(ids).last_hidden_state;  // [N, 77, D]
}

}  // namespace singleinsert
