// The PNG text-chunk reader (generation parameters in images, read back by `singleinsert info`
// and PNG-info tools) on arbitrary bytes, and the writer's round trip: the input is read as a PNG
// file, and also split at its first newline into a keyword and a value that encode_png must
// either refuse with singleinsert::Error or write so that read_png_text returns them unchanged.
#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/io/png.h"

using namespace singleinsert;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* seeds = std::getenv("SINGLEINSERT_FUZZ_WRITE_SEEDS");
  if (!seeds) return 0;
  const at::Tensor pixels = at::zeros({2, 2, 3}, at::kByte);
  write_file_atomic(std::string(seeds) + "/parameters.png",
                    encode_png(pixels, {{"parameters", "* face\nSteps: 50, Sampler: DDIM, Seed: 0, Size: 512x512"},
                                        {"singleinsert", "{\"prompt\":\"caf\xc3\xa9\"}"}}));
  write_file_atomic(std::string(seeds) + "/round_trip.txt", "Comment\nv\xc3\xa4lue");
  std::exit(0);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/dev/shm/singleinsert_fuzz_" + std::to_string(::getpid()) + ".png";
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  write_file_atomic(path, bytes);
  try {
    (void)read_png_text(path);
  } catch (const Error&) {
  }

  const size_t newline = bytes.find('\n');
  const std::string keyword = bytes.substr(0, newline);
  const std::string value = newline == std::string::npos ? "" : bytes.substr(newline + 1);
  static const at::Tensor pixel = at::zeros({1, 1, 3}, at::kByte);
  std::string encoded;
  try {
    encoded = encode_png(pixel, {{keyword, value}});
  } catch (const Error&) {
    return 0;
  }
  write_file_atomic(path, encoded);
  const auto text = read_png_text(path);
  if (text.size() != 1 || text.count(keyword) == 0 || text.at(keyword) != value) {
    std::fprintf(stderr, "PNG text round trip changed keyword '%s' (%zu entries read)\n", keyword.c_str(), text.size());
    std::abort();
  }
  return 0;
}
