#include "singleinsert/io/generation_metadata.h"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

namespace singleinsert {

std::string a1111_sampler_name(const std::string& sampler) {
  if (sampler == "ddim") return "DDIM";
  if (sampler == "pndm") return "PLMS";
  if (sampler == "euler") return "Euler";
  if (sampler == "euler_a") return "Euler a";
  if (sampler == "dpmpp_2m") return "DPM++ 2M";
  if (sampler == "dpmpp_2m_karras") return "DPM++ 2M Karras";
  return sampler;
}

std::string a1111_parameters(const GenerationRecord& r) {
  std::string text = r.prompt;
  if (!r.negative_prompt.empty()) text += "\nNegative prompt: " + r.negative_prompt;
  text += fmt::format("\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}", r.steps,
                      a1111_sampler_name(r.sampler), r.guidance_scale, r.seed, r.width, r.height);
  if (!r.model_hash.empty()) text += ", Model hash: " + r.model_hash;
  if (!r.model.empty()) text += ", Model: " + std::filesystem::path(r.model).stem().string();
  if (r.batch_size > 1) text += fmt::format(", Batch size: {}, Batch pos: {}", r.batch_size, r.batch_position);
  for (const auto& concept : r.concepts) text += ", Concept: " + concept;
  for (const auto& lora : r.loras) text += ", Lora: " + lora;
  for (const auto& embedding : r.embeddings) text += ", Embedding: " + embedding;
  text += ", Version: singleinsert";
  return text;
}

std::string generation_record_json(const GenerationRecord& r) {
  const nlohmann::json j = {
      {"prompt", r.prompt},     {"negative_prompt", r.negative_prompt}, {"steps", r.steps},
      {"sampler", r.sampler},   {"guidance_scale", r.guidance_scale},   {"seed", r.seed},
      {"width", r.width},       {"height", r.height},                   {"batch_size", r.batch_size},
      {"batch_position", r.batch_position}, {"model", r.model},         {"device", r.device},
      {"dtype", r.dtype},       {"concepts", r.concepts},               {"loras", r.loras},
      {"embeddings", r.embeddings}, {"model_hash", r.model_hash}};
  return j.dump();
}

}  // namespace singleinsert
