#include "singleinsert/models/clip_config.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"

namespace singleinsert {
namespace {

ClipEncoderConfig encoder_from_json(const JsonConfig& json, const ClipEncoderConfig& defaults) {
  ClipEncoderConfig c;
  c.hidden_size = json.get_int("hidden_size", static_cast<int>(defaults.hidden_size));
  c.intermediate_size = json.get_int("intermediate_size", static_cast<int>(defaults.intermediate_size));
  c.num_hidden_layers = json.get_int("num_hidden_layers", static_cast<int>(defaults.num_hidden_layers));
  c.num_attention_heads = json.get_int("num_attention_heads", static_cast<int>(defaults.num_attention_heads));
  c.hidden_act = json.get_string("hidden_act", defaults.hidden_act);
  c.layer_norm_eps = json.get_double("layer_norm_eps", defaults.layer_norm_eps);
  return c;
}

void validate_encoder(const ClipEncoderConfig& c, const std::string& what) {
  if (c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0)
    throw Error(fmt::format("{}: hidden_size {} is not divisible by num_attention_heads {}", what, c.hidden_size,
                            c.num_attention_heads));
  if (c.num_hidden_layers <= 0 || c.intermediate_size <= 0)
    throw Error(fmt::format("{}: num_hidden_layers {} and intermediate_size {} must be positive", what,
                            c.num_hidden_layers, c.intermediate_size));
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu")
    throw Error(fmt::format("{}: unsupported hidden_act '{}'", what, c.hidden_act));
}

}  // namespace

ClipTextConfig ClipTextConfig::from_json(const JsonConfig& json) {
  ClipTextConfig c;
  // CLIPTextConfig's class defaults are the 512-wide base model; SD folders always state theirs.
  ClipEncoderConfig defaults;
  defaults.hidden_size = 512;
  defaults.intermediate_size = 2048;
  defaults.num_attention_heads = 8;
  c.encoder = encoder_from_json(json, defaults);
  c.vocab_size = json.get_int("vocab_size", 49408);
  c.max_position_embeddings = json.get_int("max_position_embeddings", 77);
  c.eos_token_id = json.get_int("eos_token_id", 2);
  c.validate();
  return c;
}

std::string ClipTextConfig::to_json() const {
  nlohmann::json j = {
      {"architectures", {"CLIPTextModel"}},
      {"model_type", "clip_text_model"},
      {"hidden_size", encoder.hidden_size},
      {"intermediate_size", encoder.intermediate_size},
      {"num_hidden_layers", encoder.num_hidden_layers},
      {"num_attention_heads", encoder.num_attention_heads},
      {"hidden_act", encoder.hidden_act},
      {"layer_norm_eps", encoder.layer_norm_eps},
      {"vocab_size", vocab_size},
      {"max_position_embeddings", max_position_embeddings},
      {"eos_token_id", eos_token_id},
      {"bos_token_id", 0},
      {"pad_token_id", 1},
      {"projection_dim", encoder.hidden_size},
      {"torch_dtype", "float32"},
  };
  return j.dump(2);
}

ClipTextConfig ClipTextConfig::tiny() {
  ClipTextConfig c;
  c.encoder.hidden_size = 32;
  c.encoder.intermediate_size = 37;
  c.encoder.num_hidden_layers = 2;
  c.encoder.num_attention_heads = 4;
  c.vocab_size = 1000;
  return c;
}

ClipTextConfig ClipTextConfig::sd15() {
  ClipTextConfig c;  // the struct's defaults are ViT-L/14's text tower
  return c;
}

void ClipTextConfig::validate() const {
  validate_encoder(encoder, "text encoder config");
  if (vocab_size <= 0 || max_position_embeddings <= 0)
    throw Error(fmt::format("text encoder config: vocab_size {} and max_position_embeddings {} must be positive",
                            vocab_size, max_position_embeddings));
}

bool ClipTextConfig::operator==(const ClipTextConfig& o) const {
  return encoder.hidden_size == o.encoder.hidden_size && encoder.intermediate_size == o.encoder.intermediate_size &&
         encoder.num_hidden_layers == o.encoder.num_hidden_layers &&
         encoder.num_attention_heads == o.encoder.num_attention_heads && encoder.hidden_act == o.encoder.hidden_act &&
         encoder.layer_norm_eps == o.encoder.layer_norm_eps && vocab_size == o.vocab_size &&
         max_position_embeddings == o.max_position_embeddings && eos_token_id == o.eos_token_id;
}

ClipVisionConfig ClipVisionConfig::from_json(const JsonConfig& json) {
  ClipVisionConfig c;
  c.encoder = encoder_from_json(json, c.encoder);
  c.image_size = json.get_int("image_size", 224);
  c.patch_size = json.get_int("patch_size", 32);
  c.num_channels = json.get_int("num_channels", 3);
  c.projection_dim = json.get_int("projection_dim", 512);
  c.validate();
  return c;
}

void ClipVisionConfig::validate() const {
  validate_encoder(encoder, "vision encoder config");
  if (patch_size <= 0 || image_size % patch_size != 0)
    throw Error(fmt::format("vision encoder config: image_size {} is not a multiple of patch_size {}", image_size,
                            patch_size));
}

}  // namespace singleinsert
