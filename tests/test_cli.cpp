// The command line as users run it: generate reproduces diffusers (seeded and from given
// latents), writes PNGs with their parameters and run.json; every bad input is one clear line on
// stderr, a non-zero exit, and no output.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "golden.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/io/png.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

using testing::CliResult;
using testing::fresh_temp_dir;
using testing::linked_tiny_model;
using testing::run_cli;

const char* kPrompt = "a photo of an astronaut riding a horse on mars";

std::vector<std::string> tiny_generate(const std::string& out, const std::string& sampler = "pndm") {
  return {"generate", "--model", testing::golden_path("sd_tiny"), "--prompt", kPrompt, "--steps", "4",
          "--sampler", sampler, "--out", out};
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

at::Tensor pixels(const std::string& path) { return read_image_rgb(path).pixels; }

void replace_unet_weights(const std::string& model, const std::string& bytes) {
  const fs::path file = fs::path(model) / "unet" / "diffusion_pytorch_model.safetensors";
  fs::remove(file);
  write_file_atomic(file.string(), bytes);
}

// One line on stderr that starts with "error:", a non-zero exit, and no output folder.
void expect_clean_failure(const CliResult& result, const std::string& out, const std::string& fragment) {
  EXPECT_NE(result.exit_code, 0);
  EXPECT_EQ(result.err.rfind("error: ", 0), 0u) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_NE(result.err.find(fragment), std::string::npos) << result.err;
  EXPECT_TRUE(result.out.empty()) << result.out;
  EXPECT_FALSE(fs::exists(out)) << "left " << out << " behind";
}

TEST(Cli, GenerateFromGivenLatentsReproducesDiffusersImages) {
  const std::string dir = fresh_temp_dir("given_latents");
  const std::string latents = dir + "/init_latents.safetensors";
  save_safetensors(latents, {{"latents", testing::golden_file("pipeline/common_io.safetensors").tensor("init_latents")}});
  for (const std::string sampler : {"pndm", "ddim"}) {
    const std::string out = dir + "/" + sampler;
    const CliResult result = run_cli(with(tiny_generate(out, sampler), {"--initial-latents", latents}));
    ASSERT_EQ(result.exit_code, 0) << result.err;
    const at::Tensor expected = testing::golden_file("pipeline/run_" + sampler + ".safetensors").tensor("image_uint8")[0];
    EXPECT_TENSOR_NEAR_ABS(pixels(out + "/0000.png").to(at::kFloat) / 255, expected.to(at::kFloat) / 255, 1.0 / 255);
  }
}

TEST(Cli, SeededGenerateStartsFromTorchGeneratorNoise) {
  // --seed 0 must draw exactly torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)):
  // generating from that probe tensor as given latents must give the very same image.
  const std::string dir = fresh_temp_dir("seeded");
  const std::string probe = dir + "/probe.safetensors";
  save_safetensors(probe, {{"latents", testing::golden_file("pipeline/common_io.safetensors").tensor("rng_randn_seed0_1x4x16x16")}});
  const CliResult seeded = run_cli(with(tiny_generate(dir + "/seeded"), {"--seed", "0"}));
  const CliResult given = run_cli(with(tiny_generate(dir + "/given"), {"--initial-latents", probe}));
  const CliResult other = run_cli(with(tiny_generate(dir + "/other"), {"--seed", "1"}));
  ASSERT_EQ(seeded.exit_code, 0) << seeded.err;
  ASSERT_EQ(given.exit_code, 0) << given.err;
  ASSERT_EQ(other.exit_code, 0) << other.err;
  EXPECT_TRUE(at::equal(pixels(dir + "/seeded/0000.png"), pixels(dir + "/given/0000.png")));
  EXPECT_FALSE(at::equal(pixels(dir + "/seeded/0000.png"), pixels(dir + "/other/0000.png")));
}

TEST(Cli, GenerateWritesPromptMajorImagesWithParameters) {
  const std::string out = fresh_temp_dir("batch") + "/images";
  const CliResult result = run_cli({"generate", "--model", testing::golden_path("sd_tiny"), "--prompt", "a red cat",
                                    "--prompt", "a blue dog", "--negative-prompt", "blurry", "--images-per-prompt", "2",
                                    "--steps", "2", "--sampler", "euler_a", "--seed", "5", "--grid", "--out", out});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, out + "/0000.png\n" + out + "/0001.png\n" + out + "/0002.png\n" + out + "/0003.png\n");
  const auto text = read_png_text(out + "/0002.png");
  EXPECT_EQ(text.at("parameters").rfind("a blue dog\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, CFG scale: 7.5, "
                                        "Seed: 5, Size: 32x32",
                                        0),
            0u)
      << text.at("parameters");
  const auto record = nlohmann::json::parse(text.at("singleinsert"));
  EXPECT_EQ(record["batch_position"], 2);
  const auto run = nlohmann::json::parse(read_file(out + "/run.json"));
  EXPECT_EQ(run["images"].size(), 4u);
  EXPECT_EQ(run["images"][1]["prompt"], "a red cat");
  EXPECT_EQ(run["images"][2]["prompt"], "a blue dog");
  const at::Tensor grid = pixels(out + "/grid.png");  // a row per prompt
  ASSERT_EQ(grid.sizes(), at::IntArrayRef({64, 64, 3}));
  EXPECT_TRUE(at::equal(grid.slice(0, 32, 64).slice(1, 0, 32), pixels(out + "/0002.png")));
  EXPECT_TRUE(at::equal(grid.slice(0, 0, 32).slice(1, 32, 64), pixels(out + "/0001.png")));
}

