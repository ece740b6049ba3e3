#pragma once
// singleinsert prepare: a folder of photos -> square crops of one size, each with a foreground
// mask, and prepare.json saying what happened to every input.
#include <ATen/core/Tensor.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "singleinsert/prepare/regions.h"

namespace singleinsert {

class FaceDetector;

struct PrepareOptions {
  std::string class_word = "face";
  int64_t size = 512;      // side of the square crops written
  int64_t min_face = 64;   // narrowest face (in the photo's pixels) worth a crop
};

struct PreparedImage {
  at::Tensor image;  // uint8 [size, size, 3]
  at::Tensor mask;   // uint8 [size, size], 0 or 255
  Box subject;       // the face (or the mask's bounds) in the photo
  Box crop;          // the square taken from the photo
  bool automatic_mask = false;
};

// One photo (uint8 [H, W, 3]) and, when the user has one, its mask (uint8 [H, W], nonzero =
// subject). The crop is the largest square containing the subject: the mask's bounds when
// there is a mask, else (faces) the largest detected face, which then gets an automatic head
// mask. Throws Error with the reason when the photo cannot be prepared (no face, too small, ...).
PreparedImage prepare_image(const at::Tensor& pixels, const std::optional<at::Tensor>& user_mask,
                            const PrepareOptions& options, const FaceDetector* detector);

struct PreparedInput {
  std::string input;                // file name in the images folder
  std::string status;               // "prepared" or "skipped"
  std::string reason;               // why it was skipped
  std::string image, mask;          // file names written (prepared)
  std::string mask_source;          // "automatic" or "user"
  Box subject, crop;
  std::vector<std::string> notes;   // conversions on reading ("grayscale expanded to RGB", ...)
};

// Prepares every file of `images_dir` (sorted by name) into `out_dir` (which must exist):
// NAME.png and NAME_mask.png per prepared photo, then prepare.json. `masks_dir` may be empty;
// a mask there has the photo's name with any image extension. Reports each input as it ends.
// Throws Error when no photo could be prepared (prepare.json is then not written).
std::vector<PreparedInput> prepare_folder(const std::string& images_dir, const std::string& masks_dir,
                                          const std::string& out_dir, const PrepareOptions& options,
                                          const FaceDetector* detector,
                                          const std::function<void(const PreparedInput&)>& on_input = {});

nlohmann::json to_json(const PreparedInput& input);

}  // namespace singleinsert
