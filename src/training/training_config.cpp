#include "singleinsert/training/training_config.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/training/attention_loss.h"
#include "singleinsert/training/presets.h"

namespace singleinsert {
namespace {

template <typename T>
void read(const nlohmann::json& json, const char* key, T& target, const std::string& origin) {
  if (!json.contains(key) || json[key].is_null()) return;
  try {
    target = json[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(fmt::format("{}: '{}' has the wrong type ({})", origin, key, json[key].dump()));
  }
}

void read_stage(const nlohmann::json& json, const char* key, StageConfig& stage, const std::string& origin) {
  if (!json.contains(key)) return;
  if (!json[key].is_object()) throw Error(fmt::format("{}: '{}' must be an object", origin, key));
  read(json[key], "steps", stage.steps, origin);
  read(json[key], "batch", stage.batch, origin);
  read(json[key], "lr", stage.lr, origin);
}

}  // namespace

ClipVisionConfig TrainingConfig::vit_b32() {
  ClipVisionConfig c;  // the struct's defaults are ViT-B/32's vision tower
  c.projection_dim = 768;  // into the text encoder's width, where the * embedding lives
  return c;
}

std::string sm_reference_name(SmReference reference) {
  return reference == SmReference::kFrozen ? "frozen" : "lora-text-encoder";
}

SmReference parse_sm_reference(const std::string& name) {
  if (name == "frozen") return SmReference::kFrozen;
  if (name == "lora-text-encoder") return SmReference::kLoraTextEncoder;
  throw Error(fmt::format("unknown semantic-loss reference '{}' (frozen or lora-text-encoder)", name));
}

void TrainingConfig::apply_json(const std::string& text, const std::string& origin) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: invalid JSON ({})", origin, e.what()));
  }
  if (!json.is_object()) throw Error(fmt::format("{}: expected a JSON object", origin));
  if (json.contains("method") && json["method"] != "singleinsert")
    throw Error(fmt::format("{}: a {} preset (give it with --method {})", origin, json["method"].dump(),
                            json["method"].is_string() ? json["method"].get<std::string>() : "..."));
  static const char* known[] = {"description", "method", "resolution", "stage1", "stage2", "bg_weight", "sm_weight",
                                "sm_reference", "lora_rank", "lora_alpha", "beta1", "beta2", "adam_eps",
                                "weight_decay", "max_grad_norm", "seed", "checkpoint_every", "encoder",
                                "encoder_normalization", "attn_weight", "attn_layers", "attn_reference",
                                "embedding_max_norm"};
  for (const auto& [key, value] : json.items())
    if (std::find(std::begin(known), std::end(known), key) == std::end(known))
      throw Error(fmt::format("{}: unknown training setting '{}'", origin, key));
  read(json, "resolution", resolution, origin);
  read_stage(json, "stage1", stage1, origin);
  read_stage(json, "stage2", stage2, origin);
  read(json, "bg_weight", bg_weight, origin);
  read(json, "sm_weight", sm_weight, origin);
  if (json.contains("sm_reference")) sm_reference = parse_sm_reference(json["sm_reference"].get<std::string>());
  read(json, "lora_rank", lora_rank, origin);
  read(json, "lora_alpha", lora_alpha, origin);
  read(json, "beta1", beta1, origin);
  read(json, "beta2", beta2, origin);
  read(json, "adam_eps", adam_eps, origin);
  read(json, "weight_decay", weight_decay, origin);
  read(json, "max_grad_norm", max_grad_norm, origin);
  read(json, "seed", seed, origin);
  read(json, "checkpoint_every", checkpoint_every, origin);
  read(json, "encoder_normalization", encoder_normalization, origin);
  read(json, "attn_weight", attn_weight, origin);
  read(json, "attn_layers", attn_layers, origin);
  read(json, "attn_reference", attn_reference, origin);
  read(json, "embedding_max_norm", embedding_max_norm, origin);
  if (json.contains("encoder")) {
    const auto& e = json["encoder"];
    read(e, "image_size", encoder.image_size, origin);
    read(e, "patch_size", encoder.patch_size, origin);
    read(e, "hidden_size", encoder.encoder.hidden_size, origin);
    read(e, "intermediate_size", encoder.encoder.intermediate_size, origin);
    read(e, "num_hidden_layers", encoder.encoder.num_hidden_layers, origin);
    read(e, "num_attention_heads", encoder.encoder.num_attention_heads, origin);
  }
}

