// invert, finetune and generate --concept as users run them on sd_tiny: the whole chain,
// composition of concepts, Ctrl-C and --resume, divergence, and every bad input of the training
// commands (one clear line, non-zero exit, nothing lost).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <thread>

#include "cli_runner.h"
#include "golden.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/io/image_file.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

using testing::CliResult;
using testing::fresh_temp_dir;
using testing::run_cli;

std::string tiny_preset(const std::string& dir, int stage1_steps = 3, double lr = 1e-3, int checkpoint_every = 0) {
  return testing::write_tiny_training_preset(dir, stage1_steps, lr, checkpoint_every);
}

std::string image_file() { return testing::golden_path("singleinsert_losses/instance_image.png"); }
std::string mask_file() { return testing::golden_path("singleinsert_losses/mask.png"); }

std::vector<std::string> invert_args(const std::string& preset, const std::string& out,
                                     const std::string& image = image_file(), const std::string& mask = mask_file(),
                                     const std::string& class_word = "teddy bear") {
  return {"invert", "--model", testing::golden_path("sd_tiny"), "--image", image, "--mask", mask, "--class", class_word,
          "--preset", preset, "--out", out};
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

int64_t count_lines(const std::string& path) {
  if (!fs::exists(path)) return 0;
  const std::string text = read_file(path);
  return std::count(text.begin(), text.end(), '\n');
}

void expect_clean_failure(const CliResult& result, const std::string& fragment) {
  EXPECT_NE(result.exit_code, 0);
  const size_t error_line = result.err.find("error: ");
  ASSERT_NE(error_line, std::string::npos) << result.err;
  EXPECT_EQ(result.err.find('\n', error_line), result.err.size() - 1) << "one line, at the end: " << result.err;
  EXPECT_NE(result.err.find(fragment), std::string::npos) << result.err;
}

at::Tensor embedding_of(const std::string& concept) {
  const SafetensorsFile file = SafetensorsFile::open(concept + "/embedding.safetensors");
  return file.tensor(file.keys().front());
}

TEST(CliTraining, InvertFinetuneAndGenerateWithConcepts) {
  const std::string dir = fresh_temp_dir("chain");
  const std::string preset = tiny_preset(dir);
  const CliResult inverted = run_cli(with(invert_args(preset, dir + "/stage1"), {"--log-json", dir + "/log.jsonl"}));
  ASSERT_EQ(inverted.exit_code, 0) << inverted.err;
  EXPECT_EQ(inverted.out, dir + "/stage1\n");
  for (const char* file : {"concept.json", "embedding.safetensors", "encoder.safetensors", "source.png", "mask.png", "loss.png"})
    EXPECT_TRUE(fs::exists(dir + "/stage1/" + file)) << file;
  EXPECT_FALSE(fs::exists(dir + "/stage1.partial"));
  const auto concept = nlohmann::json::parse(read_file(dir + "/stage1/concept.json"));
  EXPECT_EQ(concept["trigger"], "*");
  EXPECT_EQ(concept["class"], "teddy bear");
  EXPECT_EQ(concept["stage"], 1);
  EXPECT_EQ(concept["history"].size(), 3u);
  EXPECT_EQ(concept["source"]["image_sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(concept["base_model"]["unet_sha256"].get<std::string>().size(), 64u);
  EXPECT_GT(concept["wall_time_seconds"]["stage1"].get<double>(), 0.0);
  const SafetensorsFile embedding = SafetensorsFile::open(dir + "/stage1/embedding.safetensors");
  EXPECT_EQ(embedding.keys(), std::vector<std::string>{"*"});
  EXPECT_EQ(embedding.entry("*").shape, (std::vector<int64_t>{1, 32}));
  EXPECT_EQ(count_lines(dir + "/log.jsonl"), 3);

  const CliResult finetuned = run_cli({"finetune", "--model", testing::golden_path("sd_tiny"), "--concept",
                                       dir + "/stage1", "--out", dir + "/stage2", "--preview"});
  ASSERT_EQ(finetuned.exit_code, 0) << finetuned.err;
  const auto refined = nlohmann::json::parse(read_file(dir + "/stage2/concept.json"));
  EXPECT_EQ(refined["stage"], 2);
  EXPECT_EQ(refined["history"].size(), 5u);  // stage I's 3 steps, then stage II's 2
  EXPECT_EQ(refined["lora"]["modules"], 56);
  EXPECT_TRUE(fs::exists(dir + "/stage2/preview.png"));
  EXPECT_EQ(SafetensorsFile::open(dir + "/stage2/lora.safetensors").size(), 112u);

  const CliResult generated = run_cli({"generate", "--model", testing::golden_path("sd_tiny"), "--concept",
                                       dir + "/stage2", "--prompt", "a photo of * teddy bear on the beach", "--steps",
                                       "3", "--out", dir + "/images"});
  ASSERT_EQ(generated.exit_code, 0) << generated.err;
  const auto run = nlohmann::json::parse(read_file(dir + "/images/run.json"));
  EXPECT_EQ(run["concepts"].size(), 1u);

  // Two concepts, different triggers, one prompt: they compose without joint training.
  const CliResult composed =
      run_cli({"generate", "--model", testing::golden_path("sd_tiny"), "--concept", dir + "/stage1:sksa", "--concept",
               dir + "/stage2:sksb", "--prompt", "sksa teddy bear next to sksb teddy bear", "--steps", "2", "--out",
               dir + "/composed"});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  const CliResult plain = run_cli({"generate", "--model", testing::golden_path("sd_tiny"), "--prompt",
                                   "sksa teddy bear next to sksb teddy bear", "--steps", "2", "--out", dir + "/plain"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_FALSE(at::equal(read_image_rgb(dir + "/composed/0000.png").pixels, read_image_rgb(dir + "/plain/0000.png").pixels));
  expect_clean_failure(run_cli({"generate", "--model", testing::golden_path("sd_tiny"), "--concept", dir + "/stage1",
                                "--concept", dir + "/stage2", "--prompt", "* teddy bear", "--out", dir + "/clash"}),
                       "two concepts use the trigger '*'");
  expect_clean_failure(run_cli({"generate", "--model", testing::golden_path("sd_tiny"), "--concept", dir + "/stage2",
                                "--prompt", "a teddy bear", "--out", dir + "/untriggered"}),
                       "uses none of the concept triggers ('*')");
  expect_clean_failure(run_cli({"finetune", "--model", testing::golden_path("sd_tiny"), "--concept", dir + "/stage2",
                                "--out", dir + "/again"}),
                       "already finetuned (stage 2)");
}

TEST(CliTraining, InterruptedRunsResumeToTheSameResult) {
  const std::string dir = fresh_temp_dir("interrupt");
  const std::string preset = tiny_preset(dir, /*stage1_steps=*/12, 1e-3, /*checkpoint_every=*/0);
  const CliResult reference = run_cli(invert_args(preset, dir + "/reference"));
  ASSERT_EQ(reference.exit_code, 0) << reference.err;

  const std::string log = dir + "/log.jsonl";
  const auto process = testing::spawn_cli(with(invert_args(preset, dir + "/interrupted"), {"--log-json", log}));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && count_lines(log) < 2)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(process.pid, SIGINT);
  const CliResult stopped = testing::wait_cli(process);
  expect_clean_failure(stopped, "interrupted at stage I step");
  EXPECT_NE(stopped.err.find("--resume"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir + "/interrupted.partial/checkpoint/state.json"));
  EXPECT_FALSE(fs::exists(dir + "/interrupted"));

  // Without --resume the leftovers are not silently discarded.
  expect_clean_failure(run_cli(invert_args(preset, dir + "/interrupted")), "pass --resume to continue it");
  const CliResult resumed = run_cli({"invert", "--model", testing::golden_path("sd_tiny"), "--out", dir + "/interrupted",
                                     "--resume", "--image", image_file(), "--mask", mask_file(), "--class", "ignored"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_TRUE(at::equal(embedding_of(dir + "/interrupted"), embedding_of(dir + "/reference")));
  const auto a = nlohmann::json::parse(read_file(dir + "/interrupted/concept.json"))["history"];
  const auto b = nlohmann::json::parse(read_file(dir + "/reference/concept.json"))["history"];
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i]["loss"], b[i]["loss"]) << "step " << i + 1;
}

TEST(CliTraining, DivergenceStopsAndKeepsTheLastGoodCheckpoint) {
  const std::string dir = fresh_temp_dir("nan");
  const std::string preset = tiny_preset(dir, 4, /*lr=*/1e30, /*checkpoint_every=*/1);
  const CliResult result = run_cli(invert_args(preset, dir + "/concept"));
  expect_clean_failure(result, "the loss became NaN at stage I step 2");
  EXPECT_NE(result.err.find("the last good checkpoint, step 1, is kept in " + dir + "/concept.partial"),
            std::string::npos)
      << result.err;
  const auto state = nlohmann::json::parse(read_file(dir + "/concept.partial/checkpoint/state.json"));
  EXPECT_EQ(state["step"], 1);
}

TEST(CliTraining, BadInputsFailCleanly) {
  const std::string dir = fresh_temp_dir("bad_training");
  const std::string preset = tiny_preset(dir, 1);
  const cv::Mat mask = cv::imread(mask_file(), cv::IMREAD_UNCHANGED);
  const cv::Mat image = cv::imread(image_file(), cv::IMREAD_UNCHANGED);

  cv::Mat small;
  cv::resize(mask, small, {48, 48});
  cv::imwrite(dir + "/small_mask.png", small);
  expect_clean_failure(run_cli(invert_args(preset, dir + "/c", image_file(), dir + "/small_mask.png")),
                       "the mask is 48x48 but the image is 64x64");
  cv::imwrite(dir + "/empty_mask.png", cv::Mat(64, 64, CV_8UC1, cv::Scalar(0)));
  expect_clean_failure(run_cli(invert_args(preset, dir + "/c", image_file(), dir + "/empty_mask.png")),
                       "the mask has no foreground");
  write_file_atomic(dir + "/junk.png", "not an image");
  expect_clean_failure(run_cli(invert_args(preset, dir + "/c", dir + "/junk.png")), "not a readable image");
  expect_clean_failure(run_cli(invert_args(preset, dir + "/c", dir + "/missing.png")), "no such file");
  expect_clean_failure(run_cli(invert_args(preset, dir + "/c", image_file(), mask_file(), "   ")),
                       "the class word '   ' tokenizes to nothing");
  EXPECT_FALSE(fs::exists(dir + "/c"));
  EXPECT_FALSE(fs::exists(dir + "/c.partial"));

  // Converted inputs are accepted, and the conversion is reported.
  cv::Mat gray, rgba, deep;
  cv::cvtColor(image, gray, cv::COLOR_BGR2GRAY);
  cv::cvtColor(image, rgba, cv::COLOR_BGR2BGRA);
  image.convertTo(deep, CV_16UC3, 257.0);
  cv::imwrite(dir + "/gray.png", gray);
  cv::imwrite(dir + "/rgba.png", rgba);
  cv::imwrite(dir + "/deep.png", deep);
  for (const auto& [file, note] : std::vector<std::pair<std::string, std::string>>{
           {"gray.png", "grayscale expanded to RGB"}, {"rgba.png", "alpha channel dropped"},
           {"deep.png", "16-bit samples scaled to 8 bits"}}) {
    const CliResult converted = run_cli(invert_args(preset, dir + "/from_" + file, dir + "/" + file));
    EXPECT_EQ(converted.exit_code, 0) << converted.err;
    EXPECT_NE(converted.err.find(note), std::string::npos) << converted.err;
  }
  cv::imwrite(dir + "/full_mask.png", cv::Mat(64, 64, CV_8UC1, cv::Scalar(255)));
  const CliResult full = run_cli(invert_args(preset, dir + "/full", image_file(), dir + "/full_mask.png"));
  EXPECT_EQ(full.exit_code, 0) << full.err;
  EXPECT_NE(full.err.find("the background loss L_bg is zero"), std::string::npos) << full.err;

  // An existing concept is not replaced unless asked.
  const std::string precious = read_file(dir + "/full/concept.json");
  expect_clean_failure(run_cli(invert_args(preset, dir + "/full")), "already exists (pass --overwrite");
  EXPECT_EQ(read_file(dir + "/full/concept.json"), precious);
  EXPECT_EQ(run_cli(with(invert_args(preset, dir + "/full"), {"--overwrite"})).exit_code, 0);

  // A concept trained on another base model.
  const fs::path other = fresh_temp_dir("other_model");
  const fs::path source = testing::golden_path("sd_tiny");
  fs::copy(source, other, fs::copy_options::recursive);
  const SafetensorsFile unet = SafetensorsFile::open((source / "unet/diffusion_pytorch_model.safetensors").string());
  NamedTensors tensors;
  for (const auto& key : unet.keys()) tensors.emplace_back(key, key == "conv_in.bias" ? unet.tensor(key) + 1 : unet.tensor(key));
  fs::permissions(other / "unet", fs::perms::owner_all);
  fs::remove(other / "unet/diffusion_pytorch_model.safetensors");
  save_safetensors((other / "unet/diffusion_pytorch_model.safetensors").string(), tensors);
  expect_clean_failure(run_cli({"generate", "--model", other.string(), "--concept", dir + "/full", "--prompt",
                                "* teddy bear", "--out", dir + "/other_images"}),
                       "trained on another base model");
  expect_clean_failure(run_cli({"finetune", "--model", other.string(), "--concept", dir + "/full", "--out", dir + "/ft"}),
                       "trained on another base model");
  expect_clean_failure(run_cli({"finetune", "--model", testing::golden_path("sd_tiny"), "--concept", dir + "/nothing",
                                "--out", dir + "/ft"}),
                       "no such concept folder");
}

TEST(CliTraining, EncoderStartsFromAClipVisionCheckpoint) {
  // golden/clip_vision_tiny has the architecture of this preset's encoder (64 px, patch 32, width 32).
  const std::string dir = fresh_temp_dir("encoder_weights");
  const nlohmann::json preset = {
      {"resolution", 32},
      {"stage1", {{"steps", 1}, {"batch", 1}, {"lr", 1e-9}}},
      {"encoder",
       {{"image_size", 64}, {"patch_size", 32}, {"hidden_size", 32}, {"intermediate_size", 37},
        {"num_hidden_layers", 2}, {"num_attention_heads", 4}}}};
  write_file_atomic(dir + "/preset.json", preset.dump());
  const CliResult result = run_cli(with(invert_args(dir + "/preset.json", dir + "/concept"),
                                        {"--encoder-weights", testing::golden_path("clip_vision_tiny/model.safetensors")}));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const SafetensorsFile trained = SafetensorsFile::open(dir + "/concept/encoder.safetensors");
  const SafetensorsFile clip = testing::golden_file("clip_vision_tiny/model.safetensors");
  // One step at lr 1e-9 leaves the backbone where the checkpoint put it.
  EXPECT_TENSOR_NEAR_ABS(trained.tensor("vision_model.embeddings.patch_embedding.weight"),
                         clip.tensor("vision_model.embeddings.patch_embedding.weight"), 1e-6);
  EXPECT_EQ(nlohmann::json::parse(read_file(dir + "/concept/concept.json"))["training"]["encoder_normalization"], "clip");
  const CliResult wrong = run_cli(with(invert_args(tiny_preset(dir), dir + "/mismatch"),
                                       {"--encoder-weights", testing::golden_path("clip_vision_tiny/model.safetensors")}));
  expect_clean_failure(wrong, "has shape");
}

}  // namespace
}  // namespace singleinsert
