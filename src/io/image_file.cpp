#include "singleinsert/io/image_file.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <utility>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "singleinsert/core/error.h"

namespace singleinsert {
namespace {

constexpr int64_t kMaxMegapixels = 100;

uint32_t big_endian(const std::string& bytes, size_t at, int width) {
  uint32_t value = 0;
  for (int i = 0; i < width; ++i) value = (value << 8) | static_cast<uint8_t>(bytes[at + i]);
  return value;
}

struct ImageHeader {
  int64_t width = 0, height = 0;
  int jpeg_components = 0;  // 4: CMYK (or YCCK), which the decoder converts to colour
};

// Width and height from a PNG's IHDR or a JPEG's start-of-frame marker, without decoding; zeros
// for other formats (and for headers this cannot read, which the decoder then judges).
ImageHeader read_header(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::string head(256 * 1024, '\0');
  file.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(file.gcount()));
  if (head.size() >= 24 && head.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0 && head.compare(12, 4, "IHDR") == 0)
    return {big_endian(head, 16, 4), big_endian(head, 20, 4), 0};
  if (head.size() >= 4 && static_cast<uint8_t>(head[0]) == 0xFF && static_cast<uint8_t>(head[1]) == 0xD8) {
    size_t at = 2;
    while (at + 9 < head.size() && static_cast<uint8_t>(head[at]) == 0xFF) {
      const uint8_t marker = static_cast<uint8_t>(head[at + 1]);
      const bool start_of_frame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (start_of_frame) return {big_endian(head, at + 7, 2), big_endian(head, at + 5, 2), static_cast<uint8_t>(head[at + 9])};
      at += 2 + big_endian(head, at + 2, 2);
    }
  }
  return {};
}

void check_size(const std::string& path, int64_t width, int64_t height) {
  if (width * height > kMaxMegapixels * 1000000)
    throw Error(fmt::format("{}: the image is {}x{} pixels ({} megapixels), more than the {} this reads; scale it down",
                            path, width, height, width * height / 1000000, kMaxMegapixels));
}

}  // namespace

LoadedImage read_image_rgb(const std::string& path) {
  if (!std::filesystem::exists(path)) throw Error(fmt::format("{}: no such file", path));
  // Checked from the header first, so that a huge image is refused before it is decoded.
  const ImageHeader header = read_header(path);
  check_size(path, header.width, header.height);
  cv::Mat image = cv::imread(path, cv::IMREAD_UNCHANGED);
  if (image.empty()) throw Error(fmt::format("{}: not a readable image", path));
  check_size(path, image.cols, image.rows);
  LoadedImage out;
  if (header.jpeg_components == 4) out.notes.push_back("CMYK converted to RGB");
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
