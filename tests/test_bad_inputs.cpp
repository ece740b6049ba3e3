// The bad-input table of docs/robustness.md, one row per case: what a user gave, the command, the
// message it must print, and that nothing was left behind. Files that lie about themselves,
// truncated files, wrong types, impossible sizes, images of the wrong kind, full and read-only
// disks. With SINGLEINSERT_ROBUSTNESS_TABLE=FILE the rows are also written there as markdown
// (the table in the docs is that file).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "cli_runner.h"
#include "golden.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/safetensors.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

using testing::CliResult;
using testing::fresh_temp_dir;
using testing::run_cli;

// What a case expects: a clean failure (one "error:" line, non-zero exit, no stdout, the output
// path absent), or an accepted input with a warning on stderr.
enum class Outcome { kRefused, kWarned };

struct BadInput {
  std::string given;                  // in words, for the table
  std::vector<std::string> args;      // the command line after `singleinsert`
  std::string message;                // a fragment the message must contain
  Outcome outcome = Outcome::kRefused;
  std::string out;                    // the path that must not exist afterwards (refused cases)
  std::string shell_prefix;           // e.g. a ulimit, run before the command
};

std::string tiny_model() { return testing::golden_path("sd_tiny"); }
std::string unet_file(const std::string& model) { return model + "/unet/diffusion_pytorch_model.safetensors"; }
std::string image_file() { return testing::golden_path("singleinsert_losses/instance_image.png"); }
std::string mask_file() { return testing::golden_path("singleinsert_losses/mask.png"); }

void replace_file(const std::string& path, const std::string& bytes) {
  fs::remove(path);
  std::ofstream(path, std::ios::binary) << bytes;
}

// A safetensors file from its header text and data bytes, as the format lays it out.
std::string safetensors_raw(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string with_length(uint64_t length, const std::string& rest) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return out + rest;
}

std::vector<std::string> generate_args(const std::string& model, const std::string& out,
                                       const std::vector<std::string>& more = {}) {
  std::vector<std::string> args = {"generate", "--model", model, "--prompt", "a teddy bear", "--out", out};
  args.insert(args.end(), more.begin(), more.end());
  if (std::find(more.begin(), more.end(), "--steps") == more.end()) args.insert(args.end(), {"--steps", "1"});
  return args;
}

// A trigger that is no word of sd_tiny's vocabulary, so that no warning comes before the error.
std::vector<std::string> invert_args(const std::string& preset, const std::string& out, const std::string& image,
                                     const std::string& mask, const std::vector<std::string>& more = {}) {
  std::vector<std::string> args = {"invert", "--model", tiny_model(), "--image", image, "--mask", mask,
                                   "--preset", preset, "--out", out};
  args.insert(args.end(), more.begin(), more.end());
  for (const auto& [flag, value] : {std::pair<const char*, const char*>{"--class", "teddy bear"}, {"--trigger", "<bear>"}})
    if (std::find(more.begin(), more.end(), flag) == more.end()) args.insert(args.end(), {flag, value});
  return args;
}

std::string png_header_claiming(uint32_t width, uint32_t height) {
  // The PNG signature and an IHDR chunk (8-bit RGB) with a wrong CRC: enough for a size check
  // that reads the header before decoding anything.
  std::string out = "\x89PNG\r\n\x1a\n";
  out += std::string("\0\0\0\x0dIHDR", 8);
  for (uint32_t v : {width, height})
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
  out += std::string("\x08\x02\0\0\0", 5);
  out += std::string("\0\0\0\0", 4);
  return out;
}

bool mount_tmpfs(const std::string& path, const std::string& options, unsigned long flags = 0) {
  fs::create_directories(path);
  return ::mount("tmpfs", path.c_str(), "tmpfs", flags, options.c_str()) == 0;
}

std::string table_cell(std::string text) {
  for (char& c : text)
    if (c == '|') c = '/';
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (text.size() > 240) text = text.substr(0, 200) + "...";
  return text;
}

