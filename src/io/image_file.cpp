#include "singleinsert/io/image_file.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
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
  bool jpeg_cut_short = false;
};

// Whether a JPEG's segments end before its end-of-image marker: the decoder would fill the
// missing rows with gray and only print a warning. Walks the marker segments (skipping each by
// its length, so thumbnails inside them do not count) and each scan's entropy-coded data (where
// an FF byte is followed by 00 or a restart marker); data after the marker (a phone's motion
// photo) is not read. `head` is the file's start, already read from `file`; the rest is read here.
bool jpeg_cut_short(const std::string& head, std::ifstream& file) {
  std::string bytes = head;
  bytes.append(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  const auto byte = [&](size_t at) { return static_cast<uint8_t>(bytes[at]); };
  size_t at = 2;  // after the start-of-image marker
  while (at + 1 < bytes.size()) {
    if (byte(at) != 0xFF) return false;  // not a marker where one must be: damaged, the decoder judges
    const uint8_t marker = byte(at + 1);
    if (marker == 0xFF) { ++at; continue; }  // fill byte
    if (marker == 0xD9) return false;       // end of image
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { at += 2; continue; }
    if (at + 3 >= bytes.size()) return true;
    at += 2 + big_endian(bytes, at + 2, 2);
    if (marker != 0xDA) continue;
    // Entropy-coded data up to the next marker that is not a stuffed byte or a restart.
    while (at + 1 < bytes.size() &&
           !(byte(at) == 0xFF && byte(at + 1) != 0x00 && !(byte(at + 1) >= 0xD0 && byte(at + 1) <= 0xD7)))
      ++at;
  }
  return true;
}

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
      if (start_of_frame)
        return {big_endian(head, at + 7, 2), big_endian(head, at + 5, 2), static_cast<uint8_t>(head[at + 9]),
                jpeg_cut_short(head, file)};
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
  if (header.jpeg_cut_short) throw Error(fmt::format("{}: the JPEG is cut short (it has no end-of-image marker)", path));
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
