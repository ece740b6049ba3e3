#include "singleinsert/training/image_preprocess.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <vector>

#include "singleinsert/core/error.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {
namespace {

// Pillow's Resample.c: PRECISION_BITS = 32 - 8 - 2.
constexpr int kPrecisionBits = 22;

struct Coefficients {
  int64_t kernel_size = 0;
  std::vector<int64_t> bounds;  // per output pixel: first input index, count
  std::vector<int32_t> weights; // per output pixel: kernel_size fixed-point weights
};

double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Pillow's bicubic_filter (a = -0.5), support 2.
double bicubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

Coefficients precompute(int64_t in_size, int64_t out_size, PilFilter filter) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  double (*kernel)(double) = filter == PilFilter::kBicubic ? bicubic : triangle;
  const double support = (filter == PilFilter::kBicubic ? 2.0 : 1.0) * filter_scale;
  Coefficients c;
  c.kernel_size = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(out_size * 2);
  c.weights.assign(out_size * c.kernel_size, 0);
  std::vector<double> k(c.kernel_size);
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    const double inverse = 1.0 / filter_scale;
    int64_t xmin = static_cast<int64_t>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = static_cast<int64_t>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double total = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      k[x] = kernel((static_cast<double>(x + xmin) - center + 0.5) * inverse);
      total += k[x];
    }
    for (int64_t x = 0; x < xmax; ++x) {
      const double w = total != 0.0 ? k[x] / total : k[x];
      // normalize_coeffs_8bpc: round half away from zero.
      c.weights[xx * c.kernel_size + x] =
          static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  return c;
}

uint8_t clip8(int64_t value) {
  if (value <= 0) return 0;
  const int64_t shifted = value >> kPrecisionBits;
  return shifted > 255 ? 255 : static_cast<uint8_t>(shifted);
}

// One separable pass along `axis` (1 = width, 0 = height) of a contiguous uint8 [H, W, C] image.
at::Tensor resample_axis(const at::Tensor& input, int64_t out_size, int axis, PilFilter filter) {
  const int64_t height = input.size(0), width = input.size(1), channels = input.size(2);
  const int64_t in_size = axis == 1 ? width : height;
  const Coefficients c = precompute(in_size, out_size, filter);
  const int64_t out_h = axis == 1 ? height : out_size, out_w = axis == 1 ? out_size : width;
  at::Tensor output = at::empty({out_h, out_w, channels}, at::kByte);
  const uint8_t* in = input.data_ptr<uint8_t>();
  uint8_t* out = output.data_ptr<uint8_t>();
  for (int64_t y = 0; y < out_h; ++y)
    for (int64_t x = 0; x < out_w; ++x) {
      const int64_t o = axis == 1 ? x : y;
      const int64_t first = c.bounds[o * 2], count = c.bounds[o * 2 + 1];
      const int32_t* k = &c.weights[o * c.kernel_size];
      for (int64_t ch = 0; ch < channels; ++ch) {
        int64_t sum = int64_t{1} << (kPrecisionBits - 1);
        for (int64_t i = 0; i < count; ++i) {
          const int64_t sy = axis == 1 ? y : first + i, sx = axis == 1 ? first + i : x;
          sum += static_cast<int64_t>(in[(sy * width + sx) * channels + ch]) * k[i];
        }
        out[(y * out_w + x) * channels + ch] = clip8(sum);
      }
    }
  return output;
}

}  // namespace

at::Tensor pil_resize_bilinear(const at::Tensor& pixels, int64_t out_height, int64_t out_width) {
  return pil_resize(pixels, out_height, out_width, PilFilter::kBilinear);
}

at::Tensor pil_resize(const at::Tensor& pixels, int64_t out_height, int64_t out_width, PilFilter filter) {
  if (pixels.scalar_type() != at::kByte || pixels.dim() != 3)
    throw Error(fmt::format("expected uint8 [H, W, C] pixels, got {} {}", dtype_string(pixels.scalar_type()),
                            shape_string(pixels.sizes())));
  if (out_height < 1 || out_width < 1) throw Error("resize target must be at least 1x1");
  at::Tensor image = pixels.cpu().contiguous();
  if (image.size(0) == out_height && image.size(1) == out_width) return image.clone();
  // Pillow resamples horizontally first, into an 8-bit image, then vertically.
  if (image.size(1) != out_width) image = resample_axis(image, out_width, 1, filter);
  if (image.size(0) != out_height) image = resample_axis(image, out_height, 0, filter);
  return image;
}

at::Tensor center_crop_square(const at::Tensor& pixels) {
  const int64_t height = pixels.size(0), width = pixels.size(1), side = std::min(height, width);
  // torchvision's CenterCrop rounds the offsets: int(round((H - side) / 2.0)).
  const int64_t top = static_cast<int64_t>(std::nearbyint((height - side) / 2.0));
  const int64_t left = static_cast<int64_t>(std::nearbyint((width - side) / 2.0));
  return pixels.narrow(0, top, side).narrow(1, left, side).contiguous();
}

at::Tensor to_signed_unit_tensor(const at::Tensor& pixels) {
  const at::Tensor unit = pixels.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat) / 255.0;  // ToTensor
  return (unit - 0.5) / 0.5;                                                               // Normalize
}

}  // namespace singleinsert