// Paths as the table shows them: relative to the case's folder, sd_tiny by name.
std::string without_paths(std::string text, const std::string& dir) {
  for (const auto& [path, name] : std::vector<std::pair<std::string, std::string>>{
           {dir + "/", ""}, {tiny_model(), "sd_tiny"}, {testing::golden_path("") + "/", "golden/"}})
    for (size_t at = text.find(path); at != std::string::npos; at = text.find(path, at + name.size()))
      text.replace(at, path.size(), name);
  return text;
}

std::string shown_arg(const std::string& arg, const std::string& dir) {
  std::string shown = without_paths(arg, dir);
  if (shown.size() > 40) shown = shown.substr(0, 12) + "... (" + std::to_string(shown.size()) + " characters)";
  return shown.find(' ') == std::string::npos ? shown : "'" + shown + "'";
}

struct Unmount {
  std::vector<std::string> points;
  ~Unmount() {
    for (const auto& point : points) ::umount(point.c_str());
  }
};

TEST(BadInputs, EachIsOneClearLineAndLeavesNothingBehind) {
  const std::string dir = fresh_temp_dir("bad_inputs");
  const std::string out = dir + "/never";
  const std::string preset = testing::write_tiny_training_preset(dir, 1);
  const std::string unet_bytes = read_file(unet_file(tiny_model()));
  std::vector<BadInput> cases;
  auto refused = [&](const std::string& given, std::vector<std::string> args, const std::string& message) {
    cases.push_back({given, std::move(args), message, Outcome::kRefused, out, ""});
  };
  auto warned = [&](const std::string& given, std::vector<std::string> args, const std::string& message) {
    cases.push_back({given, std::move(args), message, Outcome::kWarned, "", ""});
  };
  int models = 0;
  // A linked sd_tiny whose UNet weights are `bytes`.
  auto model_with_unet = [&](const std::string& bytes) {
    const std::string model = testing::linked_tiny_model("model" + std::to_string(models++), dir);
    replace_file(unet_file(model), bytes);
    return model;
  };
  auto model_with_file = [&](const std::string& relative, const std::string& bytes) {
    const std::string model = testing::linked_tiny_model("model" + std::to_string(models++), dir);
    replace_file(model + "/" + relative, bytes);
    return model;
  };

  // --- model folders and weight files ---
  refused("a model folder that does not exist", generate_args(dir + "/missing_model", out), "no such model folder");
  {
    const std::string model = testing::linked_tiny_model("no_vae", dir);
    fs::remove_all(model + "/vae");
    refused("a model folder without its vae/", generate_args(model, out), "missing the vae/ folder");
  }
  const std::vector<std::pair<std::string, size_t>> truncations = {
      {"inside the 8-byte header length", 5},
      {"inside the header", 8 + 57},
      {"at a third of the data", unet_bytes.size() / 3},
      {"one byte short", unet_bytes.size() - 1}};
  for (const auto& [where, size] : truncations)
    refused("UNet weights truncated " + where, generate_args(model_with_unet(unet_bytes.substr(0, size)), out),
            size < 8 ? "only 5 bytes" : "truncated");
  refused("a header length of 2^63", generate_args(model_with_unet(with_length(uint64_t{1} << 63, "{}")), out),
          "header length");
  refused("a header that is not JSON", generate_args(model_with_unet(safetensors_raw("{\"a\": [1, 2")), out),
          "corrupt");
  refused("a header that is a JSON list", generate_args(model_with_unet(safetensors_raw("[1, 2, 3]")), out),
          "header is not a JSON object");
  refused("negative data offsets",
          generate_args(model_with_unet(safetensors_raw(
                            R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", std::string(4, '\0'))),
                        out),
          "invalid data offsets");
  refused("overlapping tensors",
          generate_args(model_with_unet(safetensors_raw(
                            R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, )"
                            R"("b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                            std::string(12, '\0'))),
                        out),
          "overlap");
  refused("an unknown dtype",
          generate_args(model_with_unet(safetensors_raw(
                            R"({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}})", std::string(1, '\0'))),
                        out),
          "dtype");
  refused("a shape whose element count overflows 64 bits",
          generate_args(model_with_unet(safetensors_raw(
                            R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 0]}})")),
                        out),
          "impossible shape");
  refused("offsets that disagree with the shape",
          generate_args(model_with_unet(safetensors_raw(
                            R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", std::string(8, '\0'))),
                        out),
          "shape");
  refused("offsets beyond the end of the file",
          generate_args(model_with_unet(safetensors_raw(
                            R"({"w": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}})", std::string(8, '\0'))),
                        out),
          "truncated");
  {
    NamedTensors tensors;
    const SafetensorsFile original = SafetensorsFile::open(unet_file(tiny_model()));
    for (const auto& key : original.keys())
      if (key != "conv_out.bias") tensors.emplace_back(key, original.tensor(key));
    refused("UNet weights missing a tensor", generate_args(model_with_unet(safetensors_bytes(tensors)), out),
            "missing 1 tensor(s) the model needs: conv_out.bias");
  }
  refused("a UNet config.json with a wrong type",
          generate_args(model_with_file("unet/config.json",
                                        R"({"block_out_channels": "wide", "cross_attention_dim": 32})"),
                        out),
          "block_out_channels");
  refused("a config.json that is not JSON", generate_args(model_with_file("unet/config.json", "{\"in_channels\": 4,"), out),
          "config.json");
  refused("a tokenizer vocab.json that is not JSON", generate_args(model_with_file("tokenizer/vocab.json", "{\"a\""), out),
          "vocab.json");
  refused("a single-file checkpoint that is a LoRA", generate_args(dir + "/lora.safetensors", out),
          "not a Stable Diffusion checkpoint");
  refused("a pickled .ckpt checkpoint", generate_args(dir + "/model.ckpt", out), "a PyTorch pickle checkpoint");

  // --- LoRAs, embeddings, concepts ---
  refused("a LoRA for another architecture",
          generate_args(tiny_model(), out, {"--lora", dir + "/other_lora.safetensors"}), "do not exist in the model");
  refused("a LoRA file that is truncated",
          generate_args(tiny_model(), out, {"--lora", dir + "/truncated_lora.safetensors"}), "truncated");
  refused("an embedding of another width (SD 2's 1024)",
          generate_args(tiny_model(), out, {"--embedding", dir + "/wide_embedding.safetensors"}), "1024");
  refused("an embedding file with no tensor", generate_args(tiny_model(), out, {"--embedding", dir + "/empty.safetensors"}),
          "not a textual-inversion embedding");
  refused("a concept folder that does not exist", generate_args(tiny_model(), out, {"--concept", dir + "/no_concept"}),
          "no such concept folder");
  refused("a concept.json that is not JSON", generate_args(tiny_model(), out, {"--concept", dir + "/concept_corrupt"}),
          "concept.json");
  refused("a concept.json with a wrong type", generate_args(tiny_model(), out, {"--concept", dir + "/concept_types"}),
          "concept.json");
  refused("a concept whose embedding width differs from the model",
          generate_args(tiny_model(), out, {"--concept", dir + "/concept_wide"}), "1024 wide");
  refused("a concept given a trigger of two words (DIR:TRIGGER)",
          generate_args(tiny_model(), out, {"--concept", dir + "/concept_ok:two words"}), "must be one word");
  refused("a LoRA scale that is not a number (FILE:nan)",
          generate_args(tiny_model(), out, {"--lora", dir + "/other_lora.safetensors:nan"}), "must be a finite number");
  refused("a LoRA whose alpha holds two values",
          generate_args(tiny_model(), out, {"--lora", dir + "/two_alphas.safetensors"}), "an alpha is one number");

  // --- images and masks ---
  refused("an all-black mask", invert_args(preset, out, image_file(), dir + "/black_mask.png"), "the mask has no foreground");
  warned("an all-white mask", invert_args(preset, dir + "/white_ok", image_file(), dir + "/white_mask.png"),
         "the background loss L_bg is zero");
  refused("a mask of another size than the image", invert_args(preset, out, image_file(), dir + "/small_mask.png"),
          "the mask is 48x48 but the image is 64x64");
  refused("an image of 1x1 pixels", invert_args(preset, out, dir + "/one_pixel.png", dir + "/one_pixel.png"),
          "1x1");
  refused("an image whose header says 20000x20000 pixels",
          invert_args(preset, out, dir + "/huge.png", mask_file()), "20000x20000");
  warned("a 16-bit PNG", invert_args(preset, dir + "/deep_ok", dir + "/deep.png", mask_file()),
         "16-bit samples scaled to 8 bits");
  warned("a CMYK JPEG", invert_args(preset, dir + "/cmyk_ok", dir + "/cmyk.jpg", mask_file()), "CMYK converted to RGB");
  refused("a JPEG photo cut short", invert_args(preset, out, dir + "/cut.jpg", mask_file()), "the JPEG is cut short");
  refused("a file that is not an image", invert_args(preset, out, dir + "/junk.png", mask_file()), "not a readable image");
  refused("an image that does not exist", invert_args(preset, out, dir + "/absent.png", mask_file()), "no such file");

  // --- prompts, triggers, numbers ---
  warned("a prompt of 10,000 characters",
         {"generate", "--model", tiny_model(), "--prompt", std::string(10000, 'a') + " bear", "--steps", "1",
          "--out", dir + "/long_ok"},
         "CLIP reads 77");
  refused("a trigger that is not a single word", invert_args(preset, out, image_file(), mask_file(), {"--trigger", "two words"}),
          "one word");
  refused("a class word that tokenizes to nothing", invert_args(preset, out, image_file(), mask_file(), {"--class", "   "}),
          "tokenizes to nothing");
  refused("--steps 100000", generate_args(tiny_model(), out, {"--steps", "100000"}), "100000");
  refused("--steps 0", generate_args(tiny_model(), out, {"--steps", "0"}), "--steps must be at least 1");
  refused("--width 33", generate_args(tiny_model(), out, {"--width", "33"}), "multiples of 2");
  refused("--width 8192 --height 8192 (cannot fit in memory)",
          generate_args(tiny_model(), out, {"--width", "8192", "--height", "8192"}), "of memory");
  refused("--images-per-prompt 0", generate_args(tiny_model(), out, {"--images-per-prompt", "0"}), "at least 1");
  refused("--guidance -1", generate_args(tiny_model(), out, {"--guidance", "-1"}), "must not be negative");
  refused("an unknown sampler", generate_args(tiny_model(), out, {"--sampler", "heun"}), "unknown sampler 'heun'");
  refused("--half-weights with --dtype bf16", generate_args(tiny_model(), out, {"--dtype", "bf16", "--half-weights"}),
          "--half-weights is for --dtype fp32");
  refused("--resolution 4 for training", invert_args(preset, out, image_file(), mask_file(), {"--resolution", "4"}),
          "--resolution 4 is too small");
  auto edit_args = [&](const std::string& image, std::vector<std::string> more) {
    std::vector<std::string> args = {"edit", "--model", tiny_model(), "--image", image, "--prompt", "a red bear",
                                     "--steps", "1", "--out", out};
    args.insert(args.end(), more.begin(), more.end());
    return args;
  };
  refused("edit --eta 1.5", edit_args(image_file(), {"--eta", "1.5"}), "--eta must be between 0 and 1");
  refused("edit --resolution 33", edit_args(image_file(), {"--resolution", "33"}), "a positive multiple of 2");
  refused("edit of an image that does not exist", edit_args(dir + "/absent.png", {}), "no such file");
  refused("edit of an image whose header says 20000x20000 pixels", edit_args(dir + "/huge.png", {}), "20000x20000");

  warned("--resume where no run was started", invert_args(preset, dir + "/resume_ok", image_file(), mask_file(), {"--resume"}),
         "nothing to resume");

  // --- output folders ---
  {
    write_file_atomic(dir + "/a_file", "not a folder");
    refused("an output folder under a file", generate_args(tiny_model(), dir + "/a_file/images"),
            "cannot create the directory");
    cases.back().out = dir + "/a_file/images";
  }
  {
    const std::string occupied = dir + "/occupied";
    fs::create_directories(occupied);
    write_file_atomic(occupied + "/0000.png", "precious");
    refused("an output folder with files in it", generate_args(tiny_model(), occupied), "--overwrite");
    cases.back().out = "";
  }
  Unmount unmount;
  const bool mounted_full = mount_tmpfs(dir + "/full_disk", "size=64k");
  if (mounted_full) unmount.points.push_back(dir + "/full_disk");
  if (mounted_full) {  // a few KB free: the images do not fit
    std::ofstream(dir + "/full_disk/filler", std::ios::binary) << std::string(60 * 1024, 'x');
  }
  refused("an output folder on a full disk",
          generate_args(tiny_model(), dir + "/full_disk/images", {"--width", "64", "--height", "64"}),
          mounted_full ? "No space left on device" : "File too large");
  cases.back().out = dir + "/full_disk/images";
  if (!mounted_full) cases.back().shell_prefix = "ulimit -f 4;";  // no mount permission: a file size limit instead
  bool read_only = false;
  if (::geteuid() == 0) {
    read_only = mount_tmpfs(dir + "/read_only", "size=1m", MS_RDONLY);
    if (read_only) unmount.points.push_back(dir + "/read_only");
  } else {
    fs::create_directories(dir + "/read_only");
    fs::permissions(dir + "/read_only", fs::perms::owner_read | fs::perms::owner_exec);
    read_only = true;
  }
  ASSERT_TRUE(read_only) << "could not make a read-only folder";
  refused("an output folder without write permission", generate_args(tiny_model(), dir + "/read_only/images"),
          ::geteuid() == 0 ? "Read-only file system" : "Permission denied");
  cases.back().out = dir + "/read_only/images";

  // The files the cases above name.
  {
    NamedTensors lora = {{"lora_unet_nonexistent_block_proj.lora_down.weight", at::zeros({4, 8})},
                         {"lora_unet_nonexistent_block_proj.lora_up.weight", at::zeros({8, 4})},
                         {"lora_unet_nonexistent_block_proj.alpha", at::full({}, 4.0)}};
    save_safetensors(dir + "/other_lora.safetensors", lora);
    save_safetensors(dir + "/lora.safetensors", lora);
    const std::string module = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
    save_safetensors(dir + "/two_alphas.safetensors", {{module + ".lora_down.weight", at::zeros({2, 32})},
                                                       {module + ".lora_up.weight", at::zeros({32, 2})},
                                                       {module + ".alpha", at::full({2}, 2.0)}});
    const std::string bytes = read_file(dir + "/other_lora.safetensors");
    std::ofstream(dir + "/truncated_lora.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() - 7);
    save_safetensors(dir + "/wide_embedding.safetensors", {{"emb_params", at::zeros({1, 1024})}});
    save_safetensors(dir + "/empty.safetensors", {});
    std::ofstream(dir + "/model.ckpt", std::ios::binary) << "PK\x03\x04 pickled";
    fs::create_directories(dir + "/concept_corrupt");
    std::ofstream(dir + "/concept_corrupt/concept.json") << "{\"trigger\": ";
    fs::create_directories(dir + "/concept_types");
    std::ofstream(dir + "/concept_types/concept.json") << R"({"format": "singleinsert-concept", "version": 1, "trigger": 5})";
    cv::imwrite(dir + "/black_mask.png", cv::Mat(64, 64, CV_8UC1, cv::Scalar(0)));
    cv::imwrite(dir + "/white_mask.png", cv::Mat(64, 64, CV_8UC1, cv::Scalar(255)));
    cv::imwrite(dir + "/small_mask.png", cv::Mat(48, 48, CV_8UC1, cv::Scalar(255)));
    cv::imwrite(dir + "/one_pixel.png", cv::Mat(1, 1, CV_8UC3, cv::Scalar(9, 9, 9)));
    std::ofstream(dir + "/huge.png", std::ios::binary) << png_header_claiming(20000, 20000);
    cv::Mat deep;
    cv::imread(image_file(), cv::IMREAD_COLOR).convertTo(deep, CV_16UC3, 257.0);
    cv::imwrite(dir + "/deep.png", deep);
    fs::copy_file(std::string(SINGLEINSERT_SOURCE_DIR) + "/tests/data/cmyk_red_to_blue.jpg", dir + "/cmyk.jpg");
    std::ofstream(dir + "/junk.png") << "not an image";
    std::vector<uint8_t> jpeg;
    cv::imencode(".jpg", cv::imread(image_file(), cv::IMREAD_COLOR), jpeg);
    std::ofstream(dir + "/cut.jpg", std::ios::binary).write(reinterpret_cast<const char*>(jpeg.data()),
                                                            static_cast<std::streamsize>(jpeg.size() * 2 / 3));
  }
  // A real concept, then copies of it with a wider embedding.
  {
    const CliResult trained = run_cli(invert_args(preset, dir + "/concept_ok", image_file(), mask_file()));
    ASSERT_EQ(trained.exit_code, 0) << trained.err;
    fs::copy(dir + "/concept_ok", dir + "/concept_wide", fs::copy_options::recursive);
    const SafetensorsFile embedding = SafetensorsFile::open(dir + "/concept_ok/embedding.safetensors");
    const std::string key = embedding.keys().front();
    fs::remove(dir + "/concept_wide/embedding.safetensors");
    save_safetensors(dir + "/concept_wide/embedding.safetensors", {{key, at::zeros({1, 1024})}});
  }

  ASSERT_GE(cases.size(), 40u);
  std::string table = "| # | given | command | exit | message |\n|---|---|---|---|---|\n";
  int row = 0;
  for (const BadInput& c : cases) {
    SCOPED_TRACE(c.given);
    const CliResult result = run_cli(c.args, c.shell_prefix);
    if (c.outcome == Outcome::kRefused) {
      EXPECT_NE(result.exit_code, 0);
      EXPECT_EQ(result.err.rfind("error: ", 0), 0u) << result.err;
      EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
      EXPECT_TRUE(result.out.empty()) << result.out;
      if (!c.out.empty()) {
        EXPECT_FALSE(fs::exists(c.out)) << "left " << c.out << " behind";
      }
    } else {
      EXPECT_EQ(result.exit_code, 0) << result.err;
    }
    EXPECT_NE(result.err.find(c.message), std::string::npos) << "expected '" << c.message << "' in: " << result.err;
    std::string command = "`singleinsert";
    for (const auto& arg : c.args) command += " " + shown_arg(arg, dir);
    command += "`";
    std::string message = result.err;
    if (c.outcome == Outcome::kWarned) {
      const size_t at = message.find(c.message);
      const size_t begin = at == std::string::npos ? 0 : message.rfind('\n', at) + 1;
      message = message.substr(begin, message.find('\n', begin) - begin);
    }
    table += fmt::format("| {} | {} | {} | {} | {} |\n", ++row, table_cell(c.given), table_cell(command),
                         result.exit_code, table_cell(without_paths(message, dir)));
  }
  if (const char* path = std::getenv("SINGLEINSERT_ROBUSTNESS_TABLE")) std::ofstream(path) << table;

  // The docs show every case.
  const std::string docs = read_file(std::string(SINGLEINSERT_SOURCE_DIR) + "/docs/robustness.md");
  for (const BadInput& c : cases) EXPECT_NE(docs.find("| " + table_cell(c.given) + " |"), std::string::npos) << c.given;
}

}  // namespace
}  // namespace singleinsert
