#include "singleinsert/world/scene.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "singleinsert/core/error.h"

namespace singleinsert::world {

const std::vector<std::string> kSkinTones = {"pale", "tan", "brown", "dark"};
const std::vector<std::string> kHairColours = {"black", "brown", "blond", "red", "white"};
const std::vector<std::string> kHairStyles = {"short", "long", "curly"};
const std::vector<std::string> kEyeColours = {"blue", "green", "brown"};
const std::vector<std::string> kExpressions = {"neutral", "smiling", "surprised"};
const std::vector<std::string> kBackgroundColours = {"blue", "green", "yellow", "pink", "gray", "purple", "orange"};
const std::vector<std::string> kPatterns = {"plain", "striped", "dotted"};
const std::vector<std::string> kPositions = {"left", "centre", "right"};
const std::vector<std::string> kSizes = {"small", "medium", "large"};
const std::vector<std::string> kObjectColours = {"red", "blue", "green", "yellow", "white", "black"};
const std::vector<HiddenProportion> kHiddenProportions = {
    {&FaceIdentity::head_aspect, 1.08, 1.42}, {&FaceIdentity::eye_spacing, 0.3, 0.52},
    {&FaceIdentity::eye_drop, 0.0, 0.25},     {&FaceIdentity::eye_size, 0.15, 0.27},
    {&FaceIdentity::eye_openness, 0.4, 0.9},  {&FaceIdentity::mouth_width, 0.25, 0.6},
    {&FaceIdentity::nose_length, 0.08, 0.25}, {&FaceIdentity::fringe_depth, 0.15, 0.5},
    {&FaceIdentity::fringe_tilt, -20.0, 20.0}};

namespace {

// SplitMix64: the same sequence on every platform and standard library (std::*_distribution
// is implementation-defined), so a seed names the same scene everywhere.
class WorldRandom {
 public:
  explicit WorldRandom(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * static_cast<double>(next() >> 11) * 0x1.0p-53; }
  int pick(size_t n) { return static_cast<int>(next() % n); }
  bool chance(double p) { return uniform(0.0, 1.0) < p; }

 private:
  uint64_t state_;
};

int index_of(const std::vector<std::string>& names, const std::string& name) {
  const auto it = std::find(names.begin(), names.end(), name);
  return it == names.end() ? -1 : static_cast<int>(it - names.begin());
}

std::string joined(const std::vector<std::string>& items) {  // "a, b and c"
  std::string text;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) text += i + 1 == items.size() ? " and " : ", ";
    text += items[i];
  }
  return text;
}

}  // namespace

FaceIdentity sample_identity(uint64_t seed) {
  WorldRandom random(seed ^ 0x5EED1D3A7177ull);
  FaceIdentity face;
  face.skin = random.pick(kSkinTones.size());
  face.hair_colour = random.pick(kHairColours.size());
  face.hair_style = random.pick(kHairStyles.size());
  face.eye_colour = random.pick(kEyeColours.size());
  face.freckles = random.chance(0.4);
  for (const HiddenProportion& hidden : kHiddenProportions) face.*hidden.field = random.uniform(hidden.lo, hidden.hi);
  for (int c = 0; c < 3; ++c) face.skin_shift[c] = random.pick(25) - 12;
  for (int c = 0; c < 3; ++c) face.hair_shift[c] = random.pick(25) - 12;
  face.freckle_seed = random.next();
  return face;
}

Scene sample_scene(uint64_t seed) {
  WorldRandom random(seed ^ 0xC0FFEE5CE4Eull);
  Scene scene;
  scene.face = sample_identity(random.next() % kHeldOutIdentitySeed);
  scene.subject = random.chance(0.15) ? Subject::kCup : Subject::kFace;
  scene.sunglasses = random.chance(0.25);
  scene.hat = random.chance(0.25);
  scene.earrings = random.chance(0.25);
  scene.hat_colour = random.pick(kObjectColours.size());
  scene.expression = random.pick(kExpressions.size());
  scene.background = random.pick(kBackgroundColours.size());
  scene.pattern = random.chance(0.5) ? 0 : 1 + random.pick(2);
  scene.position = random.chance(0.5) ? 1 : (random.chance(0.5) ? 0 : 2);
  scene.size = random.chance(0.5) ? 1 : (random.chance(0.5) ? 0 : 2);
  scene.cup = scene.subject == Subject::kFace && random.chance(0.2);
  scene.cup_colour = random.pick(kObjectColours.size());
  // A hat or cup in the background's colour would vanish into it.
  for (int* colour : {&scene.hat_colour, &scene.cup_colour})
    if (kObjectColours[*colour] == kBackgroundColours[scene.background])
      *colour = (*colour + 1) % static_cast<int>(kObjectColours.size());
  return scene;
}

