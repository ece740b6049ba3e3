#pragma once
// SingleInsert's two stages. Stage I (invert) trains only the image encoder, the base model
// frozen; stage II (finetune) trains the encoder and LoRA adapters on the UNet's and the text
// encoder's attention projections. Randomness (posterior samples, noise, timesteps) comes from a
// CPU generator seeded per step from (seed, stage, step), so a run is reproducible on any
// device and a resumed run continues exactly where the interrupted one stopped.
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "singleinsert/core/error.h"
#include "singleinsert/models/clip_vision_model.h"
#include "singleinsert/core/progress.h"
#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/lora.h"
#include "singleinsert/models/unet.h"
#include "singleinsert/models/vae.h"
#include "singleinsert/sampling/noise_schedule.h"
#include "singleinsert/training/adamw.h"
#include "singleinsert/training/source_data.h"
#include "singleinsert/training/training_config.h"

namespace singleinsert {

struct StepRecord {
  int stage = 1;
  int step = 0;  // 1-based, after the update
  double loss = 0, fg = 0, bg = 0, sm = 0;
  double grad_norm = 0;
  double lr = 0;
  double seconds = 0;  // since the stage started (this process)
};

// Called every `checkpoint_every` steps and on interruption, with the state to persist.
struct TrainingState {
  int stage = 1;
  int step = 0;
  NamedTensors encoder;
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
  TrainingInterrupted(int stage, int step)
      : Error("interrupted"), stage(stage), step(step) {}
  int stage, step;
};

// The frozen base model the concept is inserted into (a model bundle's components).
struct BaseModel {
  UNet2DConditionModel unet{nullptr};
  ClipTextModel text_encoder{nullptr};
  AutoencoderKL vae{nullptr};
  NoiseScheduleConfig schedule;
  c10::Device device = c10::Device(c10::kCPU);
  // The frozen weights' dtype; bf16/fp16 runs each forward pass under autocast while the
  // trainable parameters and the optimizer state stay float32.
  at::ScalarType dtype = at::kFloat;
};

// Raised when the loss stops being finite; nothing is updated with that step's gradients.
class TrainingDiverged : public Error {
 public:
  TrainingDiverged(const std::string& message, int stage, int step) : Error(message), stage(stage), step(step) {}
  int stage, step;
};

class SingleInsertTrainer {
 public:
  // `trigger_ids`: "<trigger> <class>" token ids [1, L]; `class_ids`: "<class>" [1, L].
  SingleInsertTrainer(BaseModel base, ClipVisionModel encoder, const TrainingConfig& config,
                      const PreparedSource& source, at::Tensor trigger_ids, at::Tensor class_ids);
  ~SingleInsertTrainer();

  // Stage 2 attaches fresh (or given) LoRA adapters; `resume` restores a checkpoint of this stage.
  void run_stage(int stage, const TrainingCallbacks& callbacks, const TrainingState* resume = nullptr,
                 const LoraWeightMap* initial_lora = nullptr);

  // The trigger's word embedding from the trained encoder [1, D].
  at::Tensor embedding();
  NamedTensors encoder_state() const;
  LoraWeightMap lora_weights() const;
  LoraNetwork* lora() { return lora_.get(); }
  ClipVisionModel encoder_module() const { return encoder_; }
  const std::vector<StepRecord>& history() const { return history_; }

 private:
  BaseModel base_;
  ClipVisionModel encoder_;
  TrainingConfig config_;
  at::Tensor cond_pixels_, mask_, trigger_ids_, class_ids_;
  at::Tensor posterior_mean_, posterior_std_;  // computed once: the source's latent distribution
  NoiseSchedule schedule_;
  std::shared_ptr<LoraNetwork> lora_;
  std::vector<StepRecord> history_;
};

// The LoRA targets SingleInsert trains: UNet attention and text-encoder self-attention projections.
std::map<std::string, AdaptableLayer*> singleinsert_lora_targets(UNet2DConditionModelImpl& unet,
                                                                 ClipTextModelImpl& text_encoder);

}  // namespace singleinsert
