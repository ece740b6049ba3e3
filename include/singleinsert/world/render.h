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

// Where the scene's small captioned details are drawn: float32 [S, S], 1 on every pixel that a
// render with another expression, or with the earrings toggled, would change (the mouth, brows
// and eyes of every expression, both earrings), 0 elsewhere and everywhere on a cup subject.
// `drawn` is render(scene, S).image, which the caller has already made.
// Base training weights these regions up (diffusion.detail_weight): a few latent positions
// otherwise carry too little of the loss for the words that draw them to be learned.
at::Tensor detail_regions(const Scene& scene, const at::Tensor& drawn);

}  // namespace singleinsert::world
