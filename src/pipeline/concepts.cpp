#include "singleinsert/pipeline/concepts.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <set>

#include "singleinsert/core/error.h"
#include "singleinsert/core/sha256.h"

namespace singleinsert {

ConceptRequest parse_concept_request(const std::string& text) {
  ConceptRequest request;
  const size_t colon = text.rfind(':');
  // A colon is a trigger separator only when what follows has no path separator.
  if (colon != std::string::npos && colon + 1 < text.size() && text.find('/', colon) == std::string::npos) {
    request.path = text.substr(0, colon);
    request.trigger = text.substr(colon + 1);
  } else {
    request.path = text;
  }
  return request;
}

std::string base_model_sha256(const ModelBundle& bundle) {
  return bundle.unet_weights_path.empty() ? std::string() : cached_sha256_of_file(bundle.unet_weights_path);
}

BaseModel base_model(const ModelBundle& bundle) {
  BaseModel base;
  base.unet = bundle.unet;
  base.text_encoder = bundle.text_encoder;
  base.vae = bundle.vae;
  base.schedule = NoiseScheduleConfig::from_json(bundle.scheduler_config);
  base.device = bundle.execution.device;
  return base;
}

AppliedConcepts apply_concepts(ModelBundle& bundle, const std::vector<ConceptRequest>& requests) {
  AppliedConcepts applied;
  if (requests.empty()) return applied;
  const std::string model_hash = base_model_sha256(bundle);
  std::set<std::string> seen;
  auto& table = bundle.text_encoder->text_model->embeddings->token_embedding->weight;
  for (const auto& request : requests) {
    const Concept concept = Concept::load(request.path);
    const std::string trigger = request.trigger.empty() ? concept.trigger : request.trigger;
    if (!seen.insert(trigger).second)
      throw Error(fmt::format("two concepts use the trigger '{}' (give one another: --concept {}:OTHER)", trigger,
                              request.path));
    if (!concept.base_model_sha256.empty() && !model_hash.empty() && concept.base_model_sha256 != model_hash)
      throw Error(fmt::format("{}: trained on another base model (its UNet sha256 {} differs from {}'s {})",
                              request.path, concept.base_model_sha256.substr(0, 12), bundle.path,
                              model_hash.substr(0, 12)));
    if (concept.embedding.size(-1) != table.size(1))
      throw Error(fmt::format("{}: its embedding is {} wide but the text encoder's is {}", request.path,
                              concept.embedding.size(-1), table.size(1)));
    if (bundle.tokenizer.is_vocabulary_token(trigger))
      spdlog::debug("the trigger '{}' is also a word of the vocabulary; in prompts it means the concept", trigger);
    const int64_t id = bundle.tokenizer.add_token(trigger);
    bundle.text_encoder->resize_token_embeddings(bundle.tokenizer.vocab_size());
    {
      at::NoGradGuard no_grad;
      auto& grown = bundle.text_encoder->text_model->embeddings->token_embedding->weight;
      grown[id].copy_(concept.embedding[0].to(grown.device(), grown.scalar_type()));
    }
    if (!concept.lora.empty()) {
      auto network = LoraNetwork::from_weights(request.path, concept.lora,
                                               singleinsert_lora_targets(*bundle.unet, *bundle.text_encoder),
                                               {bundle.unet.ptr(), bundle.text_encoder.ptr()}, request.path);
      network->set_scale(request.lora_scale);
      applied.networks.push_back(network);
    }
    applied.triggers.push_back(trigger);
    applied.descriptions.push_back(fmt::format("{} (trigger '{}', class '{}', stage {})", request.path, trigger,
                                               concept.class_word, concept.stage));
  }
  return applied;
}

void require_triggers(const std::vector<std::string>& prompts, const std::vector<std::string>& triggers) {
  if (triggers.empty()) return;
  for (const auto& prompt : prompts) {
    bool found = false;
    for (const auto& trigger : triggers) found = found || prompt.find(trigger) != std::string::npos;
    if (!found) {
      std::string listed;
      for (const auto& t : triggers) listed += (listed.empty() ? "'" : ", '") + t + "'";
      throw Error(fmt::format("the prompt \"{}\" uses none of the concept triggers ({})", prompt, listed));
    }
  }
}

}  // namespace singleinsert
