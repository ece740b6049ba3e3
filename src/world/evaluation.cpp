#include "singleinsert/world/evaluation.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/world/render.h"

namespace singleinsert::world {
namespace {

std::string other_background(const Scene& source, int k) {
  const int colour = (source.background + 1 + 2 * k) % static_cast<int>(kBackgroundColours.size());
  return kBackgroundColours[static_cast<size_t>(colour)] + "-background";
}

bool changes_background_colour(const EditList& edits) {
  return std::any_of(edits.begin(), edits.end(), [](const std::string& e) {
    return e.size() > 11 && e.compare(e.size() - 11, 11, "-background") == 0;
  });
}

bool changes_pattern(const EditList& edits) {
  return std::any_of(edits.begin(), edits.end(),
                     [](const std::string& e) { return e == "striped" || e == "dotted" || e == "plain"; });
}

at::Tensor render_all(const std::vector<Scene>& scenes) {
  std::vector<at::Tensor> images;
  for (const Scene& scene : scenes) images.push_back(render(scene, WorldDetectorImpl::kInputSize).image);
  return at::stack(images);
}

// The scene with another held-out identity of the same kind.
Scene with_other_identity(Scene scene, uint64_t seed) {
  if (scene.subject == Subject::kCup || scene.cup) {
    const int colour = scene.cup_identity.colour;
    if (scene.subject == Subject::kCup) scene.cup_identity = sample_cup_identity(kHeldOutIdentitySeed + seed);
    else scene.cup_identity.colour = colour;
  }
  if (scene.subject == Subject::kFace) scene.face = sample_identity(kHeldOutIdentitySeed + seed);
  scene.person = -1;
  if (scene.subject == Subject::kCup &&
      kObjectColours[scene.cup_identity.colour] == kBackgroundColours[scene.background])
    scene.cup_identity.colour = (scene.cup_identity.colour + 1) % static_cast<int>(kObjectColours.size());
  return scene;
}

void add(IdentityParts& sum, const IdentityParts& x) {
  sum.whole += x.whole;
  sum.named += x.named;
  sum.hidden += x.hidden;
}
IdentityParts divided(IdentityParts x, double n) {
  x.whole /= n;
  x.named /= n;
  x.hidden /= n;
  return x;
}

}  // namespace

std::vector<EditList> editing_edits(const Scene& source) {
  const std::string first = other_background(source, 0), second = other_background(source, 1);
  if (source.subject == Subject::kCup)
    return {{first}, {"striped"}, {"dotted"}, {"left"}, {"right"}, {"large"}, {"small"},
            {"left", second}, {"dotted", second}, {"right", "striped"}};
  return {{"sunglasses"}, {"hat"}, {"earrings"}, {"smiling"}, {first}, {"cup"}, {"sunglasses", "hat"},
          {"surprised", second}, {"hat", "dotted"}, {"left", "striped"}};
}

std::vector<EditList> novel_view_edits() { return {{"turned-left"}, {"turned-right"}, {"profile"}}; }

Scene edited_scene(const Scene& source, const EditList& edits) {
  Scene scene = source;
  for (const std::string& edit : edits) apply_edit(scene, edit);
  if (scene.cup && source.subject == Subject::kFace && !source.cup) scene.cup_identity.colour = 0;  // "a red cup"
  return scene;
}

std::string editing_prompt(const Scene& source, const EditList& edits, const std::string& subject_words,
                           const std::string& cup_words) {
  const Scene wanted = edited_scene(source, edits);
  // A scene that shows only what the edits change: everything else at its unnamed default.
  Scene shown;
  shown.subject = wanted.subject;
  shown.cup_identity = wanted.cup_identity;
  for (const std::string& edit : edits) apply_edit(shown, edit);
  CaptionParts parts;
  parts.subject = subject_words;
  parts.cup_beside = cup_words;
  parts.background_colour = changes_background_colour(edits);
  parts.pattern = changes_pattern(edits);
  parts.background = parts.background_colour || parts.pattern;
  shown.background = wanted.background;
  shown.pattern = wanted.pattern;
  return caption(shown, parts);
}

IdentityParts identity_parts(const Detection& a, const Detection& b, Subject subject) {
  if (subject == Subject::kCup) {
    const at::Tensor d = a.cup_identity - b.cup_identity;
    const int64_t hidden = static_cast<int64_t>(kCupHidden.size());
    return {d.norm().item<double>(), d.slice(0, hidden).norm().item<double>(), d.slice(0, 0, hidden).norm().item<double>()};
  }
  return {identity_distance(a, b, IdentityPart::kWhole), identity_distance(a, b, IdentityPart::kNamed),
          identity_distance(a, b, IdentityPart::kHidden)};
}

nlohmann::json to_json(const IdentityParts& parts) {
  return {{"whole", parts.whole}, {"named", parts.named}, {"hidden", parts.hidden}};
}

IdentityParts closeness(const IdentityParts& distance, const IdentityScale& scale) {
  auto one = [](double d, double same, double other) { return other > same ? (other - d) / (other - same) : 0.0; };
  return {one(distance.whole, scale.same.whole, scale.other.whole),
          one(distance.named, scale.same.named, scale.other.named),
          one(distance.hidden, scale.same.hidden, scale.other.hidden)};
}

SourceReference::SourceReference(WorldDetector& detector, const Scene& source, int others, uint64_t reference_seed)
    : detector_(detector), source_(source), others_(others), reference_seed_(reference_seed) {
  source_found_ = detect(detector_, render(source_, WorldDetectorImpl::kInputSize).image.unsqueeze(0))[0];
}

IdentityParts SourceReference::distance(const at::Tensor& image) {
  return identity_parts(detect(detector_, image.unsqueeze(0))[0], source_found_, source_.subject);
}

const IdentityScale& SourceReference::scale_for(const std::vector<EditList>& edits) {
  for (const auto& [key, scale] : scales_)
    if (key == edits) return scale;
  std::vector<Scene> same, other;
  for (const EditList& edit : edits) {
    const Scene wanted = edited_scene(source_, edit);
    same.push_back(wanted);
    for (int k = 0; k < others_; ++k) other.push_back(with_other_identity(wanted, reference_seed_ + other.size()));
  }
  IdentityScale scale;
  for (auto [scenes, target] : {std::pair{&same, &scale.same}, std::pair{&other, &scale.other}}) {
    const std::vector<Detection> found = detect(detector_, render_all(*scenes));
    IdentityParts sum;
    for (const Detection& d : found) add(sum, identity_parts(d, source_found_, source_.subject));
    *target = divided(sum, static_cast<double>(found.size()));
  }
  scales_.emplace_back(edits, scale);
  return scales_.back().second;
}

ScoredRows SourceReference::score(const std::vector<EditList>& edits, const at::Tensor& images) {
  if (images.size(0) % static_cast<int64_t>(edits.size()) != 0)
    throw Error("world evaluation: the images are not a whole number per prompt");
  const int64_t per_prompt = images.size(0) / static_cast<int64_t>(edits.size());
  const std::vector<Detection> found = detect(detector_, images);
  const std::vector<int64_t> before = attribute_labels(source_);
  ScoredRows rows;
  IdentityParts sum;
  int successes = 0, recoloured = 0, leaks = 0;
  std::map<std::string, int> named_same;
  for (size_t p = 0; p < edits.size(); ++p) {
    const Scene wanted = edited_scene(source_, edits[p]);
    const std::vector<int64_t> labels = attribute_labels(wanted);
    int prompt_successes = 0;
    for (int64_t k = 0; k < per_prompt; ++k) {
      const Detection& d = found[static_cast<size_t>(static_cast<int64_t>(p) * per_prompt + k)];
      bool every = true;  // every attribute the edits changed is detected as asked
      for (size_t h = 0; h < labels.size(); ++h)
        if (labels[h] != before[h] && labels[h] >= 0) every = every && d.attributes.at(attribute_heads()[h].name) == labels[h];
      prompt_successes += every;
      add(sum, identity_parts(d, source_found_, source_.subject));
      if (source_.subject == Subject::kFace) {
        const FaceIdentity read = named_attributes(d.identity), &truth = source_.face;
        named_same["skin"] += read.skin == truth.skin;
        named_same["hair_colour"] += read.hair_colour == truth.hair_colour;
        named_same["hair_style"] += read.hair_style == truth.hair_style;
        named_same["eyes"] += read.eye_colour == truth.eye_colour;
        named_same["freckles"] += read.freckles == truth.freckles;
      }
      if (wanted.background != source_.background) {
        ++recoloured;
        leaks += d.attributes.at("background") == source_.background;
      }
    }
    successes += prompt_successes;
    rows.per_prompt_success.push_back(static_cast<double>(prompt_successes) / static_cast<double>(per_prompt));
  }
  rows.generations = static_cast<int>(found.size());
  rows.success = static_cast<double>(successes) / rows.generations;
  rows.background_leakage = recoloured ? static_cast<double>(leaks) / recoloured : 0.0;
  for (const auto& [name, count] : named_same) rows.named_kept[name] = static_cast<double>(count) / rows.generations;
  rows.distance = divided(sum, rows.generations);
  rows.closeness = closeness(rows.distance, scale_for(edits));
  return rows;
}

bool recognised(WorldDetector& detector, const Detection& found, const Scene& wanted, Subject subject, int gallery,
                uint64_t reference_seed) {
  std::vector<Scene> scenes = {wanted};
  for (int k = 0; k < gallery; ++k) {
    Scene other = wanted;
    if (subject == Subject::kCup) {
      const int colour = wanted.cup_identity.colour;
      other.cup_identity = sample_cup_identity(kHeldOutIdentitySeed + reference_seed + static_cast<uint64_t>(k));
      other.cup_identity.colour = colour;  // the colour is asked by name: the shape must tell
    } else {
      other.face = sample_identity(kHeldOutIdentitySeed + reference_seed + static_cast<uint64_t>(k));
      other.person = -1;
    }
    scenes.push_back(other);
  }
  const std::vector<Detection> references = detect(detector, render_all(scenes));
  auto distance = [&](const Detection& reference) {
    return subject == Subject::kCup ? cup_identity_distance(found, reference) : identity_distance(found, reference);
  };
  const double own = distance(references[0]);
  for (size_t k = 1; k < references.size(); ++k)
    if (distance(references[k]) <= own) return false;
  return true;
}

}  // namespace singleinsert::world
