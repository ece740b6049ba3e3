#include "singleinsert/prepare/regions.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "singleinsert/core/error.h"

namespace singleinsert {
namespace {

// The start of a window of length `side` in [0, extent) that covers [begin, end) when it can,
// centred on it otherwise as far as the edges allow.
int64_t place_window(int64_t begin, int64_t end, int64_t side, int64_t extent) {
  const int64_t centred = (begin + end - side) / 2;
  return std::clamp<int64_t>(centred, 0, extent - side);
}

at::Tensor as_plane(const at::Tensor& mask) {
  if (mask.dim() == 3 && mask.size(2) == 1) return mask.squeeze(2);
  if (mask.dim() != 2) throw Error("a mask must be one channel [H, W]");
  return mask;
}

}  // namespace

Box largest_square_containing(const Box& subject, int64_t image_width, int64_t image_height) {
  if (image_width <= 0 || image_height <= 0) throw Error("an image without pixels has no square region");
  const int64_t side = std::min(image_width, image_height);
  const int64_t left = std::clamp<int64_t>(subject.x, 0, image_width);
  const int64_t top = std::clamp<int64_t>(subject.y, 0, image_height);
  const int64_t right = std::clamp<int64_t>(subject.right(), left, image_width);
  const int64_t bottom = std::clamp<int64_t>(subject.bottom(), top, image_height);
  return {place_window(left, right, side, image_width), place_window(top, bottom, side, image_height), side, side};
}

at::Tensor crop(const at::Tensor& pixels, const Box& box) {
  if (box.empty() || box.x < 0 || box.y < 0 || box.right() > pixels.size(1) || box.bottom() > pixels.size(0))
    throw Error("crop: the box lies outside the image");
  return pixels.slice(0, box.y, box.bottom()).slice(1, box.x, box.right()).contiguous();
}

Box mask_bounds(const at::Tensor& mask) {
  const at::Tensor inside = as_plane(mask).ne(0);
  const at::Tensor rows = inside.any(1).nonzero(), columns = inside.any(0).nonzero();
  if (rows.numel() == 0) return {};
  const int64_t top = rows.min().item<int64_t>(), bottom = rows.max().item<int64_t>() + 1;
  const int64_t left = columns.min().item<int64_t>(), right = columns.max().item<int64_t>() + 1;
  return {left, top, right - left, bottom - top};
}

double mask_iou(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor inside_a = as_plane(a).ge(128), inside_b = as_plane(b).ge(128);
  if (!inside_a.sizes().equals(inside_b.sizes())) throw Error("mask_iou: the masks differ in size");
  const double both = static_cast<double>(inside_a.logical_and(inside_b).sum().item<int64_t>());
  const double either = static_cast<double>(inside_a.logical_or(inside_b).sum().item<int64_t>());
  return either == 0 ? 1.0 : both / either;
}

}  // namespace singleinsert
