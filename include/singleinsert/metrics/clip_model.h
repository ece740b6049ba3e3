#pragma once
// transformers' CLIPModel, as metric models ship it (openai/clip-vit-base-patch32, ...): the text
// and vision towers, their projections into one embedding space and logit_scale. One folder:
// config.json (text_config, vision_config, projection_dim) and model.safetensors, keyed
// text_model.*, vision_model.*, text_projection.weight, visual_projection.weight, logit_scale.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "singleinsert/core/safetensors.h"

#include "singleinsert/metrics/image_processing.h"
#include "singleinsert/models/clip_tokenizer.h"
#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/clip_vision_model.h"

namespace singleinsert {

// CLIP's tokenizer: `requested` when given, else the vocab.json and merges.txt in the CLIPModel
// folder (or its tokenizer/); a one-line Error otherwise.
ClipTokenizer load_clip_tokenizer(const std::string& clip_folder, const std::string& requested = {});

class ClipModel {
 public:
  // Reads `folder` (a transformers CLIPModel folder; preprocessor_config.json is optional) into
  // `dtype`. Throws Error naming the folder for another kind of model or a missing tensor.
  static ClipModel load(const std::string& folder, at::ScalarType dtype = at::kFloat);
  // A fresh model to train (float32): PyTorch's default initialisation, CLIP's N(0, 0.02) token
  // and N(0, 0.01) position embeddings, OpenAI's vision-tower initialisation, logit_scale ln(1/0.07).
  static ClipModel create(const ClipTextConfig& text, const ClipVisionConfig& vision, at::Generator& generator);
  // config.json (transformers' CLIPConfig), model.safetensors and preprocessor_config.json:
  // a folder that load() and transformers' CLIPModel.from_pretrained read.
  void save(const std::string& folder) const;

  // Differentiable (callers not training wrap them in a NoGradGuard).
  at::Tensor text_features(const at::Tensor& input_ids);  // [B, L] int64 -> [B, projection_dim]
  at::Tensor image_features(const at::Tensor& pixels);    // [B, 3, S, S] normalised -> [B, projection_dim]
  std::vector<at::Tensor> parameters() const;  // every weight, logit_scale last
  // The weights as save() writes them, and back (strict: every key, every shape).
  NamedTensors weights() const;
  void load_weights(const std::map<std::string, at::Tensor>& weights, const std::string& origin);
  at::Tensor logit_scale_parameter() const { return logit_scale_tensor_; }
  void train(bool on);
  // CLIPModel's logits_per_image: logit_scale.exp() * cosine, [images, texts].
  at::Tensor logits_per_image(const at::Tensor& image_features, const at::Tensor& text_features) const;

  const ImageProcessor& processor() const { return processor_; }
  const ClipTextConfig& text_config() const { return text_->config(); }
  const ClipVisionConfig& vision_config() const { return vision_->config(); }
  double logit_scale() const { return logit_scale_tensor_.item<double>(); }

 private:
  ClipModel() = default;
  ClipTextModel text_{nullptr};
  ClipVisionModel vision_{nullptr};  // its visual_projection is CLIPModel's
  Linear text_projection_{nullptr};
  at::Tensor logit_scale_tensor_;  // [] float32
  ImageProcessor processor_;
};

}  // namespace singleinsert
