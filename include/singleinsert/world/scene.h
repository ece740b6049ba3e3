#pragma once
// The procedural world's parameters. A scene holds one subject (a cartoon face, or a cup) on a
// background; a face's identity is split into what captions name (skin, hair, eyes, freckles) and
// what words do not describe (proportions, shades, freckle pattern), which is what inversion has
// to learn from one image. Everything a prompt can change (accessories, expression, background,
// position, size, a cup beside the face) lives in the scene. Rendering is in world/render.h.
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace singleinsert::world {

// Caption words of the named choices; a scene stores indices into these lists.
extern const std::vector<std::string> kSkinTones;        // pale, tan, brown, dark
extern const std::vector<std::string> kHairColours;      // black, brown, blond, red, white
extern const std::vector<std::string> kHairStyles;       // short, long, curly
extern const std::vector<std::string> kEyeColours;       // blue, green, brown
extern const std::vector<std::string> kExpressions;      // neutral (unnamed), smiling, surprised
extern const std::vector<std::string> kBackgroundColours;
extern const std::vector<std::string> kPatterns;         // plain (unnamed), striped, dotted
extern const std::vector<std::string> kPositions;        // left, centre (unnamed), right
extern const std::vector<std::string> kSizes;            // small, medium (unnamed), large
extern const std::vector<std::string> kObjectColours;    // hats and cups

struct FaceIdentity {
  // Named in captions.
  int skin = 0, hair_colour = 0, hair_style = 0, eye_colour = 0;
  bool freckles = false;
  // Not named: proportions relative to the head's half-width w and half-height h.
  double head_aspect = 1.25;   // h / w
  double eye_spacing = 0.42;   // eye centre from the centre line, / w
  double eye_drop = 0.12;      // eye centre below the head centre, / h
  double eye_size = 0.2;       // eye half-width, / w
  double eye_openness = 0.65;  // eye half-height / eye half-width
  double mouth_width = 0.45;   // mouth half-width, / w
  double nose_length = 0.18;   // / h
  double fringe_depth = 0.3;   // how far the fringe comes down from the crown, / h
  double fringe_tilt = 0.0;    // the parting's slant, degrees
  int skin_shift[3] = {0, 0, 0};  // per-channel offsets of the named colour
  int hair_shift[3] = {0, 0, 0};
  uint64_t freckle_seed = 0;
};

// The proportions words do not name, each drawn uniformly from [lo, hi] by sample_identity (in
// this order); the detector scales them to [0, 1] with the same ranges.
struct HiddenProportion {
  double FaceIdentity::*field;
  double lo, hi;
};
extern const std::vector<HiddenProportion> kHiddenProportions;

enum class Subject { kFace, kCup };

struct Scene {
  Subject subject = Subject::kFace;
  FaceIdentity face;
  bool sunglasses = false, hat = false, earrings = false;
  int hat_colour = 0;  // not named
  int expression = 0;
  int background = 0, pattern = 0;
  int position = 1, size = 1;
  bool cup = false;  // a cup beside the face (the second class)
  int cup_colour = 0;
};

// Identities with seeds from here on are never drawn by sample_scene: held out for evaluation.
constexpr uint64_t kHeldOutIdentitySeed = uint64_t{1} << 40;

FaceIdentity sample_identity(uint64_t seed);
// A random scene from the training distribution (identity seeds below kHeldOutIdentitySeed).
Scene sample_scene(uint64_t seed);
// The photo a user would invert: the face alone, centred, neutral, no accessories, on a plain
// background.
Scene source_scene(const FaceIdentity& face, int background);

std::string caption(const Scene& scene);
// Every word that captions and the editing prompts use.
const std::vector<std::string>& vocabulary_words();

nlohmann::json to_json(const Scene& scene);
Scene scene_from_json(const nlohmann::json& json);  // throws Error on a malformed description

// Applies a named edit to a scene: sunglasses, hat, earrings, cup, smiling, surprised, neutral,
// left, right, centre, small, large, striped, dotted, plain, or a background colour. Throws
// Error naming the valid edits for anything else.
void apply_edit(Scene& scene, const std::string& edit);
const std::vector<std::string>& edit_names();

}  // namespace singleinsert::world
