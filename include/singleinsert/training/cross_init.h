#pragma once
// Cross Initialization's starting point (Pang et al. 2024), as lyuPang/CrossInitialization's
// utils.py computes it: the text encoder's *output* for mean input embeddings, so that the learned
// input embedding starts at the scale and direction learned embeddings end at.
//
//   names:  m_k = mean over names with more than k tokens of E_in(token k of the name)
//           start = text_encoder([BOS, m_0 .. m_{n-1}, EOS, PAD ...])[1 .. n]     (77 positions)
//   words:  start = text_encoder([BOS, tokens of the words, EOS])[1 .. n]        (n tokens exactly)
//
// Training is then textual inversion's with the regulariser of textual_inversion.h.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/clip_tokenizer.h"

namespace singleinsert {

// `names`: e.g. celebrities' names, one per entry. Names that tokenize to nothing, or only to the
// unknown token, are skipped with a warning; none left, or fewer than `count` tokens in every
// name, is an Error naming `origin`.
at::Tensor cross_init_from_names(ClipTextModelImpl& text_encoder, const ClipTokenizer& tokenizer,
                                 const std::vector<std::string>& names, int count, const std::string& origin);

// `words` must tokenize to exactly `count` tokens.
at::Tensor cross_init_from_words(ClipTextModelImpl& text_encoder, const ClipTokenizer& tokenizer,
                                 const std::string& words, int count);

}  // namespace singleinsert
