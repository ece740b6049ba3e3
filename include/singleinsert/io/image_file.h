#pragma once
// Reading images and masks from files (PNG, JPEG, WebP, ... through OpenCV) into RGB tensors.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace singleinsert {

struct LoadedImage {
  at::Tensor pixels;                  // uint8 [H, W, 3] RGB
  std::vector<std::string> notes;     // conversions applied ("grayscale expanded to RGB", ...)
};

// Grayscale is expanded to RGB, alpha is dropped (composited on nothing: the colour channels
// are kept), 16-bit samples are scaled to 8 bits, CMYK JPEGs are converted to RGB; each
// conversion is reported in `notes`.
// Throws Error for missing or unreadable files.
LoadedImage read_image_rgb(const std::string& path);

}  // namespace singleinsert
