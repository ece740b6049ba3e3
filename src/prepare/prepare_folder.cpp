#include "singleinsert/prepare/prepare_folder.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/io/png.h"
#include "singleinsert/prepare/face_detection.h"
#include "singleinsert/training/image_preprocess.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

const std::set<std::string> kImageExtensions = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"};

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

bool is_image_file(const fs::path& path) { return kImageExtensions.count(lower(path.extension().string())) > 0; }

// uint8 [H, W, C] -> uint8 [H, W]: the channels' mean, as training averages a mask's channels.
at::Tensor mask_plane(const at::Tensor& mask) {
  if (mask.dim() == 2) return mask;
  return mask.to(at::kFloat).mean(2).round().to(at::kByte);
}

at::Tensor resize_square(const at::Tensor& pixels, int64_t size) {
  if (pixels.size(0) == size && pixels.size(1) == size) return pixels;
  return pil_resize_bilinear(pixels, size, size);
}

Box scaled(const Box& box, const Box& crop, double scale) {
  return {static_cast<int64_t>(static_cast<double>(box.x - crop.x) * scale),
          static_cast<int64_t>(static_cast<double>(box.y - crop.y) * scale),
          static_cast<int64_t>(static_cast<double>(box.width) * scale),
          static_cast<int64_t>(static_cast<double>(box.height) * scale)};
}

// The masks of `masks_dir` by file stem (a photo's mask has its name with any image extension;
// of several, the first by name).
std::map<std::string, fs::path> masks_by_stem(const std::string& masks_dir) {
  std::map<std::string, fs::path> masks;
  if (masks_dir.empty()) return masks;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(masks_dir))
    if (entry.is_regular_file() && is_image_file(entry.path())) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) masks.emplace(file.stem().string(), file);
  return masks;
}

nlohmann::json to_json(const Box& box) { return {box.x, box.y, box.width, box.height}; }

}  // namespace

PreparedImage prepare_image(const at::Tensor& pixels, const std::optional<at::Tensor>& user_mask,
                            const PrepareOptions& options, const FaceDetector* detector) {
  const int64_t height = pixels.size(0), width = pixels.size(1);
  std::optional<at::Tensor> mask;
  if (user_mask) {
    mask = mask_plane(*user_mask);
    if (mask->size(0) != height || mask->size(1) != width)
      throw Error(fmt::format("its mask is {}x{}, the photo {}x{}", mask->size(1), mask->size(0), width, height));
  }
  PreparedImage prepared;
  if (mask) {  // the user has said where the subject is
    prepared.subject = mask_bounds(mask->ge(128).to(at::kByte));
    if (prepared.subject.empty()) throw Error("its mask is empty (no pixel at or above 128)");
  } else if (options.class_word == "face") {
    if (detector == nullptr) throw Error("no face detector");
    const std::vector<Box> faces = detector->detect(pixels);
    if (faces.empty()) throw Error("no face found");
    prepared.subject = faces.front();
    if (prepared.subject.width < options.min_face)
      throw Error(fmt::format("face too small: {} px wide, at least {} wanted (--min-face)", prepared.subject.width,
                              options.min_face));
  } else {
    throw Error(fmt::format("no mask (class '{}' needs one from --masks)", options.class_word));
  }
  prepared.crop = largest_square_containing(prepared.subject, width, height);
  prepared.image = resize_square(crop(pixels, prepared.crop), options.size);
  if (mask) {
    prepared.mask = resize_square(crop(mask->unsqueeze(2), prepared.crop), options.size).squeeze(2).contiguous();
  } else {
    const double scale = static_cast<double>(options.size) / static_cast<double>(prepared.crop.width);
    prepared.mask = automatic_head_mask(prepared.image, scaled(prepared.subject, prepared.crop, scale));
    prepared.automatic_mask = true;
  }
  return prepared;
}

std::vector<PreparedInput> prepare_folder(const std::string& images_dir, const std::string& masks_dir,
                                          const std::string& out_dir, const PrepareOptions& options,
                                          const FaceDetector* detector,
                                          const std::function<void(const PreparedInput&)>& on_input) {
  if (!fs::is_directory(images_dir)) throw Error(fmt::format("--images {}: not a folder", images_dir));
  if (!masks_dir.empty() && !fs::is_directory(masks_dir)) throw Error(fmt::format("--masks {}: not a folder", masks_dir));
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(images_dir))
    if (entry.is_regular_file() && entry.path().filename().string().front() != '.') files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(fmt::format("--images {}: the folder has no files", images_dir));

  const std::map<std::string, fs::path> masks = masks_by_stem(masks_dir);
  std::vector<PreparedInput> inputs;
  std::map<std::string, std::string> written;  // output stem -> input that took it
  for (const fs::path& file : files) {
    PreparedInput input;
    input.input = file.filename().string();
    const std::string stem = file.stem().string();
    try {
      if (!is_image_file(file)) throw Error("not an image file (by its extension)");
      if (const auto taken = written.find(stem); taken != written.end())
        throw Error(fmt::format("{} already gives {}.png", taken->second, stem));
      LoadedImage photo;
      try {
        photo = read_image_rgb(file.string());
      } catch (const Error& error) {
        throw Error(fmt::format("unreadable: {}", error.what()));
      }
      input.notes = photo.notes;
      std::optional<at::Tensor> user_mask;
      if (const auto mask_file = masks.find(stem); mask_file != masks.end()) {
        try {
          user_mask = read_image_rgb(mask_file->second.string()).pixels;
        } catch (const Error& error) {
          throw Error(fmt::format("its mask is unreadable: {}", error.what()));
        }
      }
      const PreparedImage prepared = prepare_image(photo.pixels, user_mask, options, detector);
      input.image = stem + ".png";
      input.mask = stem + "_mask.png";
      write_png((fs::path(out_dir) / input.image).string(), prepared.image);
      write_png((fs::path(out_dir) / input.mask).string(), prepared.mask.unsqueeze(2));
      input.status = "prepared";
      input.mask_source = prepared.automatic_mask ? "automatic" : "user";
      input.subject = prepared.subject;
      input.crop = prepared.crop;
      written[stem] = input.input;
    } catch (const Error& error) {
      input.status = "skipped";
      input.reason = error.what();
    }
    if (on_input) on_input(input);
    inputs.push_back(std::move(input));
  }

  nlohmann::json report = {{"class", options.class_word}, {"size", options.size}, {"images", images_dir},
                           {"masks", masks_dir}, {"inputs", nlohmann::json::array()}};
  int64_t prepared = 0;
  for (const PreparedInput& input : inputs) {
    report["inputs"].push_back(to_json(input));
    prepared += input.status == "prepared";
  }
  if (prepared == 0)
    throw Error(fmt::format("none of the {} files in {} could be prepared", inputs.size(), images_dir));
  report["prepared"] = prepared;
  report["skipped"] = static_cast<int64_t>(inputs.size()) - prepared;
  write_file_atomic((fs::path(out_dir) / "prepare.json").string(), report.dump(2) + "\n");
  return inputs;
}

nlohmann::json to_json(const PreparedInput& input) {
  nlohmann::json json = {{"input", input.input}, {"status", input.status}};
  if (input.status == "prepared") {
    json["image"] = input.image;
    json["mask"] = input.mask;
    json["mask_source"] = input.mask_source;
    json["subject"] = to_json(input.subject);  // [x, y, width, height] in the photo
    json["crop"] = to_json(input.crop);
  } else {
    json["reason"] = input.reason;
  }
  if (!input.notes.empty()) json["notes"] = input.notes;
  return json;
}

}  // namespace singleinsert
