#pragma once
// A CLIP for the toy world, so that the metrics of `eval images` (CLIP-I, CLIP-T and the ESR
// judge) can be checked where the truth is known: both towers trained from scratch with CLIP's
// contrastive loss on renders of training scenes and their training captions (parts left out at
// random, as base training does, so that short texts such as "a photo of a face wearing a hat"
// are ones it has read). Saved as a transformers CLIPModel folder.
#include <map>
#include <string>

#include "singleinsert/core/progress.h"
#include "singleinsert/metrics/clip_model.h"
#include "singleinsert/models/clip_tokenizer.h"
#include "singleinsert/models/vae.h"
#include "singleinsert/world/detector.h"

namespace singleinsert::world {

struct ClipTrainingOptions {
  int steps = 3000;
  int batch_size = 128;
  double lr = 1e-3;
  uint64_t seed = 0;
  int64_t width = 128, layers = 4, heads = 4;
  int64_t image_size = 64, patch_size = 8;
  double vae_share = 0.5;  // of the batches decoded by the world model's VAE (generations are its images)
  bool bf16 = true;        // autocast the forward passes
  // A checkpoint (weights, AdamW's moments, the step) is written here every `checkpoint_every`
  // steps and on Ctrl-C (then the run stops with an Error); empty: none.
  std::string checkpoint;
  int checkpoint_every = 200;
  bool resume = false;  // continue from `checkpoint` to exactly the weights of an uninterrupted run
};

// Trains on scenes 0, 1, ... (kept below the held-out range). `vae` may be null.
ClipModel train_world_clip(const ClipTrainingOptions& options, const ClipTokenizer& tokenizer,
                           const ProgressCallback& progress = {}, AutoencoderKL* vae = nullptr);

// Whether `attributes` (a Detection's, or attribute_map of a scene: its truth) show `edit` (a
// world edit name: "sunglasses", "green-background", ...): every attribute head the edit sets
// holds the value it sets.
bool edit_shown(const std::map<std::string, int64_t>& attributes, const std::string& edit);
std::map<std::string, int64_t> attribute_map(const Scene& scene);  // head name -> label

}  // namespace singleinsert::world