Scene source_scene(const FaceIdentity& face, int background) {
  Scene scene;
  scene.face = face;
  scene.background = background;
  return scene;
}

std::string caption(const Scene& scene) {
  std::string text = "a photo of a ";
  if (scene.size != 1) text += kSizes[scene.size] + " ";
  if (scene.subject == Subject::kCup) {
    text += kObjectColours[scene.cup_colour] + " cup";
  } else {
    const FaceIdentity& face = scene.face;
    if (scene.expression != 0) text += kExpressions[scene.expression] + " ";
    text += fmt::format("face with {} skin, {} {} hair and {} eyes", kSkinTones[face.skin], kHairStyles[face.hair_style],
                        kHairColours[face.hair_colour], kEyeColours[face.eye_colour]);
    if (face.freckles) text += " and freckles";
    std::vector<std::string> worn;
    if (scene.sunglasses) worn.push_back("sunglasses");
    if (scene.hat) worn.push_back("a hat");
    if (scene.earrings) worn.push_back("earrings");
    if (!worn.empty()) text += ", wearing " + joined(worn) + ",";
    if (scene.cup) text += " next to a " + kObjectColours[scene.cup_colour] + " cup";
  }
  if (scene.position != 1) text += " on the " + kPositions[scene.position];
  const std::string colour = kBackgroundColours[scene.background];
  text += std::string(colour[0] == 'o' ? " on an " : " on a ") + colour;
  if (scene.pattern != 0) text += " " + kPatterns[scene.pattern];
  return text + " background";
}

const std::vector<std::string>& vocabulary_words() {
  static const std::vector<std::string> words = [] {
    std::set<std::string> set = {"a", "an", "the", "of", "photo", "face", "with", "skin", "hair", "and", "eyes",
                                 "freckles", "wearing", "sunglasses", "hat", "earrings", "next", "to", "cup", "on",
                                 "background", "in", "picture", "person", "no", "without", "beside", "front"};
    for (const auto* list : {&kSkinTones, &kHairColours, &kHairStyles, &kEyeColours, &kExpressions,
                             &kBackgroundColours, &kPatterns, &kPositions, &kSizes, &kObjectColours})
      set.insert(list->begin(), list->end());
    return std::vector<std::string>(set.begin(), set.end());
  }();
  return words;
}

nlohmann::json to_json(const Scene& scene) {
  const FaceIdentity& f = scene.face;
  nlohmann::json face = {{"skin", kSkinTones[f.skin]},
                         {"hair_colour", kHairColours[f.hair_colour]},
                         {"hair_style", kHairStyles[f.hair_style]},
                         {"eye_colour", kEyeColours[f.eye_colour]},
                         {"freckles", f.freckles},
                         {"head_aspect", f.head_aspect},
                         {"eye_spacing", f.eye_spacing},
                         {"eye_drop", f.eye_drop},
                         {"eye_size", f.eye_size},
                         {"eye_openness", f.eye_openness},
                         {"mouth_width", f.mouth_width},
                         {"nose_length", f.nose_length},
                         {"fringe_depth", f.fringe_depth},
                         {"fringe_tilt", f.fringe_tilt},
                         {"skin_shift", {f.skin_shift[0], f.skin_shift[1], f.skin_shift[2]}},
                         {"hair_shift", {f.hair_shift[0], f.hair_shift[1], f.hair_shift[2]}},
                         {"freckle_seed", f.freckle_seed}};
  return {{"subject", scene.subject == Subject::kCup ? "cup" : "face"},
          {"face", face},
          {"sunglasses", scene.sunglasses},
          {"hat", scene.hat},
          {"earrings", scene.earrings},
          {"hat_colour", kObjectColours[scene.hat_colour]},
          {"expression", kExpressions[scene.expression]},
          {"background", kBackgroundColours[scene.background]},
          {"pattern", kPatterns[scene.pattern]},
          {"position", kPositions[scene.position]},
          {"size", kSizes[scene.size]},
          {"cup", scene.cup},
          {"cup_colour", kObjectColours[scene.cup_colour]}};
}

