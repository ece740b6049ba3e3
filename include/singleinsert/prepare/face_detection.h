#pragma once
// Frontal faces in photographs, with OpenCV's Haar cascade (Debian's opencv-data), and the
// head mask the paper gets from a segmenter, made here from the detection by GrabCut.
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "singleinsert/prepare/regions.h"

namespace singleinsert {

// The cascade file: `requested` when given, else haarcascade_frontalface_alt2.xml from the
// places opencv-data installs it. Throws Error naming the package when there is none.
std::string find_face_cascade(const std::string& requested = {});

class FaceDetector {
 public:
  explicit FaceDetector(const std::string& cascade_path);
  ~FaceDetector();
  FaceDetector(FaceDetector&&) noexcept;
  FaceDetector& operator=(FaceDetector&&) noexcept;

  // Faces in a uint8 [H, W, 3] RGB image, largest first.
  std::vector<Box> detect(const at::Tensor& pixels) const;

 private:
  struct Cascade;
  std::unique_ptr<Cascade> cascade_;
};

// uint8 [H, W] (0 or 255): the head (face, ears and hair down to the chin; not the neck) of the
// person whose face `face` is in a uint8 [H, W, 3] RGB image. A head-shaped prior around the
// detection seeds GrabCut's colour models; the result is the piece that holds the face, without
// holes.
at::Tensor automatic_head_mask(const at::Tensor& pixels, const Box& face);

}  // namespace singleinsert
