#pragma once
// Editing prompts and their judge, for the editing success rate (ESR) on real images. A list is
// JSON:
//   {"description": "...",
//    "prompts": [{"prompt": "a photo of * face wearing sunglasses",
//                 "edits": [{"name": "sunglasses", "present": "a photo of a face wearing sunglasses",
//                            "absent": "a photo of a face"}]}, ...]}
// `*` stands for the concept's trigger. An image drawn from a listed prompt succeeds when CLIP
// (zero-shot) ranks every edit's "present" text above its "absent" one.
#include <string>
#include <vector>

namespace singleinsert {

struct EditCheck {
  std::string name, present, absent;
};

struct EditingPrompt {
  std::string prompt;  // with `*` for the trigger
  std::vector<EditCheck> edits;
};

struct EditingPromptList {
  std::string description;
  std::vector<EditingPrompt> prompts;

  // Throws a one-line Error naming the file and what is wrong.
  static EditingPromptList load(const std::string& path);
  // The entry whose prompt is `prompt` once `trigger` is written `*` (case and runs of spaces
  // ignored), or nullptr.
  const EditingPrompt* find(const std::string& prompt, const std::string& trigger) const;
};

// Lower case, single spaces, no spaces at the ends.
std::string normalise_prompt(const std::string& prompt);
// `prompt` without the trigger word (CLIP-T reads "a photo of a face wearing sunglasses" for
// "a photo of a * face wearing sunglasses": the metric model does not know the trigger).
std::string prompt_without_trigger(const std::string& prompt, const std::string& trigger);

}  // namespace singleinsert
