#pragma once
// A small procedural world of subjects for demos and tests: cartoon faces drawn from a seed, each
// with its foreground mask and the parameters that drew it.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace singleinsert {

struct WorldSample {
  at::Tensor image;  // uint8 [S, S, 3]
  at::Tensor mask;   // uint8 [S, S, 1]: 255 on the subject (head and hair)
  std::string caption;
};

// One face: head shape and proportions, skin and hair colour, hair style, eye shape and colour,
// freckles and background are drawn from `seed`.
WorldSample render_face(uint64_t seed, int size = 256);

}  // namespace singleinsert
