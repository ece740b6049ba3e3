#pragma once
// Prompts to text-encoder states, as diffusers' encode_prompt does it: pad to 77 tokens,
// truncate longer prompts with a warning, run the text encoder without an attention mask.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "singleinsert/pipeline/model_bundle.h"

namespace singleinsert {

// Token ids [N, 77] (int64, CPU) for the prompts; warns about truncated text.
at::Tensor tokenize_prompts(const ClipTokenizer& tokenizer, const std::vector<std::string>& prompts);

// Replaces each multi-vector trigger by its token sequence (diffusers' maybe_convert_prompt).
std::string expand_prompt(const std::string& prompt, const std::map<std::string, std::string>& expansions);

// last_hidden_state [N, 77, D] on the bundle's device and dtype.
at::Tensor encode_prompts(ModelBundle& bundle, const std::vector<std::string>& prompts);

}  // namespace singleinsert
