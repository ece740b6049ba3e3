#include "singleinsert/metrics/clip_model.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/metrics/metric_folder.h"

namespace fs = std::filesystem;

namespace singleinsert {

ClipModel ClipModel::load(const std::string& folder, at::ScalarType dtype) {
  const JsonConfig config = read_metric_config(folder, "CLIP", {"clip"});
  const nlohmann::json& j = config.json();
  if (!j.contains("text_config") || !j.contains("vision_config"))
    throw Error(config.origin() + ": a CLIPModel config needs text_config and vision_config");
  const JsonConfig text_json = JsonConfig::parse(j.at("text_config").dump(), config.origin() + " text_config");
  const JsonConfig vision_json = JsonConfig::parse(j.at("vision_config").dump(), config.origin() + " vision_config");
  const ClipTextConfig text_config = ClipTextConfig::from_json(text_json);
  ClipVisionConfig vision_config = ClipVisionConfig::from_json(vision_json);
  vision_config.projection_dim = config.get_int("projection_dim", 512);

  ClipModel model;
  model.text_ = ClipTextModel(text_config);
  model.vision_ = ClipVisionModel(vision_config);
  model.text_projection_ = Linear(text_config.encoder.hidden_size, vision_config.projection_dim, /*bias=*/false);

  // One file holds the three parts; each is loaded strictly from its share of the keys.
  const SafetensorsFile file = SafetensorsFile::open(metric_weights_file(folder, "CLIP"));
  std::map<std::string, at::Tensor> text, vision, projection;
  at::Tensor logit_scale;
  for (const std::string& key : file.keys()) {
    if (key.rfind("text_model.", 0) == 0) {
      text[key] = file.tensor(key);
    } else if (key.rfind("vision_model.", 0) == 0 || key == "visual_projection.weight") {
      vision[key] = file.tensor(key);
    } else if (key == "text_projection.weight") {
      projection["weight"] = file.tensor(key);
    } else if (key == "logit_scale") {
      logit_scale = file.tensor(key);
    } else {
      throw Error(fmt::format("{}: unexpected tensor '{}' for a CLIPModel", file.path(), key));
    }
  }
  if (!logit_scale.defined() || logit_scale.numel() != 1)
    throw Error(fmt::format("{}: missing tensor 'logit_scale'", file.path()));
  LoadOptions options;
  options.tolerated_extra_keys = {"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"};
  load_state_dict(*model.text_, text, file.path(), options);
  load_state_dict(*model.vision_, vision, file.path(), options);
  if (projection.empty()) throw Error(fmt::format("{}: missing tensor 'text_projection.weight'", file.path()));
  load_state_dict(*model.text_projection_, projection, file.path() + " (text_projection)");
  model.logit_scale_ = logit_scale.to(at::kDouble).item<double>();
  for (auto* module : std::initializer_list<torch::nn::Module*>{model.text_.get(), model.vision_.get(),
                                                                model.text_projection_.get()}) {
    module->to(dtype);
    module->eval();
  }
  model.processor_ = ImageProcessor::from_folder(folder, ImageProcessor::clip(vision_config.image_size));
  return model;
}

at::Tensor ClipModel::text_features(const at::Tensor& input_ids) {
  at::NoGradGuard no_grad;
  return text_projection_->forward(text_->forward(input_ids).pooler_output);
}

at::Tensor ClipModel::image_features(const at::Tensor& pixels) {
  at::NoGradGuard no_grad;
  const auto dtype = vision_->visual_projection->weight.scalar_type();
  return vision_->forward(pixels.to(dtype)).image_embeds;
}

at::Tensor ClipModel::logits_per_image(const at::Tensor& image_features, const at::Tensor& text_features) const {
  const at::Tensor images = image_features / image_features.norm(2, -1, true);
  const at::Tensor texts = text_features / text_features.norm(2, -1, true);
  return at::matmul(images, texts.t()) * std::exp(logit_scale_);
}

}  // namespace singleinsert
