// Image and PNG metadata files.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <opencv2/imgcodecs.hpp>

#include "cli_runner.h"
#include "singleinsert/core/error.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/io/png.h"

namespace singleinsert {
namespace {

TEST(Png, RoundTripsPixelsAndText) {
  const std::string path = testing::fresh_temp_dir("png") + "/image.png";
  const at::Tensor image = at::randint(0, 256, {5, 7, 3}, at::kByte);
  write_png(path, image, {{"parameters", "a cat\nSteps: 4"}, {"note", "caf\xC3\xA9 \xE2\x98\x95"}});
  EXPECT_TRUE(at::equal(read_image_rgb(path).pixels, image));
  const auto text = read_png_text(path);
  EXPECT_EQ(text.at("parameters"), "a cat\nSteps: 4");
  EXPECT_EQ(text.at("note"), "caf\xC3\xA9 \xE2\x98\x95");  // UTF-8 through iTXt
}

// PNG keywords are 1-79 printable characters without leading, trailing or double spaces; a NUL
// in one (found by fuzz_png_text) split it into a different keyword and value on reading.
TEST(Png, RefusesKeywordsThatWouldNotReadBack) {
  const at::Tensor pixel = at::zeros({1, 1, 3}, at::kByte);
  for (const std::string& bad : std::vector<std::string>{std::string("a\0b", 3), std::string(""), std::string(80, 'k'), std::string(" lead"),
                                std::string("trail "), std::string("two  spaces"), std::string("caf\xc3\xa9")})
    EXPECT_THROW(encode_png(pixel, {{bad, "value"}}), Error) << bad;
  EXPECT_NO_THROW(encode_png(pixel, {{std::string(79, 'k'), "value"}}));
  EXPECT_NO_THROW(encode_png(pixel, {{"Creation Time", "value"}}));
}

TEST(ImageFile, CmykJpegIsConvertedToRgbAndSaysSo) {
  const LoadedImage image = read_image_rgb(std::string(SINGLEINSERT_SOURCE_DIR) + "/tests/data/cmyk_red_to_blue.jpg");
  EXPECT_EQ(image.notes, std::vector<std::string>{"CMYK converted to RGB"});
  ASSERT_EQ(image.pixels.sizes(), (at::IntArrayRef{64, 64, 3}));
  const at::Tensor top = image.pixels[0][32].to(at::kInt), bottom = image.pixels[63][32].to(at::kInt);
  EXPECT_GT(top[0].item<int>(), 220);  // red, not its CMYK inverse (cyan)
  EXPECT_LT(top[2].item<int>(), 40);
  EXPECT_LT(bottom[0].item<int>(), 40);
  EXPECT_GT(bottom[2].item<int>(), 220);
}

TEST(ImageFile, ConvertsAndReportsUnusualFormats) {
  const std::string dir = testing::fresh_temp_dir("formats");
  cv::imwrite(dir + "/gray.png", cv::Mat(4, 4, CV_8UC1, cv::Scalar(100)));
  cv::imwrite(dir + "/rgba.png", cv::Mat(4, 4, CV_8UC4, cv::Scalar(10, 20, 30, 40)));
  cv::imwrite(dir + "/deep.png", cv::Mat(4, 4, CV_16UC3, cv::Scalar(65535, 0, 257)));
  const LoadedImage gray = read_image_rgb(dir + "/gray.png");
  EXPECT_EQ(gray.notes, std::vector<std::string>{"grayscale expanded to RGB"});
  EXPECT_EQ(gray.pixels[0][0][2].item<int>(), 100);
  const LoadedImage rgba = read_image_rgb(dir + "/rgba.png");
  EXPECT_EQ(rgba.notes, std::vector<std::string>{"alpha channel dropped"});
  EXPECT_EQ(rgba.pixels[0][0][0].item<int>(), 30);  // BGRA (10, 20, 30) is RGB (30, 20, 10)
  const LoadedImage deep = read_image_rgb(dir + "/deep.png");
  EXPECT_EQ(deep.notes, std::vector<std::string>{"16-bit samples scaled to 8 bits"});
  EXPECT_EQ(deep.pixels[0][0][0].item<int>(), 1);
  EXPECT_EQ(deep.pixels[0][0][2].item<int>(), 255);
  EXPECT_THROW(read_image_rgb(dir + "/missing.png"), Error);
  std::FILE* junk = std::fopen((dir + "/junk.png").c_str(), "wb");
  std::fputs("not an image", junk);
  std::fclose(junk);
  EXPECT_THROW(read_image_rgb(dir + "/junk.png"), Error);
}

}  // namespace
}  // namespace singleinsert
