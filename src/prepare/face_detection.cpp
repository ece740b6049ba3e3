#include "singleinsert/prepare/face_detection.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include "singleinsert/core/error.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

constexpr const char* kCascadeName = "haarcascade_frontalface_alt2.xml";
// Detection runs on a copy whose longer side is at most this: faces the crop can use stay far
// above the cascade's 20-pixel window, and large photos take a fraction of a second.
constexpr int kDetectionSide = 1024;

cv::Mat view_of(const at::Tensor& pixels) {
  if (pixels.scalar_type() != at::kByte || pixels.dim() != 3 || pixels.size(2) != 3 || !pixels.is_contiguous())
    throw Error("expected a contiguous uint8 [H, W, 3] RGB image");
  return cv::Mat(static_cast<int>(pixels.size(0)), static_cast<int>(pixels.size(1)), CV_8UC3, pixels.data_ptr());
}

}  // namespace

std::string find_face_cascade(const std::string& requested) {
  if (!requested.empty()) {
    if (!fs::is_regular_file(requested)) throw Error(fmt::format("--cascade {}: no such file", requested));
    return requested;
  }
  for (const char* folder : {"/usr/share/opencv4/haarcascades", "/usr/local/share/opencv4/haarcascades",
                             "/usr/share/opencv/haarcascades", "/usr/local/share/opencv/haarcascades"}) {
    const fs::path candidate = fs::path(folder) / kCascadeName;
    if (fs::is_regular_file(candidate)) return candidate.string();
  }
  throw Error(fmt::format(
      "OpenCV's face detector {} was not found in /usr/share/opencv4/haarcascades: install Debian's opencv-data "
      "package (apt-get install opencv-data), or pass --cascade FILE",
      kCascadeName));
}

struct FaceDetector::Cascade {
  cv::CascadeClassifier classifier;
};

FaceDetector::FaceDetector(const std::string& cascade_path) : cascade_(std::make_unique<Cascade>()) {
  if (!cascade_->classifier.load(cascade_path))
    throw Error(fmt::format("{}: not an OpenCV cascade classifier file", cascade_path));
}

FaceDetector::~FaceDetector() = default;
FaceDetector::FaceDetector(FaceDetector&&) noexcept = default;
FaceDetector& FaceDetector::operator=(FaceDetector&&) noexcept = default;

std::vector<Box> FaceDetector::detect(const at::Tensor& pixels) const {
  const cv::Mat rgb = view_of(pixels);
  cv::Mat gray;
  cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
  const double scale = std::min(1.0, static_cast<double>(kDetectionSide) / std::max(gray.cols, gray.rows));
  if (scale < 1.0) cv::resize(gray, gray, cv::Size(), scale, scale, cv::INTER_AREA);
  cv::equalizeHist(gray, gray);
  std::vector<cv::Rect> found;
  cascade_->classifier.detectMultiScale(gray, found, 1.1, 4, 0, cv::Size(24, 24));
  std::vector<Box> faces;
  for (const cv::Rect& r : found)
    faces.push_back({static_cast<int64_t>(r.x / scale), static_cast<int64_t>(r.y / scale),
                     static_cast<int64_t>(r.width / scale), static_cast<int64_t>(r.height / scale)});
  std::stable_sort(faces.begin(), faces.end(),
                   [](const Box& a, const Box& b) { return a.width * a.height > b.width * b.height; });
  return faces;
}

}  // namespace singleinsert
