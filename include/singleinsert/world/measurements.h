#pragma once
// Measurements that draw with a model and read the images with the detector: the floors and
// ceilings a concept is placed between, and how near a named person's face comes to its own.
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "singleinsert/core/progress.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/world/evaluation.h"

namespace singleinsert::world {

struct DrawSettings {
  int steps = 25;
  double guidance = 7.5;
  int size = 64;
};

// `per_prompt` images for each prompt from the same starting noise (seed 0) for every prompt and
// every call, so that rows differ only in their words; uint8 [P * per_prompt, S, S, 3].
at::Tensor draw(ModelBundle& bundle, const std::vector<std::string>& prompts, int per_prompt, const DrawSettings& settings);

// Images passed through the model's VAE (encoded to the posterior mean, decoded): what the
// model's latents can carry of them at all; uint8 [N, S, S, 3] in and out.
at::Tensor through_model_vae(ModelBundle& bundle, const at::Tensor& pixels);

std::vector<std::string> editing_prompts(const Scene& source, const std::vector<EditList>& edits,
                                         const std::string& subject_words);

nlohmann::json to_json(const ScoredRows& rows);

// What the overfit ceiling's UNet learns of the source (a floors file made otherwise is stale).
constexpr const char* kOverfitLatents = "posterior mean";

struct FloorSettings {
  DrawSettings draw;
  int seeds = 3;           // generations per prompt
  int overfit_steps = 400;  // 0: no overfit ceiling
  double overfit_lr = 2e-4;
  double overfit_unconditional = 0.5;  // share of each overfit batch on the empty prompt
};

// The floors and ceilings of one source on one model, which do not depend on the concept:
//   text             the editing prompts with the named attributes in words ("face with tan skin, ...")
//   class_word       the same with the class word alone
//   text_novel_view  the head turns in words (faces)
//   vae_ceiling      the edited renders with the source's identity, through the model's VAE
//   overfit_ceiling  the source caption drawn by a copy of the model (from `fresh_model`) whose
//                    UNet was fine-tuned on the source image until it redraws it (its caption
//                    and, on a share of each batch, the empty prompt)
//   scale            the identity distances that closeness 1 and 0 stand for
nlohmann::json measure_floors(ModelBundle& bundle, const std::function<std::shared_ptr<ModelBundle>()>& fresh_model,
                              SourceReference& reference, const FloorSettings& settings,
                              const ProgressCallback& progress = {});

// A concept's closeness on the scale from the text floor (0) to the ceiling (1): the overfit
// ceiling, or the VAE's when the overfit one was not measured. {"ceiling": name, part: value...};
// a part whose ceiling is not at least 0.1 above its floor has null (no scale to put it on).
nlohmann::json floor_to_ceiling(const IdentityParts& closeness, const nlohmann::json& floors);

// Named persons drawn by name alone ("a photo of a kato face on a blue background"), each scored
// against that person's face on the identity scale; the mean over `persons` of them.
IdentityParts person_closeness(ModelBundle& bundle, WorldDetector& detector, int persons, const DrawSettings& settings);

}  // namespace singleinsert::world
