#include "singleinsert/metrics/clip_model.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/metrics/metric_folder.h"

namespace fs = std::filesystem;

namespace singleinsert {

ClipTokenizer load_clip_tokenizer(const std::string& clip_folder, const std::string& requested) {
  if (!requested.empty()) return ClipTokenizer::load(requested);
  for (const fs::path& dir : {fs::path(clip_folder), fs::path(clip_folder) / "tokenizer"})
    if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) return ClipTokenizer::load(dir.string());
  throw Error(clip_folder + ": no vocab.json and merges.txt for CLIP's tokenizer (pass --clip-tokenizer DIR)");
}

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
  model.logit_scale_tensor_ = logit_scale.to(at::kFloat).reshape({});
  for (auto* module : std::initializer_list<torch::nn::Module*>{model.text_.get(), model.vision_.get(),
                                                                model.text_projection_.get()}) {
    module->to(dtype);
    module->eval();
  }
  model.processor_ = ImageProcessor::from_folder(folder, ImageProcessor::clip(vision_config.image_size));
  return model;
}

ClipModel ClipModel::create(const ClipTextConfig& text, const ClipVisionConfig& vision, at::Generator& generator) {
  ClipModel model;
  model.text_ = ClipTextModel(text);
  model.vision_ = ClipVisionModel(vision);
  model.text_projection_ = Linear(text.encoder.hidden_size, vision.projection_dim, /*bias=*/false);
  init_parameters(*model.text_, generator);
  init_parameters(*model.text_projection_, generator);
  model.vision_->init_like_openai(generator);
  {
    at::NoGradGuard no_grad;
    model.text_->text_model->embeddings->token_embedding->weight.normal_(0.0, 0.02, generator);
    model.text_->text_model->embeddings->position_embedding->weight.normal_(0.0, 0.01, generator);
  }
  model.logit_scale_tensor_ = at::full({}, std::log(1.0 / 0.07), at::kFloat).set_requires_grad(true);
  model.processor_ = ImageProcessor::clip(vision.image_size);
  return model;
}

void ClipModel::save(const std::string& folder) const {
  const ClipTextConfig& t = text_->config();
  const ClipVisionConfig& v = vision_->config();
  nlohmann::json text_config = nlohmann::json::parse(t.to_json());
  text_config.erase("architectures");
  const nlohmann::json vision_config = {{"model_type", "clip_vision_model"},
                                        {"hidden_size", v.encoder.hidden_size},
                                        {"intermediate_size", v.encoder.intermediate_size},
                                        {"num_hidden_layers", v.encoder.num_hidden_layers},
                                        {"num_attention_heads", v.encoder.num_attention_heads},
                                        {"hidden_act", v.encoder.hidden_act},
                                        {"layer_norm_eps", v.encoder.layer_norm_eps},
                                        {"image_size", v.image_size},
                                        {"patch_size", v.patch_size},
                                        {"num_channels", v.num_channels},
                                        {"projection_dim", v.projection_dim}};
  const nlohmann::json config = {{"architectures", {"CLIPModel"}}, {"model_type", "clip"},
                                 {"projection_dim", v.projection_dim}, {"logit_scale_init_value", 2.6592},
                                 {"text_config", text_config},         {"vision_config", vision_config}};
  const nlohmann::json preprocessor = {
      {"image_processor_type", "CLIPImageProcessor"}, {"do_resize", processor_.shortest_edge > 0},
      {"size", {{"shortest_edge", processor_.shortest_edge}}}, {"do_center_crop", processor_.crop_size > 0},
      {"crop_size", {{"height", processor_.crop_size}, {"width", processor_.crop_size}}},
      {"resample", processor_.bicubic ? 3 : 2}, {"do_rescale", true}, {"rescale_factor", 1.0 / 255.0},
      {"do_normalize", true}, {"image_mean", processor_.mean}, {"image_std", processor_.std},
      {"do_convert_rgb", true}};
  fs::create_directories(folder);
  save_safetensors((fs::path(folder) / "model.safetensors").string(), weights(), {{"format", "pt"}});
  write_file_atomic((fs::path(folder) / "preprocessor_config.json").string(), preprocessor.dump(2) + "\n");
  write_file_atomic((fs::path(folder) / "config.json").string(), config.dump(2) + "\n");
}

NamedTensors ClipModel::weights() const {
  NamedTensors tensors;
  for (const auto& [key, value] : state_dict(*text_)) tensors.emplace_back(key, value.to(at::kFloat).contiguous());
  for (const auto& [key, value] : state_dict(*vision_)) tensors.emplace_back(key, value.to(at::kFloat).contiguous());
  tensors.emplace_back("text_projection.weight", text_projection_->weight.detach().to(at::kFloat).contiguous());
  tensors.emplace_back("logit_scale", logit_scale_tensor_.detach().clone());
  return tensors;
}

void ClipModel::load_weights(const std::map<std::string, at::Tensor>& weights, const std::string& origin) {
  std::map<std::string, at::Tensor> text, vision, projection;
  for (const auto& [key, value] : weights) {
    if (key.rfind("text_model.", 0) == 0) text[key] = value;
    else if (key.rfind("vision_model.", 0) == 0 || key == "visual_projection.weight") vision[key] = value;
    else if (key == "text_projection.weight") projection["weight"] = value;
    else if (key != "logit_scale") throw Error(fmt::format("{}: unexpected tensor '{}' for a CLIPModel", origin, key));
  }
  const auto scale = weights.find("logit_scale");
  if (scale == weights.end() || scale->second.numel() != 1)
    throw Error(fmt::format("{}: missing tensor 'logit_scale'", origin));
  load_state_dict(*text_, text, origin);
  load_state_dict(*vision_, vision, origin);
  load_state_dict(*text_projection_, projection, origin + " (text_projection)");
  at::NoGradGuard no_grad;
  logit_scale_tensor_.copy_(scale->second.reshape({}));
}

std::vector<at::Tensor> ClipModel::parameters() const {
  std::vector<at::Tensor> out = text_->parameters();
  for (const at::Tensor& p : vision_->parameters()) out.push_back(p);
  out.push_back(text_projection_->weight);
  out.push_back(logit_scale_tensor_);
  return out;
}

void ClipModel::train(bool on) {
  text_->train(on);
  vision_->train(on);
  text_projection_->train(on);
}

at::Tensor ClipModel::text_features(const at::Tensor& input_ids) {
  return text_projection_->forward(text_->forward(input_ids).pooler_output);
}

at::Tensor ClipModel::image_features(const at::Tensor& pixels) {
  const auto dtype = vision_->visual_projection->weight.scalar_type();
  return vision_->forward(pixels.to(dtype)).image_embeds;
}

at::Tensor ClipModel::logits_per_image(const at::Tensor& image_features, const at::Tensor& text_features) const {
  const at::Tensor images = image_features / image_features.norm(2, -1, true);
  const at::Tensor texts = text_features / text_features.norm(2, -1, true);
  return at::matmul(images, texts.t()) * logit_scale_tensor_.exp();
}

}  // namespace singleinsert
