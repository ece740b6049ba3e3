#pragma once
// The SingleInsert paper's figures for a set of generations against the concept's source:
//   CLIP-I-f, CLIP-I-b  cosine similarity of CLIP image embeddings, generation vs source, on the
//                       foreground and on the background
//   DINO-f, DINO-b      the same with DINO ViT class-token features
//   CLIP-T              cosine similarity of the generation's CLIP image embedding and the prompt's
//                       text embedding (the prompt without its trigger word)
//   DIV                 mean LPIPS distance between the generations of one prompt, averaged over
//                       prompts with two or more
//   ESR                 share of generations from a listed editing prompt whose every edit the
//                       CLIP judge sees (editing_prompts.h)
// Regions: the foreground image keeps the pixels inside the mask and fills the rest with mid grey
// (127, 127, 127); the background image the other way round. Both keep the whole frame, so the
// metric model sees each region where and as large as it is; grey is the fill because it is
// close to zero after every model's normalisation.
#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "singleinsert/metrics/clip_model.h"
#include "singleinsert/metrics/editing_prompts.h"
#include "singleinsert/metrics/lpips.h"
#include "singleinsert/metrics/vit_model.h"
#include "singleinsert/models/clip_tokenizer.h"

namespace singleinsert {

inline constexpr uint8_t kRegionFill = 127;

struct MetricModels {
  ClipModel* clip = nullptr;                 // required
  const ClipTokenizer* tokenizer = nullptr;  // CLIP's; required
  LoadedVit* dino = nullptr;                 // DINO-f/b are left out without it
  Lpips* lpips = nullptr;                    // DIV is left out without it
};

struct MetricImage {
  std::string name;
  std::string prompt;  // what it was drawn from (empty for the source)
  at::Tensor pixels;   // uint8 [H, W, 3]
  at::Tensor mask;     // uint8 [H, W], > 127 inside the subject; undefined: no foreground found
};

struct EditJudgement {
  std::string name;
  double probability = 0;  // softmax over (present, absent) of CLIP's logits: P(present)
};

struct ImageScores {
  std::string name, prompt;
  std::optional<double> clip_i_f, clip_i_b, dino_f, dino_b;
  double clip_t = 0;
  bool listed = false;  // drawn from an editing-list prompt
  bool edit_success = false;
  std::vector<EditJudgement> edits;
};

struct ConceptScores {
  std::vector<ImageScores> images;
  // "clip_i_f", "clip_i_b", "dino_f", "dino_b", "clip_t": means over the images that have them.
  std::map<std::string, std::optional<double>> means;
  std::optional<double> div;
  int div_prompts = 0;
  std::optional<double> esr;
  int esr_images = 0;
  std::vector<std::string> notes;  // what was left out and why
};

// The ESR judge: CLIP zero-shot between an edit's text and its absence. An edit is shown when
// P(present) = softmax(logit_scale * cosine)[present] > 0.5.
class EditJudge {
 public:
  EditJudge(ClipModel& clip, const ClipTokenizer& tokenizer) : clip_(clip), tokenizer_(tokenizer) {}
  // Unit-length CLIP text features [D] of `text` (cached).
  at::Tensor text_feature(const std::string& text);
  // Unit-length image features [N, D] of uint8 [H, W, 3] images (the model's preprocessing).
  at::Tensor image_features(const std::vector<at::Tensor>& images);
  // P(present) [N] for unit image features [N, D].
  at::Tensor probability(const at::Tensor& image_features, const EditCheck& edit);

 private:
  ClipModel& clip_;
  const ClipTokenizer& tokenizer_;
  std::map<std::string, at::Tensor> texts_;
};

// uint8 [H, W, 3] with the region outside (foreground) or inside (background) `mask` filled.
at::Tensor region_image(const at::Tensor& pixels, const at::Tensor& mask, bool foreground);

// Scores `images` against `source` (its mask required). `editing` may be null (no ESR).
// Images and their masks must be the same size (Error naming the image otherwise).
ConceptScores score_generations(const MetricModels& models, const MetricImage& source,
                                const std::vector<MetricImage>& images, const std::string& trigger,
                                const EditingPromptList* editing);

nlohmann::json to_json(const ConceptScores& scores);
ConceptScores concept_scores_from_json(const nlohmann::json& json);  // Error on a malformed record

}  // namespace singleinsert
