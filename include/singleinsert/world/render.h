#pragma once
// Draws scenes of the procedural world with OpenCV: the image, the subject's mask, the caption
// and the ground truth that drew them.
#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <string>

#include "singleinsert/world/scene.h"

namespace singleinsert::world {

struct WorldSample {
  at::Tensor image;  // uint8 [S, S, 3] RGB
  at::Tensor mask;   // uint8 [S, S, 1]: 255 on the subject (a face with its hair and what it wears,
                     // or the cup when the cup is the subject); a cup beside a face is background
  std::string caption;
  nlohmann::json attributes;  // to_json(scene)
};

// Deterministic: the same scene and size give the same bytes. size >= 32.
WorldSample render(const Scene& scene, int size = 256);

}  // namespace singleinsert::world
