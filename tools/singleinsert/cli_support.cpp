#include "cli_support.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/io/png.h"
#include "singleinsert/models/vae.h"

#include <optional>

namespace fs = std::filesystem;

namespace singleinsert::cli {

ProgressLine::ProgressLine() : interactive_(isatty(STDERR_FILENO) == 1) {}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::operator()(const ProgressReport& report) {
  if (!interactive_) return;
  if (report.stage != stage_) {
    finish();
    stage_ = report.stage;
    // Rate and ETA count from the stage's first report (a resumed run starts past step 1).
    stage_start_ = report.elapsed_seconds;
    stage_first_step_ = report.step;
  }
  const double stage_elapsed = report.elapsed_seconds - stage_start_;
  std::string line = fmt::format("{} {}/{}", report.stage, report.step, report.total);
  for (const auto& [name, value] : report.values) line += fmt::format("  {} {:.4g}", name, value);
  if (report.step > stage_first_step_ && stage_elapsed > 0) {
    const double rate = static_cast<double>(report.step - stage_first_step_) / stage_elapsed;
    const double eta = rate > 0 ? static_cast<double>(report.total - report.step) / rate : 0;
    line += rate >= 1 ? fmt::format("  {:.2f} it/s", rate) : fmt::format("  {:.2f} s/it", 1.0 / rate);
    line += "  ETA " + format_duration(eta);
  }
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
  open_ = true;
}

void ProgressLine::finish() {
  if (open_) std::fprintf(stderr, "\n");
  open_ = false;
}

OutputDirectory::OutputDirectory(const std::string& dir, bool overwrite) : dir_(dir) {
  std::error_code error;
  if (fs::is_directory(dir, error) && !fs::is_empty(dir, error) && !overwrite)
    throw Error(fmt::format("{}: already exists and is not empty (pass --overwrite to write into it)", dir));
  created_ = !fs::exists(dir, error);
  ensure_writable_directory(dir);
}

OutputDirectory::~OutputDirectory() {
  std::error_code error;
  if (created_ && !committed_ && fs::is_empty(dir_, error)) fs::remove(dir_, error);
}

void add_model_flags(CLI::App* command, ModelFlags& flags) {
  command->add_option("--model", flags.model, "Diffusers folder, or a single-file .safetensors checkpoint")->required();
  command->add_option("--model-config", flags.sources.model_config,
                      "For a single file: a diffusers-style folder with its configs and tokenizer/ (default: SD v1.5's)");
  command->add_option("--tokenizer", flags.sources.tokenizer, "For a single file: a CLIP tokenizer folder");
}

namespace {
std::optional<JsonConfig> config_file(const ModelFlags& flags, const std::string& component) {
  fs::path root = fs::is_directory(flags.model) ? fs::path(flags.model) : fs::path(flags.sources.model_config);
  if (root.empty() || !fs::exists(root / component / "config.json")) return std::nullopt;
  return JsonConfig::load((root / component / "config.json").string());
}
}  // namespace

int64_t vae_factor(const ModelFlags& flags) {
  const auto vae = config_file(flags, "vae");
  return vae ? VaeConfig::from_json(*vae).downsampling_factor() : VaeConfig().downsampling_factor();
}

UNetConfig unet_config(const ModelFlags& flags) {
  const auto unet = config_file(flags, "unet");
  return unet ? UNetConfig::from_json(*unet) : UNetConfig::sd15();
}

VaeConfig vae_config(const ModelFlags& flags) {
  const auto vae = config_file(flags, "vae");
  return vae ? VaeConfig::from_json(*vae) : VaeConfig();
}

int native_image_size(const ModelFlags& flags) {
  const auto unet = config_file(flags, "unet");
  return (unet ? unet->get_int("sample_size", 64) : 64) * static_cast<int>(vae_factor(flags));
}

std::string format_duration(double seconds) {
  const auto total = static_cast<long>(seconds + 0.5);
  if (total >= 3600) return fmt::format("{}:{:02}:{:02}", total / 3600, (total / 60) % 60, total % 60);
  return fmt::format("{}:{:02}", total / 60, total % 60);
}

AutoencoderKL load_model_vae(const std::string& model_folder) {
  const std::filesystem::path dir = std::filesystem::path(model_folder) / "vae";
  AutoencoderKL vae(VaeConfig::from_json(JsonConfig::load((dir / "config.json").string())));
  load_state_dict(*vae, SafetensorsFile::open((dir / "diffusion_pytorch_model.safetensors").string()));
  vae->eval();
  return vae;
}

std::vector<std::filesystem::path> generation_files(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw Error(dir + ": not a folder");
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const fs::path& path = entry.path();
    std::string ext = path.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    const bool image = ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".webp" || ext == ".bmp";
    const std::string stem = path.stem().string();
    const bool mask = stem.size() > 5 && stem.compare(stem.size() - 5, 5, "_mask") == 0;
    if (entry.is_regular_file() && image && !mask && path.filename() != "grid.png") files.push_back(path);
  }
  if (files.empty()) throw Error(dir + ": no images (.png, .jpg, .jpeg, .webp, .bmp)");
  std::sort(files.begin(), files.end());
  return files;
}

std::string recorded_prompt(const std::filesystem::path& path) {
  if (path.extension() != ".png") return {};
  const auto text = read_png_text(path.string());
  const auto record = text.find("singleinsert");
  if (record != text.end()) {
    const nlohmann::json json = nlohmann::json::parse(record->second, nullptr, /*allow_exceptions=*/false);
    if (json.is_object() && json.contains("prompt") && json.at("prompt").is_string())
      return json.at("prompt").get<std::string>();
  }
  const auto plain = text.find("prompt");
  return plain != text.end() ? plain->second : std::string();
}

}  // namespace singleinsert::cli
