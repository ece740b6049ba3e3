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
const std::vector<std::string> kViews = {"frontal", "turned left", "turned right", "in profile"};
const std::vector<std::string> kBackgroundColours = {"blue", "green", "yellow", "pink", "gray", "purple", "orange"};
const std::vector<std::string> kPatterns = {"plain", "striped", "dotted"};
const std::vector<std::string> kPositions = {"left", "centre", "right"};
const std::vector<std::string> kSizes = {"small", "medium", "large"};
const std::vector<std::string> kObjectColours = {"red", "blue", "green", "yellow", "white", "black"};
// Ranges wide enough that the extremes differ by several pixels at 64 px, so that the VAE's
// 4x-downsampled latents carry them.
const std::vector<HiddenParameter<FaceIdentity>> kFaceHidden = {
    {"head_width", &FaceIdentity::head_width, 0.85, 1.15},
    {"head_aspect", &FaceIdentity::head_aspect, 1.05, 1.45},
    {"eye_spacing", &FaceIdentity::eye_spacing, 0.32, 0.56},
    {"eye_drop", &FaceIdentity::eye_drop, -0.06, 0.24},
    {"eye_size", &FaceIdentity::eye_size, 0.17, 0.31},
    {"mouth_width", &FaceIdentity::mouth_width, 0.22, 0.62},
    {"nose_length", &FaceIdentity::nose_length, 0.08, 0.3},
    {"fringe_depth", &FaceIdentity::fringe_depth, 0.08, 0.55},
    {"fringe_tilt", &FaceIdentity::fringe_tilt, -28.0, 28.0},
    {"skin_shade", &FaceIdentity::skin_shade, -24.0, 24.0},
    {"hair_shade", &FaceIdentity::hair_shade, -24.0, 24.0}};
const std::vector<HiddenParameter<CupIdentity>> kCupHidden = {
    {"height", &CupIdentity::height, 0.75, 1.3},
    {"taper", &CupIdentity::taper, 0.7, 1.35},
    {"handle_size", &CupIdentity::handle_size, 0.6, 1.5},
    {"handle_height", &CupIdentity::handle_height, 0.3, 0.7},
    {"band_position", &CupIdentity::band_position, 0.2, 0.8},
    {"band_width", &CupIdentity::band_width, 0.08, 0.3}};

namespace {

constexpr int kPersonCount = 192;
constexpr uint64_t kPersonIdentitySeed = uint64_t{1} << 39;  // inside the training range

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

std::string with_article(const std::string& words) {
  return (std::string("aeiou").find(words.at(0)) != std::string::npos ? "an " : "a ") + words;
}

const std::vector<std::string>& plain_words() {
  static const std::vector<std::string> words = {
      "a", "an", "the", "of", "photo", "face", "with", "skin", "hair", "and", "eyes", "freckles", "wearing",
      "sunglasses", "hat", "earrings", "next", "to", "cup", "on", "background", "turned", "in", "profile",
      "picture", "person", "no", "without", "beside", "front"};
  return words;
}

}  // namespace

const std::vector<std::string>& person_names() {
  // Two consonant-vowel syllables each ("kato", "mire"), in a fixed pseudo-random order; none is
  // a caption word.
  static const std::vector<std::string> names = [] {
    const std::string consonants = "bdfgklmnprstvz", vowels = "aeiou";
    std::vector<std::string> syllables;
    for (char c : consonants)
      for (char v : vowels) syllables.push_back(std::string{c, v});
    std::set<std::string> taken(plain_words().begin(), plain_words().end());
    for (const auto* list : {&kSkinTones, &kHairColours, &kHairStyles, &kEyeColours, &kExpressions,
                             &kBackgroundColours, &kPatterns, &kPositions, &kSizes, &kObjectColours})
      taken.insert(list->begin(), list->end());
    WorldRandom random(0x4E414D4553ull);
    std::vector<std::string> out;
    while (out.size() < static_cast<size_t>(kPersonCount)) {
      const std::string name = syllables[random.pick(syllables.size())] + syllables[random.pick(syllables.size())];
      if (taken.insert(name).second) out.push_back(name);
    }
    return out;
  }();
  return names;
}

FaceIdentity sample_identity(uint64_t seed) {
  WorldRandom random(seed ^ 0x5EED1D3A7177ull);
  FaceIdentity face;
  face.skin = random.pick(kSkinTones.size());
  face.hair_colour = random.pick(kHairColours.size());
  face.hair_style = random.pick(kHairStyles.size());
  face.eye_colour = random.pick(kEyeColours.size());
  face.freckles = random.chance(0.4);
  for (const auto& hidden : kFaceHidden) face.*hidden.field = random.uniform(hidden.lo, hidden.hi);
  face.freckle_seed = random.next();
  return face;
}

