// Data preparation against the reference (golden/singleinsert_losses/inputs.safetensors, made by
// train.py's SingleInsertDataset with PIL and torchvision): the image tensor, the mask resized with
// PIL's antialiased bilinear filter and averaged over channels, and the source posterior.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "golden.h"
#include "singleinsert/core/error.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/training/image_preprocess.h"
#include "singleinsert/training/source_data.h"

namespace singleinsert {
namespace {

TEST(TrainingData, MatchesSingleInsertDataset) {
  const SafetensorsFile golden = testing::golden_file("singleinsert_losses/inputs.safetensors");
  const at::Tensor image = read_image_rgb(testing::golden_path("singleinsert_losses/instance_image.png")).pixels;
  const at::Tensor mask = read_image_rgb(testing::golden_path("singleinsert_losses/mask.png")).pixels;
  // PIL's resize, bit for bit: the reference's mask went 64 -> 32 through it.
  EXPECT_TRUE(at::equal(pil_resize_bilinear(mask, 32, 32).permute({2, 0, 1}).to(at::kFloat) / 255.0,
                        golden.tensor("mask_resized_3ch")));
  const PreparedSource source = prepare_source({image, mask}, 64, 32, 224, "half", CropMode::kCenter);
  EXPECT_TRUE(at::equal(source.pixels[0], golden.tensor("pixel_values")[0]));
  EXPECT_TENSOR_NEAR_ABS(source.mask_latent[0], golden.tensor("mask_latent")[0], 1e-7);
  EXPECT_TRUE(source.warnings.empty());

  auto bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  at::NoGradGuard no_grad;
  const VaePosterior posterior = bundle->vae->encode(source.pixels);
  EXPECT_TENSOR_NEAR_REL(posterior.mean[0], golden.tensor("posterior_mean")[0], 1e-5);
  EXPECT_TENSOR_NEAR_REL(posterior.std[0], golden.tensor("posterior_std")[0], 1e-5);
  const at::Tensor z0 = (posterior.mean + posterior.std * golden.tensor("vae_noise")) * 0.18215;
  EXPECT_TENSOR_NEAR_REL(z0, golden.tensor("z0"), 1e-5);
}

TEST(TrainingData, PilResizeDownsamplesWithAWidenedTriangleFilter) {
  // A one-pixel line spread by 4x reduction: PIL's filter spans 8 source pixels per output.
  at::Tensor image = at::zeros({8, 8, 1}, at::kByte);
  image.select(1, 3).fill_(255);
  const at::Tensor reduced = pil_resize_bilinear(image, 2, 2);
  EXPECT_EQ(reduced.sizes(), at::IntArrayRef({2, 2, 1}));
  EXPECT_GT(reduced[0][0][0].item<int>(), 0);
  EXPECT_GT(reduced[0][1][0].item<int>(), 0);  // the wide filter reaches across
  EXPECT_TRUE(at::equal(pil_resize_bilinear(image, 8, 8), image));
  const at::Tensor wide = at::arange(6 * 4 * 3, at::kByte).view({6, 4, 3});
  EXPECT_EQ(center_crop_square(wide).sizes(), at::IntArrayRef({4, 4, 3}));
  EXPECT_TRUE(at::equal(center_crop_square(wide)[0], wide[1]));
}

TEST(TrainingData, RejectsMismatchesAndWarnsAboutCrops) {
  const at::Tensor image = at::full({40, 60, 3}, 128, at::kByte);
  at::Tensor mask = at::zeros({40, 60, 1}, at::kByte);
  mask.narrow(0, 10, 20).fill_(255);
  const PreparedSource cropped = prepare_source({image, mask}, 32, 16, 32, "half", CropMode::kCenter);
  ASSERT_EQ(cropped.warnings.size(), 1u);
  EXPECT_NE(cropped.warnings[0].find("centred 40x40"), std::string::npos);
  EXPECT_THROW(prepare_source({image, mask}, 32, 16, 32, "half", CropMode::kNone), Error);
  EXPECT_THROW(prepare_source({image, at::zeros({40, 60, 1}, at::kByte)}, 32, 16, 32, "half", CropMode::kCenter), Error);
  EXPECT_THROW(prepare_source({image, at::zeros({30, 60, 1}, at::kByte)}, 32, 16, 32, "half", CropMode::kCenter), Error);
}

}  // namespace
}  // namespace singleinsert
