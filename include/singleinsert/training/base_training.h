#pragma once
// Trains a small Stable-Diffusion-architecture model from scratch on captioned images: first the
// VAE (reconstruction + KL), then the text encoder and the UNet together (epsilon prediction,
// captions dropped to "" at a given rate so classifier-free guidance works), and writes the
// result as a diffusers folder that every other command loads.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "singleinsert/core/progress.h"
#include "singleinsert/pipeline/device.h"

namespace singleinsert {

class JsonConfig;

struct BasePhase {
  int steps = 0;
  int batch_size = 16;
  double lr = 1e-3;
  double weight_decay = 1e-2;
};

struct BaseTrainingConfig {
  int resolution = 64;
  uint64_t seed = 0;
  BasePhase vae{2000, 16, 1e-3};
  double kl_weight = 1e-4;  // on the per-element KL, against the per-element squared error
  BasePhase diffusion{20000, 32, 3e-4};
  double caption_dropout = 0.1;
  // The components' config.json texts (diffusers / transformers keys); the text encoder's
  // vocab_size is set from the tokenizer.
  std::string vae_config, unet_config, text_encoder_config;

  // {"resolution", "seed", "vae": {steps, batch_size, lr, weight_decay, kl_weight, config},
  //  "diffusion": {steps, batch_size, lr, weight_decay, caption_dropout}, "unet": {...},
  //  "text_encoder": {...}}
  static BaseTrainingConfig from_json(const JsonConfig& json);
  void validate() const;
};

struct CaptionedBatch {
  at::Tensor images;  // float32 [B, 3, R, R] in [-1, 1], CPU
  std::vector<std::string> captions;
};
// Returns `count` examples starting at example `first` of an endless, deterministic stream.
using CaptionedSource = std::function<CaptionedBatch(uint64_t first, int count)>;

struct BaseTrainingSummary {
  double vae_loss_first = 0, vae_loss_last = 0;              // means over the first / last 10% of steps
  double diffusion_loss_first = 0, diffusion_loss_last = 0;
  double vae_seconds = 0, diffusion_seconds = 0;
  double scaling_factor = 0;
};

// Trains and writes the diffusers folder `out_dir` atomically (with the tokenizer of
// `vocabulary`, scheduler, model_index.json and train_base.json recording the run). Weights are
// saved in `save_dtype`. Throws Error on a non-finite loss or an interrupt (nothing is written).
BaseTrainingSummary train_base_model(const BaseTrainingConfig& config, const std::vector<std::string>& vocabulary,
                                     const CaptionedSource& source, const std::string& out_dir,
                                     const ExecutionOptions& execution, c10::ScalarType save_dtype,
                                     const ProgressCallback& progress = {});

}  // namespace singleinsert
