// LoRA and textual-inversion files as the command line applies them to a model (--lora,
// --embedding): layout detection, the kohya / PEFT / processor readers, alpha and metadata,
// bundled embeddings and the shape checks against the model's layers. The input is a tensor list
// (tensor_list.h); each must apply or throw singleinsert::Error, and leave the model as it was.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz_support.h"
#include "singleinsert/core/error.h"
#include "singleinsert/formats/embeddings.h"
#include "singleinsert/formats/lora_layouts.h"
#include "singleinsert/models/lora.h"
#include "singleinsert/pipeline/concepts.h"
#include "tensor_list.h"

using namespace singleinsert;

namespace {

void write_seeds() {
  ModelBundle& bundle = fuzz::tiny_bundle();
  const auto modules = adaptable_modules(bundle);
  LoraWeightMap weights;
  for (const auto& [path, layer] : modules) {
    if (!is_unet_attention_projection(path) && !is_text_attention_projection(path)) continue;
    weights[path] = {at::zeros({2, layer->in_features()}), at::zeros({layer->out_features(), 2}), 2.0};
    if (weights.size() == 3) break;
  }
  fuzz::write_seed("kohya.txt", fuzz::tensor_list_text(to_kohya_layout(weights)));
  fuzz::write_seed("peft.txt", fuzz::tensor_list_text(to_peft_layout(weights), {{"lora_alpha", "2"}}));
  fuzz::write_seed("processor.txt", fuzz::tensor_list_text(to_diffusers_processor_layout(weights), {{"lora_alpha", "2"}}));
  const int64_t width = bundle.text_encoder->text_model->embeddings->token_embedding->weight.size(1);
  fuzz::write_seed("embedding_diffusers.txt", fuzz::tensor_list_text(to_diffusers_embedding("<toy>", at::zeros({width}))));
  fuzz::write_seed("embedding_a1111.txt", fuzz::tensor_list_text(to_a1111_embedding(at::zeros({2, width}))));
  NamedTensors bundled = to_kohya_layout(weights);
  bundled.emplace_back("bundle_emb.toy.string_to_param.*", at::zeros({1, width}));
  fuzz::write_seed("kohya_bundled_embedding.txt", fuzz::tensor_list_text(bundled));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (fuzz::seed_folder()) write_seeds(), std::exit(0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ModelBundle& bundle = fuzz::tiny_bundle();
  static const ClipTokenizer original_tokenizer = bundle.tokenizer;
  static const auto original_expansions = bundle.prompt_expansions;
  const fuzz::TensorList list = fuzz::parse_tensor_list(std::string(reinterpret_cast<const char*>(data), size));
  const std::optional<std::string> written = fuzz::write_tensor_list(list, "adapter");
  if (!written) return 0;
  const std::string& path = *written;
  try {
    const auto networks = apply_loras(bundle, {{path, 0.5}});
  } catch (const Error&) {
  }
  try {
    (void)apply_embeddings(bundle, {{path, ""}});
  } catch (const Error&) {
  }
  try {
    (void)apply_embeddings(bundle, {{path, "<fuzz>"}});
  } catch (const Error&) {
  }
  bundle.tokenizer = original_tokenizer;
  bundle.prompt_expansions = original_expansions;
  return 0;
}