TEST(Cli, LongPromptsWarnAndContinue) {
  std::string prompt;
  for (int i = 0; i < 90; ++i) prompt += "horse ";
  const std::string out = fresh_temp_dir("long") + "/images";
  const CliResult result = run_cli({"generate", "--model", testing::golden_path("sd_tiny"), "--prompt", prompt,
                                    "--steps", "1", "--out", out});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("warning: the prompt has 92 tokens; CLIP reads 77"), std::string::npos) << result.err;
  EXPECT_TRUE(fs::exists(out + "/0000.png"));
}

TEST(Cli, BadInputsFailCleanly) {
  const std::string dir = fresh_temp_dir("bad");
  const std::string out = dir + "/never";
  const std::string model = testing::golden_path("sd_tiny");
  auto generate = [&](const std::string& model_dir, const std::vector<std::string>& more = {}) {
    return run_cli(with({"generate", "--model", model_dir, "--prompt", "a cat", "--out", out}, more));
  };
  expect_clean_failure(generate(dir + "/missing"), out, "no such model folder");

  const std::string no_vae = linked_tiny_model("no_vae");
  fs::remove_all(fs::path(no_vae) / "vae");
  expect_clean_failure(generate(no_vae), out, "missing the vae/ folder");

  const std::string truncated = linked_tiny_model("truncated");
  const std::string unet_bytes = read_file(model + "/unet/diffusion_pytorch_model.safetensors");
  replace_unet_weights(truncated, unet_bytes.substr(0, unet_bytes.size() / 2));
  expect_clean_failure(generate(truncated), out, "truncated");

  const std::string corrupt = linked_tiny_model("corrupt");
  replace_unet_weights(corrupt, std::string("\x10\0\0\0\0\0\0\0{\"a\": [1, 2, 3", 21));
  expect_clean_failure(generate(corrupt), out, "corrupt");

  const std::string reshaped = linked_tiny_model("reshaped");
  const SafetensorsFile original = SafetensorsFile::open(model + "/unet/diffusion_pytorch_model.safetensors");
  NamedTensors tensors;
  for (const auto& key : original.keys())
    tensors.emplace_back(key, key == "conv_in.weight" ? original.tensor(key).reshape({32, 4, 9}) : original.tensor(key));
  replace_unet_weights(reshaped, safetensors_bytes(tensors));
  expect_clean_failure(generate(reshaped), out, "tensor 'conv_in.weight' has shape [32, 4, 9] in the file but the model expects [32, 4, 3, 3]");

  expect_clean_failure(generate(model, {"--sampler", "heun"}), out, "unknown sampler 'heun'");
  expect_clean_failure(generate(model, {"--height", "-2"}), out, "multiples of 2");
  expect_clean_failure(generate(model, {"--width", "33"}), out, "multiples of 2");
  expect_clean_failure(generate(model, {"--steps", "0"}), out, "--steps must be at least 1");
  expect_clean_failure(generate(model, {"--negative-prompt", "a", "--negative-prompt", "b"}), out, "2 negative prompts for 1 prompts");

  const std::string blocker = dir + "/a_file";
  write_file_atomic(blocker, "not a folder");
  const std::string under_file = blocker + "/images";
  const CliResult unwritable = run_cli({"generate", "--model", model, "--prompt", "a cat", "--out", under_file});
  expect_clean_failure(unwritable, under_file, "cannot create the directory");

  const std::string occupied = fresh_temp_dir("occupied");
  write_file_atomic(occupied + "/0000.png", "precious");
  const CliResult refused = run_cli({"generate", "--model", model, "--prompt", "a cat", "--steps", "1", "--out", occupied});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("--overwrite"), std::string::npos) << refused.err;
  EXPECT_EQ(read_file(occupied + "/0000.png"), "precious");
}

TEST(Cli, TokenizePrintsTheReferenceIds) {
  const CliResult plain = run_cli({"tokenize", "--model", testing::golden_path("sd_tiny"), "--prompt", kPrompt});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out.rfind("49406 320 1125 539 550 18376 6765 320 4558 525 7496 49407 49407", 0), 0u) << plain.out;
  const CliResult json = run_cli({"tokenize", "--model", testing::golden_path("sd_tiny"), "--prompt", kPrompt, "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto parsed = nlohmann::json::parse(json.out);
  EXPECT_EQ(parsed["input_ids"].size(), 77u);
  EXPECT_EQ(parsed["tokens"][4], "astronaut</w>");
  EXPECT_EQ(parsed["length"], 12);
}

TEST(Cli, DefaultModelIsCreatedAndGenerates) {
  const std::string dir = fresh_temp_dir("default_model");
  const CliResult created = run_cli({"create-default-model", "--out", dir + "/model"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const CliResult again = run_cli({"create-default-model", "--out", dir + "/model"});
  EXPECT_NE(again.exit_code, 0);
  const CliResult result = run_cli({"generate", "--model", dir + "/model", "--prompt", "a photo of a face wearing a hat",
                                    "--steps", "3", "--out", dir + "/images"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(pixels(dir + "/images/0000.png").sizes(), at::IntArrayRef({64, 64, 3}));
  const CliResult tokens = run_cli({"tokenize", "--model", dir + "/model", "--prompt", "a face wearing sunglasses", "--json"});
  ASSERT_EQ(tokens.exit_code, 0) << tokens.err;
  EXPECT_EQ(nlohmann::json::parse(tokens.out)["length"], 6);  // each word is one token
}

TEST(Cli, HelpAndUsageErrors) {
  const CliResult help = run_cli({"generate", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--sampler"), std::string::npos);
  const CliResult usage = run_cli({"generate", "--model", "m"});
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_EQ(usage.err.rfind("error: ", 0), 0u) << usage.err;
}

}  // namespace
}  // namespace singleinsert
