// Concept folders from strangers: concept.json, the LoRA's rank and alpha metadata and an
// interrupted run's checkpoint/state.json, as `generate --concept` and `--resume` read them.
// The input is up to four parts separated by NUL bytes: concept.json, state.json, lora_rank,
// lora_alpha. Loading and applying the concept to the tiny model, and loading the checkpoint,
// must succeed or throw singleinsert::Error.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "singleinsert/core/error.h"
#include "singleinsert/formats/lora_layouts.h"
#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/training/concept.h"

using namespace singleinsert;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> split_parts(const std::string& text) {
  std::vector<std::string> parts(1);
  for (char c : text) {
    if (c == '\0') parts.emplace_back();
    else parts.back().push_back(c);
  }
  return parts;
}

// A stage II LoRA on the tiny model's first text-encoder projection, shapes correct.
LoraWeightMap one_module_lora() {
  ModelBundle& bundle = fuzz::tiny_bundle();
  for (const auto& [path, layer] : adaptable_modules(bundle))
    if (is_text_attention_projection(path))
      return {{path, {at::zeros({2, layer->in_features()}), at::zeros({layer->out_features(), 2}), 0.0}}};
  throw Error("the tiny model has no text-encoder projection");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (!fuzz::seed_folder()) return 0;
  // concept.json as `invert` writes it (history cut to two rows) and a checkpoint's state.json.
  const std::string concept_json = R"({"base_model":{"path":"sd_tiny","unet_sha256":""},"class":"face",)"
                                   R"("created_by":"singleinsert","embedding":{"file":"embedding.safetensors","width":32},)"
                                   R"("format_version":1,"history":)";
  const std::string history =
      history_json({{1, 1, 0.03, {{"fg", 0.03}, {"bg", 0.001}, {"sm", 0.0}}, 0.035, 0.001, 0.85},
                    {2, 2, 0.07, {{"fg", 0.06}, {"bg", 0.017}, {"sm", 0.002}}, 0.27, 0.001, 1.22}});
  const std::string state = R"({"history":)" + history + R"(,"run":{"class":"face","trigger":"*"},"stage":2,"step":2})";
  fuzz::write_seed("stage1.bin", concept_json + history + R"(,"stage":1,"trigger":"*"})" + std::string(1, '\0') + state);
  fuzz::write_seed("stage2.bin", concept_json + history + R"(,"stage":2,"trigger":"sks"})" + std::string(1, '\0') + state +
                                     std::string(1, '\0') + "2" + std::string(1, '\0') + "2.0");
  std::exit(0);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ModelBundle& bundle = fuzz::tiny_bundle();
  static const ClipTokenizer original_tokenizer = bundle.tokenizer;
  static const auto original_expansions = bundle.prompt_expansions;
  static const std::string root = "/dev/shm/singleinsert_fuzz_" + std::to_string(::getpid());
  static const std::string concept_dir = root + "_concept", resumed = root + "_resumed";
  static const LoraWeightMap lora = one_module_lora();
  static const bool prepared = [&] {
    fs::create_directories(concept_dir);
    const int64_t width = bundle.text_encoder->text_model->embeddings->token_embedding->weight.size(1);
    save_safetensors(concept_dir + "/embedding.safetensors", {{"*", at::zeros({1, width})}});
    fs::create_directories(resumed + ".partial/checkpoint");
    save_safetensors(resumed + ".partial/checkpoint/trainable.safetensors", {{"proj.weight", at::zeros({2, 2})}});
    save_safetensors(resumed + ".partial/checkpoint/optimizer.safetensors", {{"step", at::zeros({1})}});
    save_safetensors(resumed + ".partial/checkpoint/lora.safetensors", to_diffusers_processor_layout(lora));
    return true;
  }();
  (void)prepared;

  const std::vector<std::string> parts = split_parts(std::string(reinterpret_cast<const char*>(data), size));
  write_file_atomic(concept_dir + "/concept.json", parts[0]);
  std::map<std::string, std::string> metadata;
  if (parts.size() > 2) metadata["lora_rank"] = parts[2];
  if (parts.size() > 3) metadata["lora_alpha"] = parts[3];
  try {
    save_safetensors(concept_dir + "/lora.safetensors", to_diffusers_processor_layout(lora), metadata);
  } catch (const Error&) {
    return 0;  // metadata the writer refuses (invalid UTF-8)
  }
  try {
    (void)apply_concepts(bundle, {{concept_dir, "", 1.0}});
  } catch (const Error&) {
  }
  bundle.tokenizer = original_tokenizer;
  bundle.prompt_expansions = original_expansions;

  if (parts.size() > 1) {
    write_file_atomic(resumed + ".partial/checkpoint/state.json", parts[1]);
    try {
      const ConceptBuilder builder(resumed, /*overwrite=*/false, /*resume=*/true);
      (void)builder.load_checkpoint();
    } catch (const Error&) {
    }
  }
  return 0;
}
