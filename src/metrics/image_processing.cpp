#include "singleinsert/metrics/image_processing.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/training/image_preprocess.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

// "size": 224 | {"shortest_edge": 224} | {"height": 224, "width": 224}
void read_size(const nlohmann::json& value, const std::string& origin, bool number_is_shortest_edge,
               int64_t& shortest_edge, int64_t& height, int64_t& width) {
  if (value.is_number_integer() && number_is_shortest_edge) {
    shortest_edge = value.get<int64_t>();
    height = width = 0;
  } else if (value.is_number_integer()) {
    shortest_edge = 0;
    height = width = value.get<int64_t>();
  } else if (value.is_object() && value.contains("shortest_edge")) {
    shortest_edge = value.at("shortest_edge").get<int64_t>();
    height = width = 0;
  } else if (value.is_object() && value.contains("height") && value.contains("width")) {
    shortest_edge = 0;
    height = value.at("height").get<int64_t>();
    width = value.at("width").get<int64_t>();
  } else {
    throw Error(origin + ": \"size\" is neither a number, {shortest_edge} nor {height, width}");
  }
  if (shortest_edge < 0 || height < 0 || width < 0 || shortest_edge > 4096 || height > 4096 || width > 4096)
    throw Error(origin + ": \"size\" is out of range");
}

std::array<double, 3> read_triple(const JsonConfig& json, const std::string& key, std::array<double, 3> fallback) {
  const auto values = json.get_double_list(key);
  if (!values) return fallback;
  if (values->size() != 3) throw Error(fmt::format("{}: \"{}\" must have 3 values", json.origin(), key));
  return {(*values)[0], (*values)[1], (*values)[2]};
}

}  // namespace

ImageProcessor ImageProcessor::clip(int64_t size) {
  ImageProcessor p;
  p.shortest_edge = size;
  p.crop_size = size;
  return p;
}

ImageProcessor ImageProcessor::vit(int64_t size) {
  ImageProcessor p;
  p.shortest_edge = 0;
  p.resize_height = p.resize_width = size;
  p.crop_size = 0;
  p.bicubic = false;
  p.number_is_shortest_edge = false;
  p.mean = {0.5, 0.5, 0.5};
  p.std = {0.5, 0.5, 0.5};
  return p;
}

ImageProcessor ImageProcessor::from_folder(const std::string& folder, ImageProcessor p) {
  const fs::path path = fs::path(folder) / "preprocessor_config.json";
  if (!fs::exists(path)) return p;
  const JsonConfig json = JsonConfig::load(path.string());
  try {
    const nlohmann::json& j = json.json();
    if (json.get_bool("do_resize", true)) {
      if (j.contains("size")) read_size(j.at("size"), json.origin(), p.number_is_shortest_edge, p.shortest_edge, p.resize_height, p.resize_width);
    } else {
      p.shortest_edge = p.resize_height = p.resize_width = 0;
    }
    if (!json.get_bool("do_center_crop", p.crop_size > 0)) {
      p.crop_size = 0;
    } else if (j.contains("crop_size")) {
      int64_t edge = 0, height = 0, width = 0;
      read_size(j.at("crop_size"), json.origin(), /*number_is_shortest_edge=*/false, edge, height, width);
      if (height != width) throw Error(json.origin() + ": only square crops are supported");
      p.crop_size = height;
    }
    const int resample = json.get_int("resample", p.bicubic ? 3 : 2);
    if (resample != 2 && resample != 3)
      throw Error(fmt::format("{}: resample {} is not supported (2: bilinear, 3: bicubic)", json.origin(), resample));
    p.bicubic = resample == 3;
    if (json.get_bool("do_normalize", true)) {
      p.mean = read_triple(json, "image_mean", p.mean);
      p.std = read_triple(json, "image_std", p.std);
    } else {
      p.mean = {0, 0, 0};
      p.std = {1, 1, 1};
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(json.origin() + ": " + e.what());
  }
  return p;
}

at::Tensor ImageProcessor::operator()(const at::Tensor& pixels) const {
  if (pixels.dim() != 3 || pixels.size(2) != 3 || pixels.scalar_type() != at::kByte)
    throw Error("image processor: expected uint8 [H, W, 3] pixels");
  const PilFilter filter = bicubic ? PilFilter::kBicubic : PilFilter::kBilinear;
  at::Tensor image = pixels;
  const int64_t height = pixels.size(0), width = pixels.size(1);
  if (shortest_edge > 0) {
    // transformers' get_resize_output_image_size: the long side is truncated, not rounded.
    const bool portrait = width <= height;
    const int64_t short_side = portrait ? width : height, long_side = portrait ? height : width;
    const int64_t new_long = static_cast<int64_t>(static_cast<double>(shortest_edge) * long_side / short_side);
    const int64_t out_h = portrait ? new_long : shortest_edge, out_w = portrait ? shortest_edge : new_long;
    if (out_h != height || out_w != width) image = pil_resize(image, out_h, out_w, filter);
  } else if (resize_height > 0 && (resize_height != height || resize_width != width)) {
    image = pil_resize(image, resize_height, resize_width, filter);
  }
  if (crop_size > 0) {
    const int64_t h = image.size(0), w = image.size(1);
    if (h < crop_size || w < crop_size) throw Error("image processor: the image is smaller than the crop");
    const int64_t top = (h - crop_size) / 2, left = (w - crop_size) / 2;
    image = image.slice(0, top, top + crop_size).slice(1, left, left + crop_size);
  }
  // As transformers does it: the 1/255 rescale in double, then float32 normalisation.
  at::Tensor x = image.permute({2, 0, 1}).to(at::kDouble).mul(1.0 / 255.0).to(at::kFloat);
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor m = at::tensor(std::vector<float>{static_cast<float>(mean[0]), static_cast<float>(mean[1]),
                                                     static_cast<float>(mean[2])}, opts).view({3, 1, 1});
  const at::Tensor s = at::tensor(std::vector<float>{static_cast<float>(std[0]), static_cast<float>(std[1]),
                                                     static_cast<float>(std[2])}, opts).view({3, 1, 1});
  return x.sub(m).div(s).unsqueeze(0).contiguous();
}

}  // namespace singleinsert
