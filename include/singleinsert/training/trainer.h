#pragma once
// SingleInsert's two stages. Stage I (invert) trains only the image encoder, the base model
// frozen; stage II (finetune) trains the encoder and LoRA adapters on the UNet's and the text
// encoder's attention projections. Randomness (posterior samples, noise, timesteps) comes from a
// CPU generator seeded per step from (seed, stage, step), so a run is reproducible on any
// device and a resumed run continues exactly where the interrupted one stopped.
#include <ATen/core/Tensor.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "singleinsert/models/clip_vision_model.h"
#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/lora.h"
#include "singleinsert/training/base_model.h"
#include "singleinsert/training/source_data.h"
#include "singleinsert/training/step_loop.h"
#include "singleinsert/training/training_config.h"

namespace singleinsert {

class SingleInsertTrainer {
 public:
  // `trigger_ids`: "<trigger> <class>" token ids [1, L]; `class_ids`: "<class>" [1, L].
  SingleInsertTrainer(BaseModel base, ClipVisionModel encoder, const TrainingConfig& config,
                      const PreparedSource& source, at::Tensor trigger_ids, at::Tensor class_ids);
  ~SingleInsertTrainer();

  // The face-wise attention loss's reference prompt (config attn_weight > 0): `reference_ids`
  // [1, L] is "<attn_reference> <class>", whose token `class_position` is the class word.
  void set_attention_reference(const at::Tensor& reference_ids, int64_t class_position);

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
  class Stage;
  at::Tensor bounded(const at::Tensor& embedding) const;  // config embedding_max_norm applied
  BaseModel base_;
  ClipVisionModel encoder_;
  TrainingConfig config_;
  at::Tensor cond_pixels_, mask_, trigger_ids_, class_ids_;
  at::Tensor posterior_mean_, posterior_std_;  // computed once: the source's latent distribution
  at::Tensor reference_states_;                // [1, L, D]: the attention loss's reference prompt
  int64_t class_position_ = 0;
  std::set<std::string> attention_layers_;     // the layers the attention loss reads
  NoiseSchedule schedule_;
  std::shared_ptr<LoraNetwork> lora_;
  std::vector<StepRecord> history_;
};

// The LoRA targets SingleInsert trains: UNet attention and text-encoder self-attention projections.
std::map<std::string, AdaptableLayer*> singleinsert_lora_targets(UNet2DConditionModelImpl& unet,
                                                                 ClipTextModelImpl& text_encoder);

}  // namespace singleinsert
