#pragma once
// What a learned concept draws, measured against the world's truth: editing prompts built from
// edits of the source scene, the identity distance to the source split into the named part
// (what words can say) and the hidden part (what only the image gives), and the scale that makes
// a distance readable: the edited scenes rendered with the source's own identity (closeness 1)
// and with other held-out identities (closeness 0). Generation is the caller's (a callback), so
// this layer needs no model.
#include <ATen/core/Tensor.h>

#include <deque>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "singleinsert/world/detector.h"
#include "singleinsert/world/scene.h"

namespace singleinsert::world {

using EditList = std::vector<std::string>;

// Ten prompts' edits with one or two edits each, for a face or a cup source. Background colours
// differ from the source's, so that a generation showing the source background counts as leakage.
std::vector<EditList> editing_edits(const Scene& source);
// The head turns a frontal source has never shown: turned-left, turned-right, profile.
std::vector<EditList> novel_view_edits();

// The source scene with the edits applied (the scene a perfect generation shows).
Scene edited_scene(const Scene& source, const EditList& edits);
// The prompt for those edits, naming the subject by `subject_words` ("* face", "face with tan
// skin, ...", "& cup") and mentioning only what the edits change.
// `cup_words` names a cup beside the face ("& cup") instead of its colour.
std::string editing_prompt(const Scene& source, const EditList& edits, const std::string& subject_words,
                           const std::string& cup_words = "");

// An identity distance and its two parts (faces: hidden proportions and shades / named attributes;
// cups: hidden shape / colour).
struct IdentityParts {
  double whole = 0, named = 0, hidden = 0;
};
IdentityParts identity_parts(const Detection& a, const Detection& b, Subject subject);
nlohmann::json to_json(const IdentityParts& parts);

// Mean distances to the source of renders with the source's identity and with others'.
struct IdentityScale {
  IdentityParts same, other;
};
// 1 at the source identity's distance, 0 at other identities', per part.
IdentityParts closeness(const IdentityParts& distance, const IdentityScale& scale);

// Scores generations against a source: `images` uint8 [P * K, H, W, 3], K per prompt in the
// order of `edits`.
struct ScoredRows {
  double success = 0;             // share with every asked edit detected
  double background_leakage = 0;  // share showing the source background when another was asked
  IdentityParts distance;         // mean over the generations
  IdentityParts closeness;
  // Faces: the share of generations whose named attributes read as the source's, per attribute
  // (skin, hair_colour, hair_style, eyes, freckles): which words a concept fails to carry.
  std::map<std::string, double> named_kept;
  std::vector<double> per_prompt_success;
  int generations = 0;
};
class SourceReference {
 public:
  // `others`: held-out identities per edited scene that make the scale's far end.
  SourceReference(WorldDetector& detector, const Scene& source, int others = 3, uint64_t reference_seed = 5ull << 50);
  const Scene& source() const { return source_; }
  Subject subject() const { return source_.subject; }
  const IdentityScale& scale_for(const std::vector<EditList>& edits);
  ScoredRows score(const std::vector<EditList>& edits, const at::Tensor& images);
  // The distance of one image to the source, by part.
  IdentityParts distance(const at::Tensor& image);

 private:
  WorldDetector& detector_;
  Scene source_;
  Detection source_found_;
  int others_;
  uint64_t reference_seed_;
  std::deque<std::pair<std::vector<EditList>, IdentityScale>> scales_;  // a deque: scale_for's references stay valid
};

// Rank-1 identification: is `found` nearer to the source identity than to each of `gallery`
// other identities rendered in the same scene?
bool recognised(WorldDetector& detector, const Detection& found, const Scene& wanted, Subject subject, int gallery,
                uint64_t reference_seed);

}  // namespace singleinsert::world
