#include "singleinsert/pipeline/concepts.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <set>
#include <stdexcept>

#include "singleinsert/core/error.h"
#include "singleinsert/models/cross_attention.h"
#include "singleinsert/core/sha256.h"
#include "singleinsert/formats/embeddings.h"
#include "singleinsert/formats/lora_layouts.h"

#include <filesystem>
namespace fs = std::filesystem;

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
  base.dtype = bundle.execution.dtype;
  return base;
}

AppliedConcepts apply_concepts(ModelBundle& bundle, const std::vector<ConceptRequest>& requests) {
  AppliedConcepts applied;
  if (requests.empty()) return applied;
  const std::string model_hash = base_model_sha256(bundle);
  std::set<std::string> seen;
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
    // A concept's own trigger was chosen (and warned about) when it was trained.
    insert_embedding(bundle, trigger, concept.embedding, request.path, /*warn_on_collision=*/!request.trigger.empty());
    if (concept.kv_keys.defined()) {
      const int stages = cross_attention_stage_count(bundle.unet->config());
      if (concept.kv_keys.size(0) != stages)
        throw Error(fmt::format("{}: per-stage tokens for {} UNet stages, but this UNet has {}", request.path,
                                concept.kv_keys.size(0), stages));
      bundle.stage_tokens.push_back({bundle.tokenizer.token_id(trigger), concept.kv_keys, concept.kv_values});
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

namespace {

// The length of the UTF-8 sequence starting at text[at], or 0 if it is not one.
size_t utf8_sequence_length(const std::string& text, size_t at) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(at);
  const size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3 : (lead >> 3) == 0x1e ? 4 : 0;
  if (length == 0 || at + length > text.size()) return 0;
  for (size_t i = 1; i < length; ++i)
    if ((byte(at + i) & 0xc0) != 0x80) return 0;
  return length;
}

}  // namespace

void validate_trigger(const std::string& trigger, const std::string& origin) {
  const auto refuse = [&](const char* why) {
    throw Error(fmt::format("{}: the trigger '{}' {}", origin, trigger, why));
  };
  if (trigger.empty()) refuse("is empty");
  if (trigger.size() > 100) refuse("is longer than 100 bytes");
  for (size_t at = 0; at < trigger.size();) {
    const size_t length = utf8_sequence_length(trigger, at);
    if (length == 0) refuse("is not valid UTF-8");
    const unsigned char c = static_cast<unsigned char>(trigger[at]);
    if (length == 1 && (c <= 0x20 || c == 0x7f)) refuse("must be one word (no spaces or control characters)");
    at += length;
  }
  if (trigger.find("<|startoftext|>") != std::string::npos || trigger.find("<|endoftext|>") != std::string::npos)
    refuse("contains one of CLIP's special tokens");
}

void insert_embedding(ModelBundle& bundle, const std::string& token, const at::Tensor& vectors, const std::string& origin,
                      bool warn_on_collision) {
  validate_trigger(token, origin);
  const auto& table = bundle.text_encoder->text_model->embeddings->token_embedding->weight;
  if (vectors.dim() != 2 || vectors.size(1) != table.size(1))
    throw Error(fmt::format("{}: its embedding is {} wide but the text encoder's is {}", origin, vectors.size(-1),
                            table.size(1)));
  if (warn_on_collision &&
      (bundle.tokenizer.is_vocabulary_token(token) || bundle.tokenizer.is_vocabulary_token(token + "</w>")))
    spdlog::warn("{}: the trigger '{}' is also a word of the vocabulary; in prompts it now means the embedding", origin,
                 token);
  std::vector<std::string> names;
  for (int64_t i = 0; i < vectors.size(0); ++i) names.push_back(i == 0 ? token : fmt::format("{}_{}", token, i));
  for (const auto& name : names)
    if (bundle.tokenizer.is_added_token(name))
      throw Error(fmt::format("{}: the token '{}' is already taken by another concept or embedding (give this one "
                              "another trigger)",
                              origin, name));
  std::string expansion;
  std::vector<int64_t> ids;
  for (const auto& name : names) {
    ids.push_back(bundle.tokenizer.add_token(name));
    expansion += (expansion.empty() ? "" : " ") + name;
  }
  bundle.text_encoder->resize_token_embeddings(bundle.tokenizer.vocab_size());
  at::NoGradGuard no_grad;
  auto& grown = bundle.text_encoder->text_model->embeddings->token_embedding->weight;
  for (size_t i = 0; i < ids.size(); ++i) grown[ids[i]].copy_(vectors[i].to(grown.device(), grown.scalar_type()));
  if (vectors.size(0) > 1) bundle.prompt_expansions[token] = expansion;
}

LoraRequest parse_lora_request(const std::string& text) {
  LoraRequest request;
  request.path = text;
  const size_t colon = text.rfind(':');
  if (colon != std::string::npos && colon + 1 < text.size()) {
    try {
      size_t used = 0;
      const double scale = std::stod(text.substr(colon + 1), &used);
      if (used == text.size() - colon - 1) {
        if (!std::isfinite(scale)) throw Error(fmt::format("--lora {}: the scale must be a finite number", text));
        request.path = text.substr(0, colon);
        request.scale = scale;
      }
    } catch (const std::logic_error&) {
      // not a scale (std::invalid_argument, std::out_of_range): the colon belongs to the path
    }
  }
  return request;
}

EmbeddingRequest parse_embedding_request(const std::string& text) {
  const ConceptRequest parsed = parse_concept_request(text);
  return {parsed.path, parsed.trigger};
}

std::map<std::string, AdaptableLayer*> adaptable_modules(ModelBundle& bundle) {
  auto modules = named_adaptable_layers(*bundle.unet, "unet");
  modules.merge(named_adaptable_layers(*bundle.text_encoder, "text_encoder"));
  return modules;
}

std::vector<std::shared_ptr<LoraNetwork>> apply_loras(ModelBundle& bundle, const std::vector<LoraRequest>& requests) {
  std::vector<std::shared_ptr<LoraNetwork>> networks;
  if (requests.empty()) return networks;
  const auto modules = adaptable_modules(bundle);
  std::vector<std::string> paths;
  for (const auto& [path, layer] : modules) paths.push_back(path);
  for (const auto& request : requests) {
    LoraLayout layout;
    const LoraWeightMap weights = read_lora_file(SafetensorsFile::open(request.path), paths, &layout);
    auto network = LoraNetwork::from_weights(request.path, weights, modules,
                                             {bundle.unet.ptr(), bundle.text_encoder.ptr()}, request.path);
    network->set_scale(request.scale);
    spdlog::info("{}: {} LoRA ({} modules, rank {}), scale {}", request.path, lora_layout_name(layout), weights.size(),
                 network->rank(), request.scale);
    networks.push_back(network);
    // Embeddings bundled in the file: bundle_emb.<name>.string_to_param.* = [n, D].
    const SafetensorsFile file = SafetensorsFile::open(request.path);
    for (const auto& key : file.keys())
      if (key.rfind("bundle_emb.", 0) == 0 && key.find(".string_to_param.") != std::string::npos) {
        const std::string name = key.substr(11, key.find(".string_to_param.") - 11);
        at::Tensor vectors = file.tensor(key).to(at::kFloat);
        insert_embedding(bundle, name, vectors.dim() == 1 ? vectors.unsqueeze(0) : vectors, request.path);
        spdlog::info("{}: bundled embedding '{}'", request.path, name);
      }
  }
  return networks;
}

std::vector<std::string> apply_embeddings(ModelBundle& bundle, const std::vector<EmbeddingRequest>& requests) {
  std::vector<std::string> triggers;
  for (const auto& request : requests) {
    const TextualInversion embedding = read_embedding_file(SafetensorsFile::open(request.path));
    std::string trigger = request.trigger;
    if (trigger.empty()) trigger = embedding.token.empty() ? fs::path(request.path).stem().string() : embedding.token;
    insert_embedding(bundle, trigger, embedding.vectors, request.path);
    triggers.push_back(trigger);
  }
  return triggers;
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
