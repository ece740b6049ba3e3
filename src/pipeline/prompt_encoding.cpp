#include "singleinsert/pipeline/prompt_encoding.h"


#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include "singleinsert/core/error.h"

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

std::string expand_prompt(const std::string& prompt, const std::map<std::string, std::string>& expansions) {
  std::string out = prompt;
  for (const auto& [token, expansion] : expansions) {
    if (token.empty()) continue;
    for (size_t at = out.find(token); at != std::string::npos; at = out.find(token, at + expansion.size()))
      out.replace(at, token.size(), expansion);
  }
  return out;
}

at::Tensor encode_prompts(ModelBundle& bundle, const std::vector<std::string>& prompts) {
  if (!bundle.text_encoder) throw Error("the text encoder was released after the prompts were encoded");
  at::NoGradGuard no_grad;
  std::vector<std::string> expanded;
  for (const auto& prompt : prompts) expanded.push_back(expand_prompt(prompt, bundle.prompt_expansions));
  const at::Tensor ids = tokenize_prompts(bundle.tokenizer, expanded).to(bundle.execution.device);
  return bundle.text_encoder->forward(ids).last_hidden_state;  // [N, 77, D]
}

}  // namespace singleinsert