CupIdentity sample_cup_identity(uint64_t seed) {
  WorldRandom random(seed ^ 0xC0FFEECC0Bull);
  CupIdentity cup;
  cup.colour = random.pick(kObjectColours.size());
  for (const auto& hidden : kCupHidden) cup.*hidden.field = random.uniform(hidden.lo, hidden.hi);
  return cup;
}

FaceIdentity person_identity(int index) {
  if (index < 0 || index >= kPersonCount) throw Error(fmt::format("world: no person {}", index));
  return sample_identity(kPersonIdentitySeed + static_cast<uint64_t>(index));
}

Scene sample_scene(uint64_t seed) {
  WorldRandom random(seed ^ 0xC0FFEE5CE4Eull);
  Scene scene;
  scene.face = sample_identity(random.next() % kHeldOutIdentitySeed);
  scene.cup_identity = sample_cup_identity(random.next() % kHeldOutIdentitySeed);
  scene.subject = random.chance(0.18) ? Subject::kCup : Subject::kFace;
  if (random.chance(0.3)) {
    scene.person = random.pick(kPersonCount);
    scene.face = person_identity(scene.person);
  }
  scene.sunglasses = random.chance(0.25);
  scene.hat = random.chance(0.25);
  scene.earrings = random.chance(0.25);
  scene.hat_colour = random.pick(kObjectColours.size());
  scene.expression = random.pick(kExpressions.size());
  const double view = random.uniform(0.0, 1.0);
  scene.view = view < 0.55 ? 0 : view < 0.7 ? 1 : view < 0.85 ? 2 : 3;
  scene.background = random.pick(kBackgroundColours.size());
  scene.pattern = random.chance(0.5) ? 0 : 1 + random.pick(2);
  scene.position = random.chance(0.5) ? 1 : (random.chance(0.5) ? 0 : 2);
  scene.size = random.chance(0.5) ? 1 : (random.chance(0.5) ? 0 : 2);
  scene.cup = scene.subject == Subject::kFace && random.chance(0.2);
  // A hat or cup in the background's colour would vanish into it.
  for (int* colour : {&scene.hat_colour, &scene.cup_identity.colour})
    if (kObjectColours[*colour] == kBackgroundColours[scene.background])
      *colour = (*colour + 1) % static_cast<int>(kObjectColours.size());
  if (scene.subject == Subject::kCup) scene.person = -1;
  return scene;
}

Scene source_scene(const FaceIdentity& face, int background) {
  Scene scene;
  scene.face = face;
  scene.background = background;
  return scene;
}

Scene cup_source_scene(const CupIdentity& cup, int background) {
  Scene scene;
  scene.subject = Subject::kCup;
  scene.cup_identity = cup;
  scene.background = background;
  if (kObjectColours[cup.colour] == kBackgroundColours[background])
    scene.background = (background + 1) % static_cast<int>(kBackgroundColours.size());
  return scene;
}

CaptionParts training_caption_parts(const Scene& scene, uint64_t seed) {
  WorldRandom random(seed ^ 0xCA9710Full);
  CaptionParts parts;
  // A named person is mostly called by name alone; other faces mostly by their attributes.
  parts.identity = random.chance(scene.person >= 0 ? 0.3 : 0.75);
  parts.cup_colour = random.chance(0.85);
  parts.background = random.chance(0.9);
  parts.background_colour = random.chance(0.85);
  parts.pattern = random.chance(0.85);
  // Short captions too, so that "* face" (how SingleInsert's authors prompt while training) is a
  // prompt the model knows, as "a photo of a * face" is.
  parts.photo = random.chance(0.8);
  return parts;
}

std::string identity_words(const FaceIdentity& face) {
  std::string text = fmt::format("face with {} skin, {} {} hair and {} eyes", kSkinTones[face.skin],
                                 kHairStyles[face.hair_style], kHairColours[face.hair_colour], kEyeColours[face.eye_colour]);
  if (face.freckles) text += " and freckles";
  return text;
}

