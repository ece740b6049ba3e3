// The metric models of `eval images` against the reference code (tests/data/metrics, made by
// tests/reference/gen_metric_models.py): transformers' CLIPModel and CLIPImageProcessor, its
// ViTModel (DINO's architecture), and lpips.LPIPS(net='alex') v0.1.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <fstream>

#include "golden.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/metrics/clip_model.h"
#include "singleinsert/metrics/concept_metrics.h"
#include "singleinsert/metrics/editing_prompts.h"
#include "singleinsert/metrics/lpips.h"
#include "singleinsert/metrics/vit_model.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

// Measured: at most 5.2e-7 (CLIP's text features); float32 rounding allows no tighter a common bound.
constexpr double kFp32Tolerance = 2e-6;

std::string metrics_data(const std::string& name) {
  return (fs::path(SINGLEINSERT_SOURCE_DIR) / "tests" / "data" / "metrics" / name).string();
}

SafetensorsFile golden() { return SafetensorsFile::open(metrics_data("metrics_golden.safetensors")); }

TEST(MetricModels, ClipModelMatchesTransformers) {
  ClipModel clip = ClipModel::load(metrics_data("clip_tiny"));
  const SafetensorsFile io = golden();
  const at::Tensor text = clip.text_features(io.tensor("clip.input_ids"));
  const at::Tensor image = clip.image_features(io.tensor("clip.pixel_values"));
  EXPECT_TENSOR_NEAR_REL(text, io.tensor("clip.text_embeds"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(image, io.tensor("clip.image_embeds"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(clip.logits_per_image(image, text), io.tensor("clip.logits_per_image"), kFp32Tolerance);
  EXPECT_NEAR(clip.logit_scale(), 2.9, 1e-3);  // the golden's, rounded to float16
}

TEST(MetricModels, ClipImageProcessorMatchesTransformers) {
  const ClipModel clip = ClipModel::load(metrics_data("clip_tiny"));
  const SafetensorsFile io = golden();
  // 77x53 (not square): shortest edge to 32 with PIL bicubic, centre crop, CLIP's mean and std.
  EXPECT_TENSOR_NEAR_ABS(clip.processor()(io.tensor("clip.processor_input")), io.tensor("clip.processor_output"),
                         0.0);
}

TEST(MetricModels, ImageProcessorsReadSizesAsTransformersDoes) {
  const SafetensorsFile io = golden();
  const at::Tensor wide = io.tensor("clip.processor_input");
  // A plain-number "size" is CLIP's shortest edge (older folders write it so)...
  const fs::path folder = fs::temp_directory_path() / "singleinsert-legacy-clip-processor";
  fs::create_directories(folder);
  write_file_atomic((folder / "preprocessor_config.json").string(), R"({"size": 32, "crop_size": 32, "resample": 3})");
  const ImageProcessor legacy = ImageProcessor::from_folder(folder.string(), ImageProcessor::clip(224));
  fs::remove_all(folder);
  EXPECT_TENSOR_NEAR_ABS(legacy(wide), io.tensor("clip.processor_output_legacy"), 0.0);
  // ...and ViT's square, without a crop (facebook/dino-vits16's file: bilinear, ImageNet's mean and std).
  const LoadedVit dino = load_vit_model(metrics_data("dino_tiny"));
  EXPECT_EQ(dino.processor.crop_size, 0);
  EXPECT_TENSOR_NEAR_ABS(dino.processor(wide), io.tensor("dino.processor_output"), 0.0);
}

TEST(MetricModels, DinoVitMatchesTransformers) {
  LoadedVit dino = load_vit_model(metrics_data("dino_tiny"));
  const SafetensorsFile io = golden();
  const at::Tensor pixels = io.tensor("dino.pixel_values");
  EXPECT_TENSOR_NEAR_REL(dino.model->forward(pixels), io.tensor("dino.last_hidden_state"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(dino.model->features(pixels), io.tensor("dino.last_hidden_state").select(1, 0),
                         kFp32Tolerance);
}

TEST(MetricModels, LpipsMatchesReference) {
  Lpips lpips = load_lpips(metrics_data("lpips_alex.safetensors"));
  const SafetensorsFile io = golden();
  const at::Tensor a = io.tensor("lpips.in0"), b = io.tensor("lpips.in1");
  EXPECT_TENSOR_NEAR_REL(lpips->per_layer(a, b), io.tensor("lpips.per_layer"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(lpips->forward(a, b), io.tensor("lpips.distance"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(lpips->forward(io.tensor("lpips.in2"), io.tensor("lpips.in3")),
                         io.tensor("lpips.distance_96x80"), kFp32Tolerance);
  // The three pairs differ by noise of growing strength: so must the distances.
  const at::Tensor d = io.tensor("lpips.distance");
  EXPECT_LT(d[0].item<float>(), d[1].item<float>());
  EXPECT_LT(d[1].item<float>(), d[2].item<float>());
  EXPECT_EQ(lpips->forward(a, a).abs().max().item<float>(), 0.0f);
}

// A copy of a golden folder with one file changed, for the loaders' refusals.
struct BrokenFolder {
  fs::path path;
  explicit BrokenFolder(const std::string& source) {
    path = fs::temp_directory_path() / ("singleinsert-metrics-" + std::to_string(::testing::UnitTest::GetInstance()
                                                                                     ->random_seed()) +
                                        "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::copy(metrics_data(source), path, fs::copy_options::recursive);
  }
  ~BrokenFolder() { fs::remove_all(path); }
};

void expect_error_mentioning(const std::function<void()>& load, const std::string& needle) {
  try {
    load();
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "not one line: " << e.what();
  }
}

TEST(MetricModels, RefuseAFolderOfAnotherKind) {
  expect_error_mentioning([] { ClipModel::load(metrics_data("dino_tiny")); }, "model_type 'vit' is not a CLIP model");
  expect_error_mentioning([] { load_vit_model(metrics_data("clip_tiny")); }, "model_type 'clip' is not a ViT");
  expect_error_mentioning([] { load_lpips(metrics_data("clip_tiny")); }, "a folder");
  expect_error_mentioning([] { load_lpips(metrics_data("clip_tiny/model.safetensors")); }, "net.slice1.0.weight");
  expect_error_mentioning([] { ClipModel::load(metrics_data("no_such_folder")); }, "not a folder");
}

// Rewrites a weights file without one tensor.
void remove_tensor(const fs::path& file, const std::string& removed) {
  const SafetensorsFile weights = SafetensorsFile::open(file.string());
  NamedTensors kept;
  for (const std::string& key : weights.keys())
    if (key != removed) kept.emplace_back(key, weights.tensor(key));
  save_safetensors(file.string(), kept);
}

TEST(MetricModels, NameAMissingTensor) {
  BrokenFolder dino("dino_tiny");
  remove_tensor(dino.path / "model.safetensors", "encoder.layer.1.attention.attention.query.weight");
  expect_error_mentioning([&] { load_vit_model(dino.path.string()); }, "encoder.layer.1.attention.attention.query.weight");
  BrokenFolder clip("clip_tiny");
  remove_tensor(clip.path / "model.safetensors", "text_projection.weight");
  expect_error_mentioning([&] { ClipModel::load(clip.path.string()); }, "text_projection.weight");
}

TEST(MetricModels, AClipModelSavedLoadsBackTheSame) {
  ClipEncoderConfig encoder;
  encoder.hidden_size = 16;
  encoder.intermediate_size = 32;
  encoder.num_hidden_layers = 1;
  encoder.num_attention_heads = 2;
  ClipTextConfig text;
  text.encoder = encoder;
  text.vocab_size = 50;
  ClipVisionConfig vision;
  vision.encoder = encoder;
  vision.image_size = 16;
  vision.patch_size = 8;
  vision.projection_dim = 8;
  at::Generator generator = at::detail::createCPUGenerator(3);
  ClipModel created = ClipModel::create(text, vision, generator);
  const fs::path folder = fs::temp_directory_path() / "singleinsert-clip-roundtrip";
  fs::remove_all(folder);
  created.save(folder.string());
  ClipModel loaded = ClipModel::load(folder.string());
  fs::remove_all(folder);
  at::NoGradGuard no_grad;
  const at::Tensor ids = at::randint(0, 49, {2, 77}, at::kLong);
  const at::Tensor pixels = at::randn({2, 3, 16, 16});
  EXPECT_TRUE(at::equal(loaded.text_features(ids), created.text_features(ids)));
  EXPECT_TRUE(at::equal(loaded.image_features(pixels), created.image_features(pixels)));
  EXPECT_FLOAT_EQ(loaded.logit_scale(), created.logit_scale());
  EXPECT_NEAR(created.logit_scale(), std::log(1 / 0.07), 1e-6);
  EXPECT_EQ(loaded.processor().crop_size, 16);
}

TEST(ConceptMetrics, RegionsKeepTheirPixelsAndFillTheRestWithGrey) {
  const at::Tensor pixels = at::randint(0, 256, {4, 5, 3}, at::kByte);
  at::Tensor mask = at::zeros({4, 5}, at::kByte);
  mask.index_put_({1, 2}, 255);
  mask.index_put_({3, 0}, 128);  // above half: inside
  mask.index_put_({0, 0}, 127);  // not above half: outside
  const at::Tensor foreground = region_image(pixels, mask, true), background = region_image(pixels, mask, false);
  for (int64_t y = 0; y < 4; ++y)
    for (int64_t x = 0; x < 5; ++x) {
      const bool inside = (y == 1 && x == 2) || (y == 3 && x == 0);
      const at::Tensor grey = at::full({3}, kRegionFill, at::kByte);
      EXPECT_TRUE(at::equal(foreground[y][x], inside ? pixels[y][x] : grey)) << y << "," << x;
      EXPECT_TRUE(at::equal(background[y][x], inside ? grey : pixels[y][x])) << y << "," << x;
    }
}

TEST(ConceptMetrics, EditingPromptsMatchWithTheTriggerAndDropItForClipT) {
  const std::string path = (fs::temp_directory_path() / "singleinsert-editing-list.json").string();
  write_file_atomic(path, R"({"prompts": [{"prompt": "a photo of * face wearing a hat",
                                           "edits": [{"name": "hat", "present": "a face wearing a hat",
                                                      "absent": "a face"}]}]})");
  const EditingPromptList list = EditingPromptList::load(path);
  fs::remove(path);
  ASSERT_NE(list.find("A photo of  <v> face wearing a hat ", "<v>"), nullptr);
  EXPECT_EQ(list.find("a photo of <v> face wearing a hat", "<w>"), nullptr);
  EXPECT_EQ(list.find("a photo of <v> face wearing sunglasses", "<v>"), nullptr);
  EXPECT_EQ(prompt_without_trigger("a photo of a * face wearing a hat", "*"), "a photo of a face wearing a hat");
}

}  // namespace
}  // namespace singleinsert
