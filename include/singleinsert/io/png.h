#pragma once
// PNG files with text chunks (generation parameters), written atomically.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace singleinsert {

using TextChunks = std::vector<std::pair<std::string, std::string>>;

// pixels: uint8 [H, W, 3] RGB (or [H, W, 1]). Text values are stored as tEXt when they are
// Latin-1, as uncompressed UTF-8 iTXt otherwise.
std::string encode_png(const at::Tensor& pixels, const TextChunks& text = {});
void write_png(const std::string& path, const at::Tensor& pixels, const TextChunks& text = {});

// The tEXt / iTXt chunks of a PNG file (keyword -> text, UTF-8).
std::map<std::string, std::string> read_png_text(const std::string& path);

}  // namespace singleinsert