Scene scene_from_json(const nlohmann::json& json) {
  auto named = [](const nlohmann::json& object, const char* key, const std::vector<std::string>& names) {
    const int index = index_of(names, object.at(key).get<std::string>());
    if (index < 0) throw Error(fmt::format("scene description: unknown {} '{}'", key, object.at(key).get<std::string>()));
    return index;
  };
  try {
    Scene scene;
    const std::string subject = json.at("subject").get<std::string>();
    if (subject != "face" && subject != "cup") throw Error("scene description: unknown subject '" + subject + "'");
    scene.subject = subject == "cup" ? Subject::kCup : Subject::kFace;
    const nlohmann::json& f = json.at("face");
    FaceIdentity& face = scene.face;
    face.skin = named(f, "skin", kSkinTones);
    face.hair_colour = named(f, "hair_colour", kHairColours);
    face.hair_style = named(f, "hair_style", kHairStyles);
    face.eye_colour = named(f, "eye_colour", kEyeColours);
    face.freckles = f.at("freckles").get<bool>();
    for (auto [key, value] : {std::pair{"head_aspect", &face.head_aspect}, {"eye_spacing", &face.eye_spacing},
                              {"eye_drop", &face.eye_drop}, {"eye_size", &face.eye_size},
                              {"eye_openness", &face.eye_openness}, {"mouth_width", &face.mouth_width},
                              {"nose_length", &face.nose_length}, {"fringe_depth", &face.fringe_depth},
                              {"fringe_tilt", &face.fringe_tilt}})
      *value = f.at(key).get<double>();
    for (int c = 0; c < 3; ++c) face.skin_shift[c] = f.at("skin_shift").at(c).get<int>();
    for (int c = 0; c < 3; ++c) face.hair_shift[c] = f.at("hair_shift").at(c).get<int>();
    face.freckle_seed = f.at("freckle_seed").get<uint64_t>();
    scene.sunglasses = json.at("sunglasses").get<bool>();
    scene.hat = json.at("hat").get<bool>();
    scene.earrings = json.at("earrings").get<bool>();
    scene.hat_colour = named(json, "hat_colour", kObjectColours);
    scene.expression = named(json, "expression", kExpressions);
    scene.background = named(json, "background", kBackgroundColours);
    scene.pattern = named(json, "pattern", kPatterns);
    scene.position = named(json, "position", kPositions);
    scene.size = named(json, "size", kSizes);
    scene.cup = json.at("cup").get<bool>();
    scene.cup_colour = named(json, "cup_colour", kObjectColours);
    return scene;
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("scene description: ") + e.what());
  }
}

const std::vector<std::string>& edit_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> list = {"sunglasses", "hat",  "earrings", "cup",     "smiling", "surprised", "neutral",
                                     "left",       "right", "centre",  "small",   "large",   "striped",   "dotted",
                                     "plain"};
    for (const auto& colour : kBackgroundColours) list.push_back(colour + "-background");
    return list;
  }();
  return names;
}

void apply_edit(Scene& scene, const std::string& edit) {
  if (edit == "sunglasses") scene.sunglasses = true;
  else if (edit == "hat") scene.hat = true;
  else if (edit == "earrings") scene.earrings = true;
  else if (edit == "cup") scene.cup = true;
  else if (int e = index_of(kExpressions, edit); e >= 0) scene.expression = e;
  else if (int p = index_of(kPositions, edit); p >= 0) scene.position = p;
  else if (int s = index_of(kSizes, edit); s >= 0 && edit != "medium") scene.size = s;
  else if (int t = index_of(kPatterns, edit); t >= 0) scene.pattern = t;
  else if (edit.size() > 11 && edit.compare(edit.size() - 11, 11, "-background") == 0 &&
           index_of(kBackgroundColours, edit.substr(0, edit.size() - 11)) >= 0)
    scene.background = index_of(kBackgroundColours, edit.substr(0, edit.size() - 11));
  else {
    std::ostringstream valid;
    for (const auto& name : edit_names()) valid << (valid.tellp() > 0 ? ", " : "") << name;
    throw Error(fmt::format("unknown edit '{}' (valid: {})", edit, valid.str()));
  }
}

}  // namespace singleinsert::world
