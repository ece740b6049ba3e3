#include "singleinsert/io/image_file.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "singleinsert/core/error.h"

namespace singleinsert {

LoadedImage read_image_rgb(const std::string& path) {
  if (!std::filesystem::exists(path)) throw Error(fmt::format("{}: no such file", path));
  cv::Mat image = cv::imread(path, cv::IMREAD_UNCHANGED);
  if (image.empty()) throw Error(fmt::format("{}: not a readable image", path));
  LoadedImage out;
  if (image.depth() == CV_16U) {
    image.convertTo(image, CV_8U, 1.0 / 257.0);
    out.notes.push_back("16-bit samples scaled to 8 bits");
  } else if (image.depth() != CV_8U) {
    throw Error(fmt::format("{}: unsupported sample format (expected 8- or 16-bit)", path));
  }
  cv::Mat rgb;
  switch (image.channels()) {
    case 1:
      cv::cvtColor(image, rgb, cv::COLOR_GRAY2RGB);
      out.notes.push_back("grayscale expanded to RGB");
      break;
    case 3: cv::cvtColor(image, rgb, cv::COLOR_BGR2RGB); break;  // OpenCV reads BGR
    case 4:
      cv::cvtColor(image, rgb, cv::COLOR_BGRA2RGB);
      out.notes.push_back("alpha channel dropped");
      break;
    default: throw Error(fmt::format("{}: {} channels are not supported", path, image.channels()));
  }
  out.pixels = at::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, at::kByte).clone();
  return out;
}

}  // namespace singleinsert
