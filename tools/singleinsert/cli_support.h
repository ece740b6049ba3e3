#pragma once
// Shared pieces of the command line: progress on a terminal, one-line errors, output folders.
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "singleinsert/core/progress.h"
#include "singleinsert/pipeline/model_bundle.h"

namespace singleinsert::cli {

// Live progress ("denoise 12/50  3.1 it/s  ETA 0:12") on stderr when it is a terminal;
// silent otherwise, so piped output stays parseable.
class ProgressLine {
 public:
  ProgressLine();
  ~ProgressLine();
  void operator()(const ProgressReport& report);
  void finish();  // ends the live line
  bool interactive() const { return interactive_; }

 private:
  bool interactive_;
  bool open_ = false;
  std::string stage_;
  double stage_start_ = 0;
  int64_t stage_first_step_ = 0;
};

// An output folder checked before any work: a non-empty existing folder is refused unless
// `overwrite` (nothing is lost), and it must be writable (nothing is computed in vain). A
// folder created here and left empty is removed again if the run fails before commit().
class OutputDirectory {
 public:
  OutputDirectory(const std::string& dir, bool overwrite);
  ~OutputDirectory();
  void commit() { committed_ = true; }
  const std::string& path() const { return dir_; }

 private:
  std::string dir_;
  bool created_ = false;
  bool committed_ = false;
};

std::string format_duration(double seconds);

// --model, and for single-file checkpoints --model-config and --tokenizer.
struct ModelFlags {
  std::string model;
  ModelSourceOptions sources;
};
void add_model_flags(CLI::App* command, ModelFlags& flags);
// The model's native image size (UNet sample_size x VAE factor; 512 for SD v1.5).
int native_image_size(const ModelFlags& flags);
int64_t vae_factor(const ModelFlags& flags);
// Only the VAE of a diffusers model folder (its folder needs no tokenizer), in eval mode.
AutoencoderKL load_model_vae(const std::string& model_folder);

// The generations in a folder: image files in name order, without generate's grid.png and
// *_mask.png files. Error for a missing or empty folder.
std::vector<std::filesystem::path> generation_files(const std::string& dir);
// The prompt `generate` recorded in a PNG (its "singleinsert" record, else a "prompt" chunk);
// empty when the file records none.
std::string recorded_prompt(const std::filesystem::path& path);

// The UNet's and VAE's configs, read without loading weights (SD v1.5's when a file has none).
UNetConfig unet_config(const ModelFlags& flags);
VaeConfig vae_config(const ModelFlags& flags);

}  // namespace singleinsert::cli
