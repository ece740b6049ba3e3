// invert, finetune and generate --concept as users run them on sd_tiny: the whole chain,
// composition of concepts, Ctrl-C and --resume, divergence, and every bad input of the training
// commands (one clear line, non-zero exit, nothing lost).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
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

// Runs a training command until its --log-json has two steps, then sends Ctrl-C.
CliResult interrupted_after_two_steps(const std::vector<std::string>& args, const std::string& log) {
  const auto process = testing::spawn_cli(with(args, {"--log-json", log}));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && count_lines(log) < 2)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(process.pid, SIGINT);
  return testing::wait_cli(process);
}

// The same embedding and the same loss at every step.
void expect_same_concepts(const std::string& a_dir, const std::string& b_dir) {
  EXPECT_TRUE(at::equal(embedding_of(a_dir), embedding_of(b_dir)));
  const auto a = nlohmann::json::parse(read_file(a_dir + "/concept.json"))["history"];
  const auto b = nlohmann::json::parse(read_file(b_dir + "/concept.json"))["history"];
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i]["loss"], b[i]["loss"]) << "step " << i + 1;
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

  const CliResult stopped = interrupted_after_two_steps(invert_args(preset, dir + "/interrupted"), dir + "/log.jsonl");
  expect_clean_failure(stopped, "interrupted at stage I step");
  EXPECT_NE(stopped.err.find("--resume"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir + "/interrupted.partial/checkpoint/state.json"));
  EXPECT_FALSE(fs::exists(dir + "/interrupted"));

  // Without --resume the leftovers are not silently discarded.
  expect_clean_failure(run_cli(invert_args(preset, dir + "/interrupted")), "pass --resume to continue it");
  const CliResult resumed = run_cli({"invert", "--model", testing::golden_path("sd_tiny"), "--out", dir + "/interrupted",
                                     "--resume", "--image", image_file(), "--mask", mask_file(), "--class", "ignored"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  expect_same_concepts(dir + "/interrupted", dir + "/reference");
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

// A tiny preset of another method: 32 px, batch 2, `steps` steps.
std::string method_preset(const std::string& dir, const std::string& method, int steps, int checkpoint_every = 0) {
  const std::string path = dir + "/" + method + "_preset.json";
  std::ofstream(path) << nlohmann::json{{"method", method},
                                        {"resolution", 32},
                                        {"steps", steps},
                                        {"batch", 2},
                                        {"learning_rate", 5e-3},
                                        {"checkpoint_every", checkpoint_every}}
                             .dump();
  return path;
}

std::vector<std::string> method_args(const std::string& method, const std::string& preset, const std::string& out) {
  return {"invert", "--model", testing::golden_path("sd_tiny"), "--method", method, "--image", image_file(), "--class",
          "toy", "--preset", preset, "--out", out};
}

TEST(CliTraining, TextualInversionAndCrossInitMakeConceptsThatGenerate) {
  const std::string dir = fresh_temp_dir("methods");
  write_file_atomic(dir + "/names.txt", "Emma Watson\n\nBarack Obama\n  Tom Hanks  \n");
  for (const std::string method : {"textual-inversion", "cross-init"}) {
    std::vector<std::string> args =
        with(method_args(method, method_preset(dir, method, 3), dir + "/" + method), {"--num-vectors", "2"});
    if (method == "cross-init") args = with(args, {"--init-names", dir + "/names.txt", "--preview"});
    const CliResult trained = run_cli(args);
    ASSERT_EQ(trained.exit_code, 0) << trained.err;
    const std::string concept = dir + "/" + method;
    const auto json = nlohmann::json::parse(read_file(concept + "/concept.json"));
    EXPECT_EQ(json["method"], method);
    EXPECT_EQ(json["stage"], 1);
    EXPECT_EQ(json["history"].size(), 3u);
    EXPECT_EQ(json["training"]["num_vectors"], 2);
    EXPECT_TRUE(json["history"][0].contains("noise"));
    EXPECT_EQ(json["history"][0].contains("reg"), method == "cross-init");
    EXPECT_FALSE(fs::exists(concept + "/encoder.safetensors"));
    EXPECT_FALSE(fs::exists(concept + "/mask.png"));  // none was given
    if (method == "cross-init") {  // four prompts in a row, each 32 px and captioned
      const at::Tensor preview = read_image_rgb(concept + "/preview.png").pixels;
      EXPECT_EQ(preview.sizes(), (std::vector<int64_t>{32 + 18, 4 * 32, 3}));
    }
    const at::Tensor embedding = embedding_of(concept);
    EXPECT_EQ(embedding.sizes(), (std::vector<int64_t>{2, 32}));

    // The concept's two vectors are what "*" stands for in prompts.
    const CliResult generated = run_cli({"generate", "--model", testing::golden_path("sd_tiny"), "--concept", concept,
                                         "--prompt", "a photo of *", "--steps", "2", "--out", dir + "/images_" + method});
    ASSERT_EQ(generated.exit_code, 0) << generated.err;
    expect_clean_failure(run_cli({"finetune", "--model", testing::golden_path("sd_tiny"), "--concept", concept, "--out",
                                  dir + "/ft_" + method}),
                         "trained with " + method);
  }
  const at::Tensor ti = embedding_of(dir + "/textual-inversion");
  EXPECT_FALSE(at::equal(ti, embedding_of(dir + "/cross-init")));

  // DreamBooth-LoRA from the textual-inversion concept (its two vectors fixed), with prior
  // preservation on class images the base model draws, and from a plain word.
  const std::string db_preset = dir + "/db_preset.json";
  std::ofstream(db_preset) << nlohmann::json{{"method", "dreambooth-lora"}, {"resolution", 32}, {"steps", 3},
                                             {"batch", 1}, {"learning_rate", 1e-3}, {"checkpoint_every", 0}}
                                  .dump();
  const CliResult tidb = run_cli({"finetune", "--model", testing::golden_path("sd_tiny"), "--method", "dreambooth-lora",
                                  "--concept", dir + "/textual-inversion", "--preset", db_preset, "--prior-images", "2",
                                  "--train-text-encoder", "--preview", "--out", dir + "/ti-db"});
  ASSERT_EQ(tidb.exit_code, 0) << tidb.err;
  const auto db = nlohmann::json::parse(read_file(dir + "/ti-db/concept.json"));
  EXPECT_EQ(db["method"], "dreambooth-lora");
  EXPECT_EQ(db["stage"], 2);
  EXPECT_EQ(db["lora"]["modules"], 56);  // the UNet's 48 attention projections and the text encoder's 8
  EXPECT_TRUE(db["history"][0].contains("prior"));
  EXPECT_TRUE(at::equal(embedding_of(dir + "/ti-db"), ti));
  EXPECT_FALSE(fs::exists(dir + "/ti-db/class_images"));
  EXPECT_TRUE(fs::exists(dir + "/ti-db/preview.png"));
  const CliResult with_lora = run_cli({"generate", "--model", testing::golden_path("sd_tiny"), "--concept",
                                       dir + "/ti-db", "--prompt", "a photo of * toy", "--steps", "2", "--out",
                                       dir + "/images_db"});
  ASSERT_EQ(with_lora.exit_code, 0) << with_lora.err;
  EXPECT_FALSE(at::equal(read_image_rgb(dir + "/images_db/0000.png").pixels,
                         read_image_rgb(dir + "/images_textual-inversion/0000.png").pixels));
  ASSERT_EQ(run_cli({"export", "--concept", dir + "/ti-db", "--format", "diffusers", "--out", dir + "/ti-db-export"})
                .exit_code,
            0);
  const CliResult plain = run_cli({"finetune", "--model", testing::golden_path("sd_tiny"), "--method", "dreambooth-lora",
                                   "--image", image_file(), "--class", "toy", "--trigger", "sks", "--preset", db_preset,
                                   "--out", dir + "/db"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(nlohmann::json::parse(read_file(dir + "/db/concept.json"))["lora"]["modules"], 48);
  EXPECT_EQ(embedding_of(dir + "/db").sizes(), (std::vector<int64_t>{1, 32}));
  expect_clean_failure(run_cli({"finetune", "--model", testing::golden_path("sd_tiny"), "--method", "dreambooth-lora",
                                "--preset", db_preset, "--out", dir + "/none"}),
                       "dreambooth-lora needs --concept (a stage I concept) or --image and --class");
  expect_clean_failure(run_cli({"finetune", "--model", testing::golden_path("sd_tiny"), "--method", "dreambooth-lora",
                                "--concept", dir + "/ti-db", "--out", dir + "/again"}),
                       "already finetuned (stage 2)");
  expect_clean_failure(run_cli({"finetune", "--model", testing::golden_path("sd_tiny"), "--concept", dir + "/ti-db",
                                "--prior-images", "2", "--out", dir + "/wrong"}),
                       "--prior-images is a dreambooth-lora setting");
  EXPECT_FALSE(fs::exists(dir + "/none"));
  EXPECT_FALSE(fs::exists(dir + "/none.partial"));
}

TEST(CliTraining, TextualInversionResumesToTheSameResult) {
  const std::string dir = fresh_temp_dir("ti_resume");
  const std::string preset = method_preset(dir, "textual-inversion", 12, /*checkpoint_every=*/0);
  const CliResult reference = run_cli(method_args("textual-inversion", preset, dir + "/reference"));
  ASSERT_EQ(reference.exit_code, 0) << reference.err;
  expect_clean_failure(
      interrupted_after_two_steps(method_args("textual-inversion", preset, dir + "/interrupted"), dir + "/log.jsonl"),
      "interrupted at step");
  // Resuming in another dtype would not end where the uninterrupted run ends: refused, the
  // checkpoint kept.
  expect_clean_failure(run_cli({"invert", "--model", testing::golden_path("sd_tiny"), "--out", dir + "/interrupted",
                                "--resume", "--dtype", "bf16"}),
                       "the interrupted run computed in fp32; resume it with --dtype fp32");
  const CliResult resumed =
      run_cli({"invert", "--model", testing::golden_path("sd_tiny"), "--out", dir + "/interrupted", "--resume"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  expect_same_concepts(dir + "/interrupted", dir + "/reference");
}

TEST(CliTraining, MethodBadInputsFailCleanly) {
  const std::string dir = fresh_temp_dir("methods_bad");
  const std::string ti = method_preset(dir, "textual-inversion", 1), ci = method_preset(dir, "cross-init", 1);
  std::ofstream(dir + "/db.json") << R"({"method": "dreambooth-lora", "steps": 1})";
  expect_clean_failure(run_cli(with(method_args("textual-inversion", ti, dir + "/c"), {"--num-vectors", "0"})),
                       "--num-vectors must be between 1 and 75");
  expect_clean_failure(run_cli(with(method_args("textual-inversion", ti, dir + "/c"), {"--init-word", "teddy bear"})),
                       "the initializer word 'teddy bear' is 2 tokens");
  expect_clean_failure(run_cli(method_args("cross-init", ci, dir + "/c")), "give --init-names FILE");
  expect_clean_failure(run_cli(with(method_args("cross-init", ci, dir + "/c"), {"--init-names", dir + "/none.txt"})),
                       "--init-names " + dir + "/none.txt: no such file");
  write_file_atomic(dir + "/empty.txt", "\n  \n");
  expect_clean_failure(run_cli(with(method_args("cross-init", ci, dir + "/c"), {"--init-names", dir + "/empty.txt"})),
                       "the file holds no names");
  write_file_atomic(dir + "/unknown.txt", "\x01\x02\n");
  expect_clean_failure(run_cli(with(method_args("cross-init", ci, dir + "/c"), {"--init-names", dir + "/unknown.txt"})),
                       "no name in --init-names tokenizes to a known word");
  expect_clean_failure(run_cli(with(method_args("textual-inversion", ti, dir + "/c"), {"--bg-weight", "2"})),
                       "--bg-weight is a SingleInsert setting");
  expect_clean_failure(run_cli(with(method_args("textual-inversion", ti, dir + "/c"), {"--num-vectors", "70"})),
                       "would be cut (CLIP reads 75 tokens)");
  expect_clean_failure(run_cli(with(method_args("textual-inversion", ti, dir + "/c"), {"--fast"})),
                       "--fast is cross-init's fast version");
  expect_clean_failure(run_cli(with(method_args("textual-inversion", dir + "/db.json", dir + "/c"), {})),
                       "a dreambooth-lora preset, not textual-inversion, cross-init or beyond-inserting");
  // A v-prediction model: these methods train the noise prediction, so it is refused.
  const fs::path v_model = fresh_temp_dir("v_model");
  fs::copy(testing::golden_path("sd_tiny"), v_model, fs::copy_options::recursive);
  fs::permissions(v_model / "scheduler", fs::perms::owner_all);
  auto scheduler = nlohmann::json::parse(read_file((v_model / "scheduler/scheduler_config.json").string()));
  scheduler["prediction_type"] = "v_prediction";
  fs::permissions(v_model / "scheduler/scheduler_config.json", fs::perms::owner_all);
  write_file_atomic((v_model / "scheduler/scheduler_config.json").string(), scheduler.dump());
  std::vector<std::string> on_v = method_args("textual-inversion", ti, dir + "/c");
  on_v[2] = v_model.string();
  expect_clean_failure(run_cli(on_v), "textual-inversion trains epsilon-prediction models");
  expect_clean_failure(run_cli(with(method_args("textual-inversion", ti, dir + "/c"), {"--trigger", "two words"})),
                       "--trigger");
  EXPECT_FALSE(fs::exists(dir + "/c"));
  EXPECT_FALSE(fs::exists(dir + "/c.partial"));
  // A trigger that is a word of the vocabulary is allowed, with a warning.
  const CliResult word = run_cli(with(method_args("textual-inversion", ti, dir + "/word"), {"--trigger", "cat"}));
  EXPECT_EQ(word.exit_code, 0) << word.err;
  EXPECT_NE(word.err.find("the token 'cat' is also a word of the model's vocabulary"), std::string::npos) << word.err;
}

// Beyond Inserting's two parts, each switchable, their concept artifact, and the face-wise
// attention loss as SingleInsert's extra term.
TEST(CliTraining, BeyondInsertingMakesConceptsThatGenerateButDoNotExport) {
  const std::string dir = fresh_temp_dir("beyond_inserting");
  const std::string preset = method_preset(dir, "beyond-inserting", 2);
  const CliResult trained = run_cli(method_args("beyond-inserting", preset, dir + "/bi"));
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  const auto json = nlohmann::json::parse(read_file(dir + "/bi/concept.json"));
  EXPECT_EQ(json["method"], "beyond-inserting");
  EXPECT_EQ(json["kv_tokens"]["stages"], 1);  // sd_tiny has one down block with cross-attention
  EXPECT_EQ(json["training"]["attn_weight"], 0.003);
  EXPECT_EQ(json["training"]["subject"], "<class> of {}");
  EXPECT_TRUE(json["history"][0].contains("attn"));
  const SafetensorsFile tokens = SafetensorsFile::open(dir + "/bi/kv_tokens.safetensors");
  EXPECT_EQ(tokens.tensor("keys").sizes(), (std::vector<int64_t>{1, 32}));
  EXPECT_EQ(tokens.tensor("values").sizes(), (std::vector<int64_t>{1, 32}));
  EXPECT_EQ(embedding_of(dir + "/bi").sizes(), (std::vector<int64_t>{1, 32}));
  const CliResult generated = run_cli({"generate", "--model", testing::golden_path("sd_tiny"), "--concept", dir + "/bi",
                                       "--prompt", "a photo of *", "--steps", "2", "--out", dir + "/images"});
  ASSERT_EQ(generated.exit_code, 0) << generated.err;
  expect_clean_failure(run_cli({"export", "--concept", dir + "/bi", "--format", "a1111", "--out", dir + "/a1111"}),
                       "per-stage key/value tokens");
  EXPECT_FALSE(fs::exists(dir + "/a1111"));
  expect_clean_failure(run_cli({"finetune", "--model", testing::golden_path("sd_tiny"), "--method", "dreambooth-lora",
                                "--concept", dir + "/bi", "--out", dir + "/db"}),
                       "per-stage tokens");

  // The attention loss alone: one embedding, which exports; the tokens alone: no attention term.
  ASSERT_EQ(run_cli(with(method_args("beyond-inserting", preset, dir + "/attn"), {"--no-kv-tokens"})).exit_code, 0);
  EXPECT_FALSE(fs::exists(dir + "/attn/kv_tokens.safetensors"));
  EXPECT_EQ(run_cli({"export", "--concept", dir + "/attn", "--format", "a1111", "--out", dir + "/a1111"}).exit_code, 0);
  ASSERT_EQ(run_cli(with(method_args("beyond-inserting", preset, dir + "/kv"), {"--attn-weight", "0"})).exit_code, 0);
  const auto kv = nlohmann::json::parse(read_file(dir + "/kv/concept.json"));
  EXPECT_FALSE(kv["history"][0].contains("attn"));
  EXPECT_TRUE(fs::exists(dir + "/kv/kv_tokens.safetensors"));

  // SingleInsert with the attention loss as an extra term, recorded with the run.
  const CliResult si = run_cli(with(invert_args(tiny_preset(dir), dir + "/si"), {"--attn-weight", "0.01"}));
  ASSERT_EQ(si.exit_code, 0) << si.err;
  const auto si_json = nlohmann::json::parse(read_file(dir + "/si/concept.json"));
  EXPECT_EQ(si_json["training"]["attn_weight"], 0.01);
  EXPECT_EQ(si_json["training"]["attn_reference"], "person");
  EXPECT_TRUE(si_json["history"][0].contains("attn"));
  EXPECT_GT(si_json["history"][0]["attn"].get<double>(), 0);

  expect_clean_failure(run_cli(with(method_args("textual-inversion", method_preset(dir, "textual-inversion", 1),
                                                dir + "/c"),
                                    {"--attn-weight", "0.1"})),
                       "--attn-weight is for singleinsert and beyond-inserting");
  expect_clean_failure(run_cli(with(method_args("beyond-inserting", preset, dir + "/c"), {"--num-vectors", "2"})),
                       "beyond-inserting learns one identity embedding");
  expect_clean_failure(run_cli(with(invert_args(tiny_preset(dir), dir + "/c"), {"--attn-weight", "-1"})),
                       "--attn-weight must not be negative");
  expect_clean_failure(run_cli(with(invert_args(tiny_preset(dir), dir + "/c"), {"--no-kv-tokens"})),
                       "--no-kv-tokens is not a SingleInsert setting");
  EXPECT_NE(run_cli(with(invert_args(tiny_preset(dir), dir + "/c"), {"--attn-layers", "some"})).exit_code, 0);
  EXPECT_FALSE(fs::exists(dir + "/c"));
}

TEST(CliTraining, BeyondInsertingResumesToTheSameResult) {
  const std::string dir = fresh_temp_dir("bi_resume");
  const std::string preset = method_preset(dir, "beyond-inserting", 12, /*checkpoint_every=*/0);
  const CliResult reference = run_cli(method_args("beyond-inserting", preset, dir + "/reference"));
  ASSERT_EQ(reference.exit_code, 0) << reference.err;
  expect_clean_failure(
      interrupted_after_two_steps(method_args("beyond-inserting", preset, dir + "/interrupted"), dir + "/log.jsonl"),
      "interrupted at step");
  const CliResult resumed =
      run_cli({"invert", "--model", testing::golden_path("sd_tiny"), "--out", dir + "/interrupted", "--resume"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  expect_same_concepts(dir + "/interrupted", dir + "/reference");
  // The token module's state came back with the checkpoint: the tokens are the uninterrupted run's.
  const SafetensorsFile a = SafetensorsFile::open(dir + "/interrupted/kv_tokens.safetensors");
  const SafetensorsFile b = SafetensorsFile::open(dir + "/reference/kv_tokens.safetensors");
  EXPECT_TRUE(at::equal(a.tensor("keys"), b.tensor("keys")));
  EXPECT_TRUE(at::equal(a.tensor("values"), b.tensor("values")));
}

TEST(CliTraining, EditWritesTheEditItsReconstructionAndTheirFigures) {
  const std::string dir = fresh_temp_dir("edit");
  const std::vector<std::string> edit = {"edit", "--model", testing::golden_path("sd_tiny"), "--image", image_file(),
                                         "--prompt", "a photo of a red toy", "--steps", "3", "--inner-steps", "2",
                                         "--resolution", "32"};
  const CliResult done = run_cli(with(edit, {"--out", dir + "/out"}));
  ASSERT_EQ(done.exit_code, 0) << done.err;
  for (const char* file : {"edit.png", "reconstruction.png", "round_trip.png", "source.png", "edit.json"})
    EXPECT_TRUE(fs::exists(dir + "/out/" + file)) << file;
  EXPECT_EQ(read_image_rgb(dir + "/out/edit.png").pixels.sizes(), (std::vector<int64_t>{32, 32, 3}));
  const auto record = nlohmann::json::parse(read_file(dir + "/out/edit.json"));
  EXPECT_EQ(record["method"], "prompt-tuning-inversion");
  EXPECT_EQ(record["eta"], 0.8);
  EXPECT_EQ(record["step_losses"].size(), 3u);
  EXPECT_GT(record["psnr_vae_round_trip_db"].get<double>(), 0);
  EXPECT_NE(done.err.find("edit: reconstruction"), std::string::npos) << done.err;
  EXPECT_EQ(done.out, dir + "/out/edit.png\n");
  expect_clean_failure(run_cli(with(edit, {"--eta", "1.5", "--out", dir + "/bad"})), "--eta must be between 0 and 1");
  std::vector<std::string> odd = edit;
  odd[odd.size() - 1] = "33";  // --resolution 33
  expect_clean_failure(run_cli(with(odd, {"--out", dir + "/bad"})), "--resolution must be");
  expect_clean_failure(run_cli(with(edit, {"--out", dir + "/out"})), "already exists");
  EXPECT_FALSE(fs::exists(dir + "/bad"));
}

}  // namespace
}  // namespace singleinsert