std::string caption(const Scene& scene, const CaptionParts& parts) {
  std::vector<std::string> words;  // "a photo of a" + these
  if (scene.size != 1) words.push_back(kSizes[scene.size]);
  std::string text;
  if (scene.subject == Subject::kCup) {
    if (!parts.subject.empty()) words.push_back(parts.subject);
    else words.push_back(parts.cup_colour ? kObjectColours[scene.cup_identity.colour] + " cup" : "cup");
    text = fmt::format("{}", fmt::join(words, " "));
  } else {
    if (scene.expression != 0) words.push_back(kExpressions[scene.expression]);
    if (!parts.subject.empty()) {
      words.push_back(parts.subject);
    } else {
      if (parts.person && scene.person >= 0) words.push_back(person_names()[scene.person]);
      words.push_back(parts.identity ? identity_words(scene.face) : "face");
    }
    text = fmt::format("{}", fmt::join(words, " "));
    if (scene.view != 0) text += " " + kViews[scene.view];
    std::vector<std::string> worn;
    if (scene.sunglasses) worn.push_back("sunglasses");
    if (scene.hat) worn.push_back("a hat");
    if (scene.earrings) worn.push_back("earrings");
    if (!worn.empty()) text += " wearing " + joined(worn);
    if (scene.cup) {
      const std::string cup = !parts.cup_beside.empty() ? parts.cup_beside
                              : parts.cup_colour        ? kObjectColours[scene.cup_identity.colour] + " cup"
                                                        : "cup";
      text += " next to " + with_article(cup);
    }
  }
  if (parts.photo) text = "a photo of " + with_article(text);
  if (scene.position != 1) text += " on the " + kPositions[scene.position];
  std::vector<std::string> background;
  if (parts.background_colour) background.push_back(kBackgroundColours[scene.background]);
  if (parts.pattern && scene.pattern != 0) background.push_back(kPatterns[scene.pattern]);
  if (parts.background && !background.empty())
    text += " on " + with_article(fmt::format("{} background", fmt::join(background, " ")));
  return text;
}

const std::vector<std::string>& vocabulary_words() {
  static const std::vector<std::string> words = [] {
    std::set<std::string> set(plain_words().begin(), plain_words().end());
    for (const auto* list : {&kSkinTones, &kHairColours, &kHairStyles, &kEyeColours, &kExpressions,
                             &kBackgroundColours, &kPatterns, &kPositions, &kSizes, &kObjectColours})
      set.insert(list->begin(), list->end());
    for (const std::string& view : kViews)
      for (std::istringstream words(view); words;) {
        std::string word;
        if (words >> word) set.insert(word);
      }
    set.insert(person_names().begin(), person_names().end());
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
                         {"freckle_seed", f.freckle_seed}};
  for (const auto& hidden : kFaceHidden) face[hidden.name] = f.*hidden.field;
  nlohmann::json cup = {{"colour", kObjectColours[scene.cup_identity.colour]}};
  for (const auto& hidden : kCupHidden) cup[hidden.name] = scene.cup_identity.*hidden.field;
  return {{"subject", scene.subject == Subject::kCup ? "cup" : "face"},
          {"face", face},
          {"person", scene.person >= 0 ? nlohmann::json(person_names()[scene.person]) : nlohmann::json(nullptr)},
          {"cup_identity", cup},
          {"sunglasses", scene.sunglasses},
          {"hat", scene.hat},
          {"earrings", scene.earrings},
          {"hat_colour", kObjectColours[scene.hat_colour]},
          {"expression", kExpressions[scene.expression]},
          {"view", kViews[scene.view]},
          {"background", kBackgroundColours[scene.background]},
          {"pattern", kPatterns[scene.pattern]},
          {"position", kPositions[scene.position]},
          {"size", kSizes[scene.size]},
          {"cup", scene.cup}};
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
    face.freckle_seed = f.at("freckle_seed").get<uint64_t>();
    for (const auto& hidden : kFaceHidden) face.*hidden.field = f.at(hidden.name).get<double>();
    const nlohmann::json& c = json.at("cup_identity");
    scene.cup_identity.colour = named(c, "colour", kObjectColours);
    for (const auto& hidden : kCupHidden) scene.cup_identity.*hidden.field = c.at(hidden.name).get<double>();
    if (!json.at("person").is_null()) {
      scene.person = named(json, "person", person_names());
    }
    scene.sunglasses = json.at("sunglasses").get<bool>();
    scene.hat = json.at("hat").get<bool>();
    scene.earrings = json.at("earrings").get<bool>();
    scene.hat_colour = named(json, "hat_colour", kObjectColours);
    scene.expression = named(json, "expression", kExpressions);
    scene.view = named(json, "view", kViews);
    scene.background = named(json, "background", kBackgroundColours);
    scene.pattern = named(json, "pattern", kPatterns);
    scene.position = named(json, "position", kPositions);
    scene.size = named(json, "size", kSizes);
    scene.cup = json.at("cup").get<bool>();
    return scene;
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("scene description: ") + e.what());
  }
}

const std::vector<std::string>& edit_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> list = {"sunglasses", "hat",   "earrings", "cup",     "smiling",     "surprised",
                                     "neutral",    "turned-left", "turned-right", "profile", "frontal",
                                     "left",       "right", "centre",   "small",   "large",       "striped",
                                     "dotted",     "plain"};
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
  else if (edit == "turned-left") scene.view = 1;
  else if (edit == "turned-right") scene.view = 2;
  else if (edit == "profile") scene.view = 3;
  else if (edit == "frontal") scene.view = 0;
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
