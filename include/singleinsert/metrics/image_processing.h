#pragma once
// What transformers' image processors do before a metric model sees a picture, read from a
// model folder's preprocessor_config.json: PIL resize (bicubic or bilinear) to the shortest edge
// or to a fixed size, centre crop, 1/255, mean and std.
#include <ATen/core/Tensor.h>

#include <array>
#include <string>

namespace singleinsert {

struct ImageProcessor {
  int64_t shortest_edge = 224;  // resize so that the shorter side is this (0: use height/width)
  int64_t resize_height = 0, resize_width = 0;  // a fixed size instead (ViTImageProcessor)
  int64_t crop_size = 224;  // centre crop to a square of this side (0: none)
  bool bicubic = true;      // PIL resample 3; else 2 (bilinear)
  // How a plain number in "size" reads: CLIP's processors take it as the shortest edge, ViT's
  // as a square (transformers' get_size_dict default_to_square).
  bool number_is_shortest_edge = true;
  std::array<double, 3> mean{0.48145466, 0.4578275, 0.40821073};  // CLIP's
  std::array<double, 3> std{0.26862954, 0.26130258, 0.27577711};

  // CLIPImageProcessor's defaults for a model of input side `size`.
  static ImageProcessor clip(int64_t size);
  // ViTImageProcessor's defaults (resize to size x size, bilinear, mean and std 0.5).
  static ImageProcessor vit(int64_t size);
  // `fallback` updated with what `folder`/preprocessor_config.json says, when it exists.
  static ImageProcessor from_folder(const std::string& folder, ImageProcessor fallback);

  // uint8 [H, W, 3] -> float [1, 3, S, S].
  at::Tensor operator()(const at::Tensor& pixels) const;
};

}  // namespace singleinsert
