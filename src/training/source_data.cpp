#include "singleinsert/training/source_data.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "singleinsert/core/error.h"
#include "singleinsert/training/image_preprocess.h"

namespace singleinsert {

PreparedSource prepare_source(const SourceImages& source, int resolution, int latent_size, int encoder_size,
                              const std::string& encoder_normalization, CropMode crop) {
  const int64_t height = source.image.size(0), width = source.image.size(1);
  if (source.mask.size(0) != height || source.mask.size(1) != width)
    throw Error(fmt::format("the mask is {}x{} but the image is {}x{} (they must have the same size)",
                            source.mask.size(1), source.mask.size(0), width, height));
  PreparedSource out;
  if (height != width) {
    if (crop == CropMode::kNone)
      throw Error(fmt::format("the image is {}x{}, not square (crop it, or drop --crop none to centre-crop)", width,
                              height));
    out.warnings.push_back(fmt::format("the image is {}x{}; training on its centred {}x{} square", width, height,
                                       std::min(width, height), std::min(width, height)));
    out.image = center_crop_square(source.image);
    out.mask = center_crop_square(source.mask);
  } else {
    out.image = source.image.contiguous();
    out.mask = source.mask.contiguous();
  }
  if (out.mask.max().item<int>() == 0)
    throw Error("the mask has no foreground (it is black everywhere): nothing to learn");
  if (out.mask.min().item<int>() == 255)
    out.warnings.push_back("the mask covers the whole image: the background loss L_bg is zero");

  out.pixels = to_signed_unit_tensor(pil_resize_bilinear(out.image, resolution, resolution));
  at::Tensor cond = pil_resize_bilinear(out.image, encoder_size, encoder_size).permute({2, 0, 1}).unsqueeze(0).to(at::kFloat) / 255.0;
  if (encoder_normalization == "clip") {
    const at::Tensor mean = at::tensor({0.48145466, 0.4578275, 0.40821073}, at::kFloat).view({1, 3, 1, 1});
    const at::Tensor std = at::tensor({0.26862954, 0.26130258, 0.27577711}, at::kFloat).view({1, 3, 1, 1});
    out.cond_pixels = (cond - mean) / std;
  } else {
    out.cond_pixels = (cond - 0.5) / 0.5;
  }
  const at::Tensor mask = pil_resize_bilinear(out.mask, latent_size, latent_size).to(at::kFloat) / 255.0;  // [h, w, C]
  out.mask_latent = mask.mean(-1).view({1, 1, latent_size, latent_size});
  out.foreground_fraction = out.mask_latent.mean().item<double>();
  return out;
}

}  // namespace singleinsert
