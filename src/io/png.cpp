#include "singleinsert/io/png.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <zlib.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {
namespace {

void put_u32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((value >> shift) & 0xff));
}

uint32_t get_u32(const std::string& bytes, size_t at) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value = (value << 8) | static_cast<uint8_t>(bytes[at + i]);
  return value;
}

std::string chunk(const std::string& type, const std::string& data) {
  std::string out;
  put_u32(out, static_cast<uint32_t>(data.size()));
  const std::string body = type + data;
  out += body;
  put_u32(out, static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(body.data()), body.size())));
  return out;
}

// PNG keywords: 1-79 printable characters (we write ASCII), no leading, trailing or double spaces.
bool is_valid_keyword(const std::string& keyword) {
  if (keyword.empty() || keyword.size() > 79 || keyword.front() == ' ' || keyword.back() == ' ') return false;
  for (size_t i = 0; i < keyword.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(keyword[i]);
    if (c < 0x20 || c > 0x7e || (c == ' ' && keyword[i + 1] == ' ')) return false;
  }
  return true;
}

bool is_ascii(const std::string& text) {
  for (unsigned char c : text)
    if (c >= 0x80) return false;
  return true;
}

std::string text_chunk(const std::string& keyword, const std::string& value) {
  if (!is_valid_keyword(keyword))
    throw Error(fmt::format("invalid PNG text keyword '{}'", keyword));
  if (is_ascii(value)) return chunk("tEXt", keyword + std::string(1, '\0') + value);
  // iTXt: keyword, 0, compression flag 0, method 0, empty language tag, 0, empty translation, 0, text.
  return chunk("iTXt", keyword + std::string(1, '\0') + std::string(2, '\0') + std::string(1, '\0') +
                           std::string(1, '\0') + value);
}

constexpr char kSignature[] = "\x89PNG\r\n\x1a\n";

}  // namespace

std::string encode_png(const at::Tensor& pixels, const TextChunks& text) {
  if (pixels.scalar_type() != at::kByte || pixels.dim() != 3 || (pixels.size(2) != 3 && pixels.size(2) != 1))
    throw Error(fmt::format("PNG pixels must be uint8 [H, W, 3] or [H, W, 1], got {} {}", dtype_string(pixels.scalar_type()),
                            shape_string(pixels.sizes())));
  const at::Tensor contiguous = pixels.cpu().contiguous();
  const int channels = static_cast<int>(contiguous.size(2));
  cv::Mat image(static_cast<int>(contiguous.size(0)), static_cast<int>(contiguous.size(1)),
                channels == 3 ? CV_8UC3 : CV_8UC1, contiguous.data_ptr<uint8_t>());
  cv::Mat bgr;
  if (channels == 3) cv::cvtColor(image, bgr, cv::COLOR_RGB2BGR);
  else bgr = image;
  std::vector<uchar> encoded;
  if (!cv::imencode(".png", bgr, encoded)) throw Error("PNG encoding failed");
  std::string bytes(encoded.begin(), encoded.end());
  // Text chunks go right after IHDR (8-byte signature + 25-byte IHDR chunk).
  const size_t after_header = 8 + 12 + get_u32(bytes, 8);
  std::string chunks;
  for (const auto& [keyword, value] : text) chunks += text_chunk(keyword, value);
  bytes.insert(after_header, chunks);
  return bytes;
}

void write_png(const std::string& path, const at::Tensor& pixels, const TextChunks& text) {
  write_file_atomic(path, encode_png(pixels, text));
}

std::map<std::string, std::string> read_png_text(const std::string& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() < 8 || bytes.compare(0, 8, std::string(kSignature, 8)) != 0)
    throw Error(fmt::format("{}: not a PNG file", path));
  std::map<std::string, std::string> out;
  size_t at = 8;
  while (at + 12 <= bytes.size()) {
    const uint32_t length = get_u32(bytes, at);
    if (at + 12 + length > bytes.size()) throw Error(fmt::format("{}: truncated PNG chunk", path));
    const std::string type = bytes.substr(at + 4, 4), data = bytes.substr(at + 8, length);
    const size_t zero = data.find('\0');
    if (type == "tEXt" && zero != std::string::npos) {
      out[data.substr(0, zero)] = data.substr(zero + 1);
    } else if (type == "iTXt" && zero != std::string::npos && zero + 2 < data.size() && data[zero + 1] == '\0') {
      size_t text_start = data.find('\0', zero + 3);                    // end of language tag
      if (text_start != std::string::npos) text_start = data.find('\0', text_start + 1);  // end of translated keyword
      if (text_start != std::string::npos) out[data.substr(0, zero)] = data.substr(text_start + 1);
    }
    if (type == "IEND") break;
    at += 12 + length;
  }
  return out;
}

}  // namespace singleinsert
