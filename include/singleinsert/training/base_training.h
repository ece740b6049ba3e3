#pragma once
// Trains a small Stable-Diffusion-architecture model from scratch on captioned images: first the
// VAE (reconstruction + KL), then the text encoder and the UNet together (epsilon prediction,
// captions dropped to "" at a given rate so classifier-free guidance works), and writes the
// result as a diffusers folder that every other command loads. The run checkpoints itself and
// resumes to exactly the result of an uninterrupted run.
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
  int warmup_steps = 0;            // linear warm-up from 0
  double final_lr_fraction = 1.0;  // then cosine decay to lr * this (1: constant)
  double lr_at(int step) const;    // the schedule, step 0-based
};

struct BaseTrainingConfig {
  int resolution = 64;
  uint64_t seed = 0;
  BasePhase vae{2000, 16, 1e-3};
  double kl_weight = 1e-4;  // on the per-element KL, against the per-element squared error
  BasePhase diffusion{20000, 32, 3e-4};
  double caption_dropout = 0.1;
  double ema_decay = 0.0;      // > 0: the saved text encoder and UNet are exponential moving averages
  double min_snr_gamma = 0.0;  // > 0: min-SNR-gamma loss weighting (Hang et al. 2023)
  // > 0: offset noise, a per-sample, per-channel constant of this scale added to the training
  // noise, so that the noisiest steps cannot read global colour from the noise's mean.
  double noise_offset = 0.0;
  // > 0: the same for the next coarsest patterns: noise on 2x2 and 4x4 grids of this scale,
  // upsampled bilinearly, so that the left-right balance of the noise cannot place the subject.
  double coarse_noise = 0.0;
  // > 0: the loss on latent positions that show a batch's detail regions (CaptionedBatch::detail,
  // max-pooled to the latents) is weighted 1 + this, so that small captioned details, a mouth's
  // expression or earrings, are learned with the words that name them.
  double detail_weight = 0.0;
  // > 0: timesteps are drawn from [min_timestep, 1000) instead of [0, 1000), so a continuation
  // trains only the noisiest steps, where the layout (the subject's side) is decided from the
  // caption; finer steps, and what they draw, are left as they are.
  int min_timestep = 0;
  // A model folder to start from (its VAE and scaling factor, frozen; its text encoder and UNet
  // as the diffusion phase's starting weights): the VAE phase is skipped. Empty: from scratch.
  std::string init_model;
  // With init_model: take only its VAE and scaling factor; the text encoder and UNet start fresh,
  // so a new diffusion recipe can be run without retraining the VAE (or what reads its images).
  bool init_vae_only = false;
  std::string precision = "fp32";  // or "bf16": autocast for the forward passes, float32 weights
  int checkpoint_every = 250;      // steps; also written on Ctrl-C
  // The components' config.json texts (diffusers / transformers keys); the text encoder's
  // vocab_size is set from the tokenizer.
  std::string vae_config, unet_config, text_encoder_config;

  // {"resolution", "seed", "precision", "checkpoint_every",
  //  "vae": {steps, batch_size, lr, weight_decay, warmup_steps, final_lr_fraction, kl_weight, config},
  //  "diffusion": {..., caption_dropout, ema_decay, min_snr_gamma, noise_offset, coarse_noise,
  //                 detail_weight, min_timestep}, "unet": {...},
  //  "text_encoder": {...}}; init_model comes from the command line.
  static BaseTrainingConfig from_json(const JsonConfig& json);
  void validate() const;
  std::string to_json() const;  // the settings that shape the run (a resumed run must match them)
};

struct CaptionedBatch {
  at::Tensor images;  // float32 [B, 3, R, R] in [-1, 1], CPU
  std::vector<std::string> captions;
  at::Tensor detail;  // float32 [B, 1, R, R] in [0, 1], CPU: the small details' regions; read when
                      // detail_weight > 0 (undefined: none)
};
// Returns `count` examples starting at example `first` of an endless, deterministic stream, with
// their detail regions when `with_details` (only the weighted diffusion phase reads them).
using CaptionedSource = std::function<CaptionedBatch(uint64_t first, int count, bool with_details)>;

struct BaseTrainingSummary {
  double vae_loss_first = 0, vae_loss_last = 0;              // means over the first / last 10% of steps
  double diffusion_loss_first = 0, diffusion_loss_last = 0;
  double vae_seconds = 0, diffusion_seconds = 0;             // summed over every part of a resumed run
  double scaling_factor = 0;
  int resumed_from_step = -1;  // the checkpoint's global step, or -1 for a fresh run
};

// The checkpoint train_base_model keeps beside `out_dir` while it runs.
std::string base_checkpoint_path(const std::string& out_dir);

// Trains and writes the diffusers folder `out_dir` atomically (with the tokenizer of
// `vocabulary`, scheduler, model_index.json and train_base.json recording the run). Weights are
// saved in `save_dtype`. A checkpoint is kept at base_checkpoint_path(out_dir) every
// `checkpoint_every` steps and on Ctrl-C (then Error is thrown); `resume` continues from it.
// Throws Error on a non-finite loss (the last checkpoint stays).
BaseTrainingSummary train_base_model(const BaseTrainingConfig& config, const std::vector<std::string>& vocabulary,
                                     const CaptionedSource& source, const std::string& out_dir,
                                     const ExecutionOptions& execution, c10::ScalarType save_dtype,
                                     const ProgressCallback& progress = {}, bool resume = false);

// Writes the run's current state (the checkpoint beside `out_dir`, EMA weights when the run keeps
// them) as a model folder at `snapshot_dir`, while the run goes on: for measuring a long run
// part of the way.
void export_base_snapshot(const BaseTrainingConfig& config, const std::vector<std::string>& vocabulary,
                          const std::string& out_dir, const std::string& snapshot_dir, c10::ScalarType save_dtype);

}  // namespace singleinsert
