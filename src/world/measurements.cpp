#include "singleinsert/world/measurements.h"

#include <ATen/ATen.h>

#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/pipeline/text_to_image.h"
#include "singleinsert/training/overfit.h"
#include "singleinsert/world/render.h"

namespace singleinsert::world {
namespace {

// uint8 [..., S, S, 3] -> float [..., 3, S, S] in [-1, 1]
at::Tensor to_model_input(const at::Tensor& pixels) {
  return pixels.movedim(-1, -3).to(at::kFloat) / 127.5 - 1.0;
}

at::Tensor to_pixels(const at::Tensor& images) {  // float [N, 3, S, S] in [-1, 1] -> uint8 [N, S, S, 3]
  return ((images.clamp(-1, 1) + 1.0) * 127.5).round().to(at::kByte).permute({0, 2, 3, 1}).contiguous();
}

}  // namespace

at::Tensor draw(ModelBundle& bundle, const std::vector<std::string>& prompts, int per_prompt, const DrawSettings& settings) {
  std::vector<at::Tensor> pixels;
  for (const std::string& prompt : prompts) {
    GenerateOptions options;
    options.prompts = {prompt};
    options.images_per_prompt = per_prompt;
    options.steps = settings.steps;
    options.guidance_scale = settings.guidance;
    options.width = options.height = settings.size;
    pixels.push_back(generate(bundle, options).pixels);
  }
  return at::cat(pixels);
}

at::Tensor through_model_vae(ModelBundle& bundle, const at::Tensor& pixels) {
  at::NoGradGuard no_grad;
  const auto dtype = bundle.vae->encoder->conv_in->weight.scalar_type();
  const at::Tensor x = to_model_input(pixels).to(bundle.execution.device, dtype);  // [N, 3, S, S]
  return to_pixels(bundle.vae->decode(bundle.vae->encode(x).mean).to(at::kFloat).cpu());
}

std::vector<std::string> editing_prompts(const Scene& source, const std::vector<EditList>& edits,
                                         const std::string& subject_words) {
  std::vector<std::string> prompts;
  for (const auto& edit : edits) prompts.push_back(editing_prompt(source, edit, subject_words));
  return prompts;
}

nlohmann::json to_json(const ScoredRows& rows) {
  nlohmann::json out = {{"success", rows.success},
                        {"background_leakage", rows.background_leakage},
                        {"identity_distance", to_json(rows.distance)},
                        {"closeness", to_json(rows.closeness)},
                        {"generations", rows.generations}};
  if (!rows.named_kept.empty()) out["named_attributes_kept"] = rows.named_kept;
  return out;
}

nlohmann::json measure_floors(ModelBundle& bundle, const std::function<std::shared_ptr<ModelBundle>()>& fresh_model,
                              SourceReference& reference, const FloorSettings& settings,
                              const ProgressCallback& progress) {
  const Scene& source = reference.source();
  const bool cup = source.subject == Subject::kCup;
  const std::vector<EditList> edits = editing_edits(source);
  const std::string words = cup ? kObjectColours[source.cup_identity.colour] + " cup" : identity_words(source.face);
  auto row = [&](const std::vector<EditList>& row_edits, const std::string& subject) {
    return to_json(reference.score(row_edits, draw(bundle, editing_prompts(source, row_edits, subject), settings.seeds,
                                                   settings.draw)));
  };
  nlohmann::json floors;
  floors["text"] = row(edits, words);
  floors["text"]["words"] = words;
  floors["class_word"] = row(edits, cup ? "cup" : "face");
  if (!cup) floors["text_novel_view"] = row(novel_view_edits(), words);

  {  // VAE ceiling: the edited scenes with the source's identity, encoded and decoded.
    std::vector<at::Tensor> renders;
    for (const auto& edit : edits) renders.push_back(render(edited_scene(source, edit), settings.draw.size).image);
    floors["vae_ceiling"] = to_json(reference.score(edits, through_model_vae(bundle, at::stack(renders))));
  }
  if (settings.overfit_steps > 0) {  // a fresh copy of the model whose UNet learns the source image and caption
    std::shared_ptr<ModelBundle> overfit = fresh_model();
    const std::string caption = world::caption(source);
    OverfitOptions options;
    options.steps = settings.overfit_steps;
    options.lr = settings.overfit_lr;
    options.unconditional_share = settings.overfit_unconditional;
    const OverfitResult result = overfit_unet(base_model(*overfit), to_model_input(render(source, settings.draw.size).image).unsqueeze(0),
                                              tokenize_prompts(overfit->tokenizer, {caption}),
                                              tokenize_prompts(overfit->tokenizer, {""}), options, progress);
    nlohmann::json ceiling = to_json(reference.score({{}}, draw(*overfit, {caption}, 2 * settings.seeds, settings.draw)));
    ceiling["caption"] = caption;
    ceiling["steps"] = options.steps;
    ceiling["batch"] = options.batch;
    ceiling["lr"] = options.lr;
    ceiling["unconditional_share"] = options.unconditional_share;
    ceiling["latents"] = kOverfitLatents;
    ceiling["loss_first"] = result.loss_first;
    ceiling["loss_last"] = result.loss_last;
    ceiling["seconds"] = result.seconds;
    floors["overfit_ceiling"] = ceiling;
  }
  const IdentityScale& scale = reference.scale_for(edits);
  floors["scale"] = {{"same_identity", to_json(scale.same)}, {"other_identities", to_json(scale.other)}};
  return floors;
}

constexpr double kMinimumFloorToCeiling = 0.1;

nlohmann::json floor_to_ceiling(const IdentityParts& closeness, const nlohmann::json& floors) {
  const std::string ceiling = floors.contains("overfit_ceiling") ? "overfit_ceiling" : "vae_ceiling";
  nlohmann::json out = {{"ceiling", ceiling}};
  const nlohmann::json &bottom = floors.at("text").at("closeness"), &top = floors.at(ceiling).at("closeness");
  for (const auto& [part, value] : {std::pair{"whole", closeness.whole}, std::pair{"named", closeness.named},
                                    std::pair{"hidden", closeness.hidden}}) {
    const double f = bottom.at(part), t = top.at(part);
    // A ceiling barely above the floor makes the scale meaningless (a 0.01 gap turns 0.1 into 10).
    out[part] = t - f >= kMinimumFloorToCeiling ? nlohmann::json((value - f) / (t - f)) : nlohmann::json();
  }
  return out;
}

IdentityParts person_closeness(ModelBundle& bundle, WorldDetector& detector, int persons, const DrawSettings& settings) {
  IdentityParts mean;
  for (int p = 0; p < persons; ++p) {
    Scene scene = source_scene(person_identity(p), p % static_cast<int>(kBackgroundColours.size()));
    scene.person = p;
    SourceReference reference(detector, scene, 3);
    CaptionParts parts;
    parts.identity = false;
    const IdentityParts c = reference.score({{}}, draw(bundle, {caption(scene, parts)}, 1, settings)).closeness;
    mean.whole += c.whole / persons;
    mean.named += c.named / persons;
    mean.hidden += c.hidden / persons;
  }
  return mean;
}

}  // namespace singleinsert::world
