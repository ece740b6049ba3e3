#pragma once
// Image preparation exactly as torchvision does it on PIL images, which is what SingleInsert's
// training code feeds its models: PIL's antialiased bilinear resize (separable triangle
// filter widened by the scale factor, 8-bit fixed-point arithmetic with an 8-bit intermediate
// after the horizontal pass), ToTensor, Normalize.
#include <ATen/core/Tensor.h>

namespace singleinsert {

enum class PilFilter { kBilinear, kBicubic };

// uint8 [H, W, C] -> uint8 [out_h, out_w, C], bit-identical to PIL's Image.resize(filter).
at::Tensor pil_resize(const at::Tensor& pixels, int64_t out_height, int64_t out_width, PilFilter filter);
at::Tensor pil_resize_bilinear(const at::Tensor& pixels, int64_t out_height, int64_t out_width);

// The largest centred square of a uint8 [H, W, C] image.
at::Tensor center_crop_square(const at::Tensor& pixels);

// uint8 [H, W, 3] -> float [1, 3, H, W] in [-1, 1] (ToTensor then Normalize([0.5], [0.5])).
at::Tensor to_signed_unit_tensor(const at::Tensor& pixels);

}  // namespace singleinsert
