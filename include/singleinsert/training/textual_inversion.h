#pragma once
// Textual inversion (Gal et al. 2022) as diffusers' examples/textual_inversion/textual_inversion.py
// trains it, and Cross Initialization (Pang et al. 2024), which trains the same way from another
// starting point with a pull towards it:
//
//   e_k                 n learned input embeddings, the trigger and trigger_1 ... trigger_{n-1}
//   prompt              a random template ("a photo of a {}") holding the n tokens; the image
//                       flipped with probability flip_p
//   L_noise = mean((eps(x_t, t, text(prompt; e)) - noise)^2)      over the whole image
//   L       = L_noise + reg_weight * mean_k ||e_k - e_k^init + 1e-6||_2   (reg_weight = 0 for textual inversion)
//
// AdamW updates only the n rows (the reference optimises the whole table and then restores every
// other row, which is the same update for the new rows). The learning rate is learning_rate x
// batch when scale_lr (as the references scale it for one process without accumulation).
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/unet.h"
#include "singleinsert/sampling/noise_schedule.h"
#include "singleinsert/training/base_model.h"
#include "singleinsert/training/step_loop.h"

namespace singleinsert {

struct EmbeddingInversionConfig {
  std::string method = "textual-inversion";  // or "cross-init", "beyond-inserting"
  int resolution = 512;
  int steps = 5000;
  int batch = 16;
  double learning_rate = 1e-4;
  bool scale_lr = false;
  int num_vectors = 1;
  double flip_p = 0.5;
  std::string templates = "object";  // "object", "cross-init", or "world" (the toy world's words)
  std::string subject = "{}";        // what fills a template's "{}", "{}" standing for the n tokens
                                     // and "<class>" for the class word
  double reg_weight = 0;             // Cross Initialization's pull towards its starting point
  // Beyond Inserting (training/beyond_inserting.h) only:
  double attn_weight = 0.003;         // lambda of the face-wise attention loss (0: off)
  std::string attn_layers = "bottom";  // "bottom" or "all" (training/attention_loss.h)
  std::string attn_reference = "person";  // the word in the trigger's place in the reference prompt
  bool kv_tokens = true;              // per-stage key/value tokens (training/kv_tokens.h)
  StepSettings step;  // the reference does not clip: max_grad_norm 0

  double lr() const { return scale_lr ? learning_rate * batch : learning_rate; }
  void apply_json(const std::string& json_text, const std::string& origin);
  std::string to_json() const;
  void validate() const;
};

// A method's preset compiled in from configs/methods/ ("textual-inversion", "cross-init",
// "cross-init-fast") or a JSON file path.
std::string method_preset_json(const std::string& name_or_path);

// The prompt templates, "{}" standing for the subject.
const std::vector<std::string>& inversion_templates(const std::string& name);
// Every template with the subject holding `tokens` (the n tokens, space-separated); "<class>" in
// the subject stands for `class_word`.
std::vector<std::string> inversion_prompts(const EmbeddingInversionConfig& config, const std::string& tokens,
                                           const std::string& class_word = "");

// Text encoder states of `ids` [B, L] with the input embedding of token first_id + k replaced by
// vectors[k] (vectors [n, D]; gradients flow to them).
at::Tensor encode_with_vectors(ClipTextModelImpl& text_encoder, const at::Tensor& ids, int64_t first_id,
                               const at::Tensor& vectors);

// mean((eps(add_noise(z0, noise, t), t, states) - noise)^2): diffusers' epsilon-prediction loss.
at::Tensor noise_prediction_loss(UNet2DConditionModelImpl& unet, const NoiseSchedule& schedule, const at::Tensor& z0,
                                 const at::Tensor& noise, const at::Tensor& timesteps, const at::Tensor& states);

// Cross Initialization's regulariser, unweighted: mean over k of ||vectors[k] - start[k] + 1e-6||_2
// (torch's pairwise_distance, which the official code calls).
at::Tensor distance_to_start(const at::Tensor& vectors, const at::Tensor& start);

class EmbeddingInversion : public TrainingMethod {
 public:
  // `pixels` [1, 3, R, R] in [-1, 1]; `template_ids` [T, L]: every template with the n tokens;
  // `start` [n, D]: the initial embeddings.
  EmbeddingInversion(BaseModel base, const EmbeddingInversionConfig& config, const at::Tensor& pixels,
                     at::Tensor template_ids, int64_t first_id, const at::Tensor& start);

  std::vector<at::Tensor> parameters() override { return {vectors_}; }
  LossTerms loss(int step, at::Generator& generator) override;
  void save_state(TrainingState& state) const override;
  void load_state(const TrainingState& state) override;
  std::vector<std::string> progress_terms() const override;

  at::Tensor embedding() const { return vectors_.detach().cpu().clone(); }  // [n, D]
  StepLoopOptions step_options() const;

 protected:
  // One step's draws: templates, mirrors, posterior samples, noise and timesteps.
  struct Draw {
    at::Tensor choice;  // [B] template rows
    at::Tensor z0, noise, timesteps;
  };
  Draw draw(at::Generator& generator) const;

  BaseModel base_;
  EmbeddingInversionConfig config_;
  NoiseSchedule schedule_;
  at::Tensor template_ids_;
  int64_t first_id_;
  at::Tensor start_, vectors_;
  at::Tensor posterior_mean_, posterior_std_;  // [2, C, h, w]: the image and its mirror, encoded once
};

}  // namespace singleinsert
