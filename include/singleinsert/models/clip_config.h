#pragma once
// Configurations of CLIP's transformer towers, read from transformers' config.json with the
// SD v1.5 text encoder (ViT-L/14) and ViT-B/32 vision tower as defaults.
#include <cstdint>
#include <string>

namespace singleinsert {

class JsonConfig;

struct ClipEncoderConfig {
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  std::string hidden_act = "quick_gelu";  // or "gelu"
  double layer_norm_eps = 1e-5;
};

struct ClipTextConfig {
  ClipEncoderConfig encoder;
  int64_t vocab_size = 49408;
  int64_t max_position_embeddings = 77;
  // eos_token_id == 2 is transformers' legacy marker for "pool at the highest id" (SD v1.x).
  int64_t eos_token_id = 2;

  static ClipTextConfig from_json(const JsonConfig& json);
  std::string to_json() const;  // transformers' config.json
  static ClipTextConfig tiny();  // the golden clip_text_tiny architecture
  static ClipTextConfig sd15();  // CLIP ViT-L/14's text tower, as SD v1.x uses it
  void validate() const;
  bool operator==(const ClipTextConfig&) const;
};

struct ClipVisionConfig {
  ClipEncoderConfig encoder;
  int64_t image_size = 224;
  int64_t patch_size = 32;
  int64_t num_channels = 3;
  int64_t projection_dim = 512;

  ClipVisionConfig() { encoder.intermediate_size = 3072; }
  static ClipVisionConfig from_json(const JsonConfig& json);
  void validate() const;
  int64_t num_positions() const { return (image_size / patch_size) * (image_size / patch_size) + 1; }
};

}  // namespace singleinsert
