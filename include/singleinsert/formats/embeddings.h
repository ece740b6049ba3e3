#pragma once
// Textual-inversion embedding files:
//   diffusers (learned_embeds.safetensors): {"<token>": [D] or [n, D]}
//   AUTOMATIC1111 (.safetensors):           {"emb_params": [n, D]}, the token being the file's name
#include <ATen/core/Tensor.h>

#include <string>

#include "singleinsert/core/safetensors.h"

namespace singleinsert {

struct TextualInversion {
  std::string token;   // the trigger as written in the file (empty for A1111 files)
  at::Tensor vectors;  // [n, D] float32
  std::string layout;  // "diffusers" or "a1111"
};

TextualInversion read_embedding_file(const SafetensorsFile& file);
NamedTensors to_a1111_embedding(const at::Tensor& vectors);
NamedTensors to_diffusers_embedding(const std::string& token, const at::Tensor& vectors);

}  // namespace singleinsert
