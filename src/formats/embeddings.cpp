#include "singleinsert/formats/embeddings.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "singleinsert/core/error.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {

TextualInversion read_embedding_file(const SafetensorsFile& file) {
  TextualInversion out;
  if (file.contains("emb_params")) {
    out.layout = "a1111";
    out.vectors = file.tensor("emb_params");
  } else if (file.contains("clip_l") || file.contains("clip_g")) {
    throw Error(fmt::format("{}: an SDXL embedding (clip_l/clip_g); singleinsert runs SD v1.x/v2.x", file.path()));
  } else if (file.size() == 1) {
    out.layout = "diffusers";
    out.token = file.keys().front();
    out.vectors = file.tensor(out.token);
  } else {
    throw Error(fmt::format("{}: not a textual-inversion embedding (expected emb_params, or one tensor named after "
                            "its token)",
                            file.path()));
  }
  if (!at::isFloatingType(out.vectors.scalar_type()) || out.vectors.dim() < 1 || out.vectors.dim() > 2)
    throw Error(fmt::format("{}: embedding of shape {} (expected [D] or [n, D] floats)", file.path(),
                            shape_string(out.vectors.sizes())));
  out.vectors = out.vectors.to(at::kFloat);
  if (out.vectors.dim() == 1) out.vectors = out.vectors.unsqueeze(0);
  return out;
}

NamedTensors to_a1111_embedding(const at::Tensor& vectors) {
  return {{"emb_params", vectors.detach().cpu().to(at::kFloat).contiguous()}};
}

NamedTensors to_diffusers_embedding(const std::string& token, const at::Tensor& vectors) {
  return {{token, vectors.detach().cpu().to(at::kFloat).contiguous()}};
}

}  // namespace singleinsert
