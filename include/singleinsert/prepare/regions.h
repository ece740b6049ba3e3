#pragma once
// Boxes in image pixels, and the paper's crop: the largest square region that contains the subject.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace singleinsert {

struct Box {
  int64_t x = 0, y = 0, width = 0, height = 0;

  int64_t right() const { return x + width; }
  int64_t bottom() const { return y + height; }
  bool empty() const { return width <= 0 || height <= 0; }
};

// The largest square inside an image_width x image_height image that contains `subject`
// (clipped to the image), centred on it as far as the image allows.
Box largest_square_containing(const Box& subject, int64_t image_width, int64_t image_height);

// uint8 [H, W, ...] -> the same inside `box` (a copy, contiguous).
at::Tensor crop(const at::Tensor& pixels, const Box& box);

// The bounding box of a mask's nonzero pixels (uint8 [H, W] or [H, W, 1]); empty when none.
Box mask_bounds(const at::Tensor& mask);

// Intersection over union of two uint8 [H, W] masks (>= 128 = inside); 1 when both are empty.
double mask_iou(const at::Tensor& a, const at::Tensor& b);

}  // namespace singleinsert
