#include "singleinsert/metrics/concept_metrics.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {
namespace {

constexpr int64_t kBatch = 16;  // images per metric-model call

void check_mask(const MetricImage& image) {
  if (!image.mask.defined()) return;
  if (image.mask.dim() != 2 || image.mask.size(0) != image.pixels.size(0) ||
      image.mask.size(1) != image.pixels.size(1))
    throw Error(fmt::format("{}: the image is {}x{} but its mask is {}", image.name, image.pixels.size(1),
                            image.pixels.size(0),
                            image.mask.dim() == 2 ? fmt::format("{}x{}", image.mask.size(1), image.mask.size(0))
                                                  : shape_string(image.mask.sizes())));
}

// Unit-length features of preprocessed images, computed kBatch at a time.
template <typename Features>
at::Tensor unit_features(const std::vector<at::Tensor>& images, const ImageProcessor& processor, Features&& features) {
  std::vector<at::Tensor> out;
  for (size_t start = 0; start < images.size(); start += kBatch) {
    std::vector<at::Tensor> batch;
    for (size_t i = start; i < std::min(images.size(), start + kBatch); ++i) batch.push_back(processor(images[i]));
    out.push_back(features(at::cat(batch, 0)).to(at::kFloat));
  }
  const at::Tensor all = at::cat(out, 0);
  return all / all.norm(2, -1, true);
}

std::optional<double> mean_of(const std::vector<ImageScores>& rows, std::optional<double> ImageScores::*field) {
  double sum = 0;
  int count = 0;
  for (const ImageScores& row : rows)
    if (row.*field) sum += *(row.*field), ++count;
  if (count == 0) return std::nullopt;
  return sum / count;
}

nlohmann::json optional_json(const std::optional<double>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

std::optional<double> optional_from(const nlohmann::json& object, const char* key) {
  if (!object.contains(key) || object.at(key).is_null()) return std::nullopt;
  return object.at(key).get<double>();
}

}  // namespace

at::Tensor EditJudge::text_feature(const std::string& text) {
  const auto found = texts_.find(text);
  if (found != texts_.end()) return found->second;
  at::NoGradGuard no_grad;
  const at::Tensor ids = at::tensor(tokenizer_.tokenize(text).ids, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);
  at::Tensor feature = clip_.text_features(ids).to(at::kFloat).squeeze(0);
  return texts_.emplace(text, feature / feature.norm()).first->second;
}

at::Tensor EditJudge::image_features(const std::vector<at::Tensor>& images) {
  at::NoGradGuard no_grad;
  return unit_features(images, clip_.processor(), [&](const at::Tensor& x) { return clip_.image_features(x); });
}

at::Tensor EditJudge::probability(const at::Tensor& image_features, const EditCheck& edit) {
  const at::Tensor texts = at::stack({text_feature(edit.present), text_feature(edit.absent)});  // [2, D]
  const at::Tensor logits = at::matmul(image_features, texts.t()) * std::exp(clip_.logit_scale());  // [N, 2]
  return at::softmax(logits, 1).select(1, 0);
}

at::Tensor region_image(const at::Tensor& pixels, const at::Tensor& mask, bool foreground) {
  const at::Tensor inside = (mask > 127).unsqueeze(-1);  // [H, W, 1]
  const at::Tensor fill = at::full_like(pixels, kRegionFill);
  return foreground ? at::where(inside, pixels, fill) : at::where(inside, fill, pixels);
}

ConceptScores score_generations(const MetricModels& models, const MetricImage& source,
                                const std::vector<MetricImage>& images, const std::string& trigger,
                                const EditingPromptList* editing) {
  if (models.clip == nullptr || models.tokenizer == nullptr) throw Error("scoring needs CLIP and its tokenizer");
  at::NoGradGuard no_grad;
  if (!source.mask.defined()) throw Error(source.name + ": the source needs a mask");
  check_mask(source);
  for (const MetricImage& image : images) check_mask(image);
  ConceptScores scores;
  const size_t n = images.size();

  // Image sets: the source's two regions, then each generation whole and (when masked) its regions.
  std::vector<at::Tensor> whole, regions{region_image(source.pixels, source.mask, true),
                                         region_image(source.pixels, source.mask, false)};
  std::vector<int64_t> region_row(n, -1);  // index of image i's foreground in `regions`
  for (size_t i = 0; i < n; ++i) {
    whole.push_back(images[i].pixels);
    if (!images[i].mask.defined()) continue;
    region_row[i] = static_cast<int64_t>(regions.size());
    regions.push_back(region_image(images[i].pixels, images[i].mask, true));
    regions.push_back(region_image(images[i].pixels, images[i].mask, false));
  }
  ClipModel& clip = *models.clip;
  EditJudge judge(clip, *models.tokenizer);
  const at::Tensor clip_whole = judge.image_features(whole);
  const at::Tensor clip_regions = judge.image_features(regions);
  at::Tensor dino_regions;
  if (models.dino) {
    dino_regions = unit_features(regions, models.dino->processor,
                                 [&](const at::Tensor& x) { return models.dino->model->features(x); });
  } else {
    scores.notes.push_back("DINO-f and DINO-b need --dino");
  }

  auto cosine = [](const at::Tensor& a, const at::Tensor& b) { return at::dot(a, b).item<double>(); };

  int judged = 0, succeeded = 0;
  for (size_t i = 0; i < n; ++i) {
    ImageScores row;
    row.name = images[i].name;
    row.prompt = images[i].prompt;
    row.clip_t = cosine(clip_whole[static_cast<int64_t>(i)], judge.text_feature(prompt_without_trigger(row.prompt, trigger)));
    if (region_row[i] >= 0) {
      const int64_t r = region_row[i];
      row.clip_i_f = cosine(clip_regions[r], clip_regions[0]);
      row.clip_i_b = cosine(clip_regions[r + 1], clip_regions[1]);
      if (dino_regions.defined()) {
        row.dino_f = cosine(dino_regions[r], dino_regions[0]);
        row.dino_b = cosine(dino_regions[r + 1], dino_regions[1]);
      }
    }
    const EditingPrompt* entry = editing ? editing->find(row.prompt, trigger) : nullptr;
    if (entry) {
      row.listed = true;
      row.edit_success = true;
      for (const EditCheck& edit : entry->edits) {
        const double p = judge.probability(clip_whole.slice(0, i, i + 1), edit)[0].item<double>();
        row.edits.push_back({edit.name, p});
        row.edit_success = row.edit_success && p > 0.5;
      }
      ++judged;
      succeeded += row.edit_success;
    }
    scores.images.push_back(std::move(row));
  }
  for (auto [key, field] : std::vector<std::pair<std::string, std::optional<double> ImageScores::*>>{
           {"clip_i_f", &ImageScores::clip_i_f}, {"clip_i_b", &ImageScores::clip_i_b},
           {"dino_f", &ImageScores::dino_f}, {"dino_b", &ImageScores::dino_b}})
    scores.means[key] = mean_of(scores.images, field);
  double clip_t = 0;
  for (const ImageScores& row : scores.images) clip_t += row.clip_t;
  scores.means["clip_t"] = n ? std::optional<double>(clip_t / static_cast<double>(n)) : std::nullopt;
  const size_t unmasked = static_cast<size_t>(std::count(region_row.begin(), region_row.end(), -1));
  if (unmasked) scores.notes.push_back(fmt::format("{} image(s) without a foreground mask: no -f/-b scores", unmasked));

  if (editing) {
    scores.esr_images = judged;
    if (judged) scores.esr = static_cast<double>(succeeded) / judged;
    else scores.notes.push_back("no image was drawn from a prompt of the editing list: no ESR");
  }

  if (models.lpips) {
    std::map<std::string, std::vector<size_t>> by_prompt;
    for (size_t i = 0; i < n; ++i) by_prompt[images[i].prompt].push_back(i);
    double total = 0;
    for (const auto& [prompt, members] : by_prompt) {
      std::vector<at::Tensor> left, right;
      for (size_t a = 0; a < members.size(); ++a)
        for (size_t b = a + 1; b < members.size(); ++b) {
          const at::Tensor& x = images[members[a]].pixels;
          const at::Tensor& y = images[members[b]].pixels;
          if (!x.sizes().equals(y.sizes()))
            throw Error(fmt::format("{} and {}: one prompt's images differ in size", images[members[a]].name,
                                    images[members[b]].name));
          auto signed_unit = [](const at::Tensor& p) { return p.permute({2, 0, 1}).to(at::kFloat).div(127.5).sub(1); };
          left.push_back(signed_unit(x));
          right.push_back(signed_unit(y));
        }
      if (left.empty()) continue;
      double sum = 0;
      for (size_t start = 0; start < left.size(); start += kBatch) {
        const size_t end = std::min(left.size(), start + kBatch);
        const std::vector<at::Tensor> l(left.begin() + start, left.begin() + end), r(right.begin() + start,
                                                                                      right.begin() + end);
        sum += (*models.lpips)->forward(at::stack(l), at::stack(r)).sum().item<double>();
      }
      total += sum / static_cast<double>(left.size());
      ++scores.div_prompts;
    }
    if (scores.div_prompts) scores.div = total / scores.div_prompts;
    else scores.notes.push_back("no prompt has two images: no DIV");
  } else {
    scores.notes.push_back("DIV needs --lpips");
  }
  return scores;
}

nlohmann::json to_json(const ConceptScores& scores) {
  nlohmann::json rows = nlohmann::json::array();
  for (const ImageScores& row : scores.images) {
    nlohmann::json edits = nlohmann::json::array();
    for (const EditJudgement& edit : row.edits) edits.push_back({{"name", edit.name}, {"probability", edit.probability}});
    rows.push_back({{"name", row.name},
                    {"prompt", row.prompt},
                    {"clip_i_f", optional_json(row.clip_i_f)},
                    {"clip_i_b", optional_json(row.clip_i_b)},
                    {"dino_f", optional_json(row.dino_f)},
                    {"dino_b", optional_json(row.dino_b)},
                    {"clip_t", row.clip_t},
                    {"listed", row.listed},
                    {"edit_success", row.edit_success},
                    {"edits", edits}});
  }
  nlohmann::json means = nlohmann::json::object();
  for (const auto& [key, value] : scores.means) means[key] = optional_json(value);
  return {{"images", rows},        {"means", means},
          {"div", optional_json(scores.div)}, {"div_prompts", scores.div_prompts},
          {"esr", optional_json(scores.esr)}, {"esr_images", scores.esr_images},
          {"notes", scores.notes}};
}

ConceptScores concept_scores_from_json(const nlohmann::json& json) {
  try {
    ConceptScores scores;
    for (const nlohmann::json& r : json.at("images")) {
      ImageScores row;
      row.name = r.at("name").get<std::string>();
      row.prompt = r.at("prompt").get<std::string>();
      row.clip_i_f = optional_from(r, "clip_i_f");
      row.clip_i_b = optional_from(r, "clip_i_b");
      row.dino_f = optional_from(r, "dino_f");
      row.dino_b = optional_from(r, "dino_b");
      row.clip_t = r.at("clip_t").get<double>();
      row.listed = r.at("listed").get<bool>();
      row.edit_success = r.at("edit_success").get<bool>();
      for (const nlohmann::json& e : r.at("edits"))
        row.edits.push_back({e.at("name").get<std::string>(), e.at("probability").get<double>()});
      scores.images.push_back(std::move(row));
    }
    for (const auto& [key, value] : json.at("means").items())
      scores.means[key] = value.is_null() ? std::nullopt : std::optional<double>(value.get<double>());
    scores.div = optional_from(json, "div");
    scores.div_prompts = json.at("div_prompts").get<int>();
    scores.esr = optional_from(json, "esr");
    scores.esr_images = json.at("esr_images").get<int>();
    scores.notes = json.at("notes").get<std::vector<std::string>>();
    return scores;
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("not a scores record of eval images: ") + e.what());
  }
}

}  // namespace singleinsert