std::string TrainingConfig::to_json() const {
  auto stage = [](const StageConfig& s) { return nlohmann::json{{"steps", s.steps}, {"batch", s.batch}, {"lr", s.lr}}; };
  nlohmann::json json = {
      {"resolution", resolution},      {"stage1", stage(stage1)},        {"stage2", stage(stage2)},
      {"bg_weight", bg_weight},        {"sm_weight", sm_weight},         {"sm_reference", sm_reference_name(sm_reference)},
      {"lora_rank", lora_rank},        {"lora_alpha", lora_alpha},       {"beta1", beta1},
      {"beta2", beta2},                {"adam_eps", adam_eps},           {"weight_decay", weight_decay},
      {"max_grad_norm", max_grad_norm}, {"seed", seed},                  {"checkpoint_every", checkpoint_every},
      {"encoder_normalization", encoder_normalization},
      {"encoder",
       {{"image_size", encoder.image_size},
        {"patch_size", encoder.patch_size},
        {"hidden_size", encoder.encoder.hidden_size},
        {"intermediate_size", encoder.encoder.intermediate_size},
        {"num_hidden_layers", encoder.encoder.num_hidden_layers},
        {"num_attention_heads", encoder.encoder.num_attention_heads}}}};
  if (attn_weight > 0) {  // written only when on, so runs without it record what they always did
    json["attn_weight"] = attn_weight;
    json["attn_layers"] = attn_layers;
    json["attn_reference"] = attn_reference;
  }
  if (embedding_max_norm > 0) json["embedding_max_norm"] = embedding_max_norm;
  return json.dump(2);
}

void TrainingConfig::validate() const {
  for (const auto& [name, s] : {std::pair<const char*, StageConfig>{"stage I", stage1}, {"stage II", stage2}})
    if (s.steps < 0 || s.batch < 1 || !(s.lr > 0))
      throw Error(fmt::format("{}: steps {} must be >= 0, batch {} >= 1 and lr {} > 0", name, s.steps, s.batch, s.lr));
  if (resolution < 8) throw Error(fmt::format("--resolution {} is too small", resolution));
  if (lora_rank < 1) throw Error(fmt::format("--lora-rank must be at least 1, got {}", lora_rank));
  if (bg_weight < 0 || sm_weight < 0) throw Error("loss weights must not be negative");
  if (!(embedding_max_norm >= 0 && std::isfinite(embedding_max_norm)))
    throw Error(fmt::format("embedding_max_norm must be 0 (off) or a positive number, got {}", embedding_max_norm));
  if (max_grad_norm <= 0) throw Error("max_grad_norm must be positive");
  if (checkpoint_every < 0) throw Error("--checkpoint-every must not be negative");
  if (encoder_normalization != "half" && encoder_normalization != "clip")
    throw Error(fmt::format("encoder_normalization '{}' is not half or clip", encoder_normalization));
  validate_attention_loss_settings(attn_weight, attn_layers, attn_reference);
  encoder.validate();
}

std::string preset_json(const std::string& name_or_path) {
  // configs/methods/ holds the other methods' presets ("methods/NAME"), not SingleInsert's.
  auto singleinsert_preset = [](const std::string& name) { return name.rfind("methods/", 0) != 0; };
  for (const auto& [name, text] : compiled_presets())
    if (name == name_or_path && singleinsert_preset(name)) return text;
  if (std::filesystem::exists(name_or_path)) return read_file(name_or_path);
  std::string names;
  for (const auto& [name, text] : compiled_presets())
    if (singleinsert_preset(name)) names += (names.empty() ? "" : ", ") + name;
  throw Error(fmt::format("unknown preset '{}' (built in: {}; or give a JSON file)", name_or_path, names));
}

}  // namespace singleinsert
