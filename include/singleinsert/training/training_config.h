#pragma once
// Every setting of a SingleInsert training run. Presets (configs/*.json) and concept.json's
// "training" record use the same keys; from_json applies a partial JSON on top of a config.
#include <cstdint>
#include <string>

#include "singleinsert/models/clip_config.h"
#include "singleinsert/training/losses.h"

namespace singleinsert {

struct StageConfig {
  int steps = 0;
  int batch = 0;
  double lr = 0;
};

struct TrainingConfig {
  int resolution = 512;
  StageConfig stage1{50, 16, 1e-4};
  StageConfig stage2{100, 4, 5e-5};
  double bg_weight = 1.0;  // gamma
  double sm_weight = 1.0;  // eta
  SmReference sm_reference = SmReference::kFrozen;
  // Beyond Inserting's face-wise attention loss as an extra term (training/attention_loss.h).
  double attn_weight = 0;
  std::string attn_layers = "bottom";
  std::string attn_reference = "person";
  // > 0: the encoder's embedding is scaled down to at most this L2 norm, in training and in the
  // concept (0: unbounded, as the paper and the authors' code leave it).
  double embedding_max_norm = 0;
  int lora_rank = 4;
  double lora_alpha = 4.0;  // alpha = rank: the update is up(down(x)) unscaled, as train.py trains it
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8, weight_decay = 1e-2;
  double max_grad_norm = 1.0;
  uint64_t seed = 0;
  int checkpoint_every = 10;  // steps; 0 = only when interrupted
  // The image encoder: CLIP's ViT-B/32 (its projection width follows the text encoder).
  ClipVisionConfig encoder = vit_b32();
  std::string encoder_normalization = "half";  // "half": [-1, 1] like train.py; "clip": CLIP's mean/std

  static ClipVisionConfig vit_b32();
  void apply_json(const std::string& json_text, const std::string& origin);
  std::string to_json() const;
  void validate() const;
};

// A named preset compiled in from configs/ ("paper", "authors-code") or a JSON file path.
std::string preset_json(const std::string& name_or_path);
std::string sm_reference_name(SmReference reference);
SmReference parse_sm_reference(const std::string& name);

}  // namespace singleinsert
