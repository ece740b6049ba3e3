#pragma once
// The procedural world's parameters. A scene holds one subject (a cartoon face, or a cup) on a
// background. Both subjects have identities: a face's is split into what captions name (skin,
// hair, eyes, freckles) and what words do not describe (proportions and shades), which is what
// inversion has to learn from one image; a cup's into its colour and its hidden shape, handle and
// band. Some training faces are named persons (a name is one word, like a celebrity's in real
// captions), so that single words carry whole identities in the model's text space, as they do in
// Stable Diffusion's. Everything a prompt can change (accessories, expression, head turn,
// background, position, size, a cup beside the face) lives in the scene. Rendering is in
// world/render.h.
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
extern const std::vector<std::string> kViews;            // frontal (unnamed), turned left, turned right, in profile
extern const std::vector<std::string> kBackgroundColours;
extern const std::vector<std::string> kPatterns;         // plain (unnamed), striped, dotted
extern const std::vector<std::string> kPositions;        // left, centre (unnamed), right
extern const std::vector<std::string> kSizes;            // small, medium (unnamed), large
extern const std::vector<std::string> kObjectColours;    // hats and cups

// The named persons: one caption word each, bound to a fixed training identity.
const std::vector<std::string>& person_names();

struct FaceIdentity {
  // Named in captions.
  int skin = 0, hair_colour = 0, hair_style = 0, eye_colour = 0;
  bool freckles = false;
  // Not named (kHiddenProportions gives their ranges). Lengths are relative to the head's
  // half-width w and half-height h.
  double head_width = 1.0;     // w, relative to the scene's face size
  double head_aspect = 1.25;   // h / w
  double eye_spacing = 0.42;   // eye centre from the centre line, / w
  double eye_drop = 0.1;       // eye centre below the head centre, / h
  double eye_size = 0.24;      // eye half-width, / w
  double mouth_width = 0.45;   // mouth half-width, / w
  double nose_length = 0.2;    // / h
  double fringe_depth = 0.3;   // how far the fringe comes down from the crown, / h
  double fringe_tilt = 0.0;    // the parting's slant, degrees
  double skin_shade = 0.0;     // added to every channel of the named skin colour
  double hair_shade = 0.0;     // and of the named hair colour
  uint64_t freckle_seed = 0;   // where the freckles sit (too fine to count as identity)
};

struct CupIdentity {
  int colour = 0;  // named: kObjectColours
  // Not named (kCupProportions).
  double height = 1.0;          // relative to the cup's base height
  double taper = 1.0;           // top width / bottom width
  double handle_size = 1.0;
  double handle_height = 0.5;   // the handle's centre, from the rim (0) to the base (1)
  double band_position = 0.5;   // a band around the cup, from the rim (0) to the base (1)
  double band_width = 0.15;     // of the cup's height
};

// A hidden parameter and the range sample_identity draws it from (in this order); the detector
// scales it to [0, 1] with the same range.
template <typename Identity>
struct HiddenParameter {
  const char* name;
  double Identity::*field;
  double lo, hi;
};
extern const std::vector<HiddenParameter<FaceIdentity>> kFaceHidden;
extern const std::vector<HiddenParameter<CupIdentity>> kCupHidden;

enum class Subject { kFace, kCup };

struct Scene {
  Subject subject = Subject::kFace;
  FaceIdentity face;
  int person = -1;  // index into person_names() when the face is a named person's
  CupIdentity cup_identity;  // the cup's, as the subject or beside the face
  bool sunglasses = false, hat = false, earrings = false;
  int hat_colour = 0;  // not named
  int expression = 0;
  int view = 0;
  int background = 0, pattern = 0;
  int position = 1, size = 1;
  bool cup = false;  // a cup beside the face (the second class)
};

// Identities with seeds from here on are never drawn by sample_scene: held out for evaluation.
constexpr uint64_t kHeldOutIdentitySeed = uint64_t{1} << 40;

FaceIdentity sample_identity(uint64_t seed);
CupIdentity sample_cup_identity(uint64_t seed);
// The identity of person_names()[index] (a training identity).
FaceIdentity person_identity(int index);
// A random scene from the training distribution (identity seeds below kHeldOutIdentitySeed).
Scene sample_scene(uint64_t seed);
// The photo a user would invert: the face alone, centred, frontal, neutral, no accessories, on a
// plain background.
Scene source_scene(const FaceIdentity& face, int background);
// The same for a cup.
Scene cup_source_scene(const CupIdentity& cup, int background);

// Which parts of a scene a caption says. The full caption (the default) names everything;
// training captions leave parts out at random (training_caption_parts), so that short prompts
// such as "a photo of a * face wearing a hat" are ones the model has seen.
struct CaptionParts {
  std::string subject;   // replaces the subject's words ("face", "mira face", "red cup") when set
  std::string cup_beside;  // replaces "red cup" in "next to a red cup" when set
  bool identity = true;  // "with tan skin, short red hair and brown eyes"
  bool person = true;    // a named person's name before "face"
  bool cup_colour = true;
  bool background_colour = true, pattern = true;
  bool background = true;  // the whole background phrase
  bool photo = true;       // "a photo of a ..."; without it the caption starts at the subject ("mira face ...")
};
CaptionParts training_caption_parts(const Scene& scene, uint64_t seed);
std::string caption(const Scene& scene, const CaptionParts& parts = {});
// "face with tan skin, short red hair and brown eyes and freckles": the words of a face's
// named attributes (the text floor of eval concept).
std::string identity_words(const FaceIdentity& face);
// Every word that captions and the editing prompts use.
const std::vector<std::string>& vocabulary_words();

nlohmann::json to_json(const Scene& scene);
Scene scene_from_json(const nlohmann::json& json);  // throws Error on a malformed description

// Applies a named edit to a scene: sunglasses, hat, earrings, cup, smiling, surprised, neutral,
// turned-left, turned-right, profile, frontal, left, right, centre, small, large, striped,
// dotted, plain, or a background colour. Throws Error naming the valid edits for anything else.
void apply_edit(Scene& scene, const std::string& edit);
const std::vector<std::string>& edit_names();

}  // namespace singleinsert::world
