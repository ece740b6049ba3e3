#pragma once
// The one training loop every method runs: per-step generators seeded from (seed, stage, step),
// AdamW on the method's trainable tensors, gradient clipping, the divergence check, progress,
// periodic and on-interrupt checkpoints, and resuming bit for bit from one. A method says only
// what differs: its trainable tensors, its loss, and its state to save and restore.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/progress.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/models/lora.h"
#include "singleinsert/training/adamw.h"

namespace singleinsert {

// One optimizer step. `terms` are the method's named loss terms (SingleInsert: fg, bg, sm).
struct StepRecord {
  int stage = 1;
  int step = 0;  // 1-based, after the update
  double loss = 0;
  std::vector<std::pair<std::string, double>> terms;
  double grad_norm = 0;
  double lr = 0;
  double seconds = 0;  // since the stage started (this process)

  double term(const std::string& name) const;  // 0 when the method has no such term
};

// What a checkpoint holds: the method's trainable tensors, its LoRA (kept in LoRA's own file
// layout), the optimizer's moments and the history so far.
struct TrainingState {
  int stage = 1;
  int step = 0;
  NamedTensors trainable;
  LoraWeightMap lora;
  NamedTensors optimizer;
  std::vector<StepRecord> history;
};

struct TrainingCallbacks {
  ProgressCallback progress;
  std::function<void(const StepRecord&)> on_step;
  std::function<void(const TrainingState&)> on_checkpoint;
};

// Raised when Ctrl-C stopped training after a checkpoint was written.
class TrainingInterrupted : public Error {
 public:
  TrainingInterrupted(int stage, int step) : Error("interrupted"), stage(stage), step(step) {}
  int stage, step;
};

// Raised when the loss stops being finite; nothing is updated with that step's gradients.
class TrainingDiverged : public Error {
 public:
  TrainingDiverged(const std::string& message, int stage, int step) : Error(message), stage(stage), step(step) {}
  int stage, step;
};

struct LossTerms {
  at::Tensor total;  // 0-d, differentiable
  std::vector<std::pair<std::string, at::Tensor>> terms;  // for records; detached or not
};

class TrainingMethod {
 public:
  virtual ~TrainingMethod() = default;
  // The tensors AdamW updates (float32 leaves that require gradients, in a fixed order).
  virtual std::vector<at::Tensor> parameters() = 0;
  // The loss of step `step` (0-based); every random draw comes from `generator`.
  virtual LossTerms loss(int step, at::Generator& generator) = 0;
  // The state a checkpoint keeps besides the optimizer's (its LoRA goes to `lora`).
  virtual void save_state(TrainingState& state) const = 0;
  virtual void load_state(const TrainingState& state) = 0;
  // The terms shown on the progress line besides the loss.
  virtual std::vector<std::string> progress_terms() const { return {}; }
};

struct StepLoopOptions {
  int stage = 1;  // 1 or 2: seeds the per-step generators and labels records
  int steps = 0;
  AdamWOptions adam;
  double max_grad_norm = 0;  // 0: no clipping (the norm is still recorded)
  uint64_t seed = 0;
  int checkpoint_every = 0;  // steps; 0 = only when interrupted
  std::string label;         // progress line's name, e.g. "stage I"
};

// The settings every method's config shares, under the same keys in presets and concept.json:
// AdamW's, clipping, the seed and how often to checkpoint.
struct StepSettings {
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8, weight_decay = 1e-2;
  double max_grad_norm = 0;  // 0: not clipped
  uint64_t seed = 0;
  int checkpoint_every = 100;

  static const std::vector<std::string>& keys();
  void read(const JsonConfig& json);
  void write(nlohmann::json& json) const;
  void validate() const;
  StepLoopOptions options(int stage, int steps, double lr, const std::string& label) const;
};

// Runs steps [resume->step, options.steps) and returns the stage's history (the resumed one's
// records first). `resume` must be a checkpoint of this stage.
std::vector<StepRecord> run_steps(TrainingMethod& method, const StepLoopOptions& options,
                                  const TrainingCallbacks& callbacks, const TrainingState* resume = nullptr);

}  // namespace singleinsert
