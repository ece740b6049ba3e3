#pragma once
// The concept artifact: a folder users keep, share and compose.
//   concept.json            format version, trigger, class, stage, every training setting, the
//                           sha256 of the source image, mask and base model, wall times, losses
//   embedding.safetensors   {"<trigger>": [n, D]} (diffusers' learned_embeds layout; n vectors
//                           for textual inversion and Cross Initialization, 1 for SingleInsert)
//   lora.safetensors        stage II: LoRA weights (diffusers' processor layout; rank and alpha
//                           in the metadata)
//   encoder.safetensors     SingleInsert's image encoder (stage II starts from it)
//   kv_tokens.safetensors   Beyond Inserting's per-stage tokens: "keys" and "values" [S, D], one
//                           row per UNet stage (models/cross_attention.h), used in the trigger's
//                           place at that stage's cross-attention ("stages" in the metadata)
//   source.png, mask.png    the inputs as trained on, so finetune needs only --concept (the mask
//                           only where one was given: the other methods do not need it)
// It is built in "<folder>.partial" and renamed into place when complete, so an interrupted run
// never leaves a half-written concept; the checkpoint for --resume lives there meanwhile.
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "singleinsert/core/safetensors.h"
#include "singleinsert/models/lora.h"
#include "singleinsert/training/trainer.h"

namespace singleinsert {

inline constexpr int kConceptFormatVersion = 1;

struct Concept {
  std::string path;
  std::string trigger;
  std::string class_word;
  std::string method = "singleinsert";  // or textual-inversion, cross-init
  int stage = 1;
  std::string base_model_sha256;
  std::string json;          // concept.json as written
  at::Tensor embedding;      // [n, D]
  LoraWeightMap lora;        // empty for stage I
  at::Tensor kv_keys, kv_values;  // [S, D] each, or undefined (Beyond Inserting without kv_tokens, other methods)
  int64_t lora_rank = 0;
  double lora_alpha = 0;

  // Reads and checks a concept folder (clear errors for anything missing or inconsistent).
  static Concept load(const std::string& path);
  std::string encoder_file() const;
  std::string source_image_file() const;
  std::string mask_file() const;
};

class ConceptBuilder {
 public:
  // Refuses an existing folder unless `overwrite`, and an interrupted run's leftovers unless
  // `resume` (continue it) or `overwrite` (discard it).
  ConceptBuilder(const std::string& path, bool overwrite, bool resume);
  // A run that stops before its first checkpoint leaves nothing behind.
  ~ConceptBuilder();

  const std::string& staging() const { return staging_; }
  std::string staged(const std::string& name) const;

  void save_checkpoint(const TrainingState& state, const std::string& run_json);
  // The checkpoint and the run description it was made with, if one exists.
  std::optional<std::pair<TrainingState, std::string>> load_checkpoint() const;

  // Writes the final files (PNGs are added by the caller into staging()) and moves the folder
  // into place.
  void write_embedding(const std::string& trigger, const at::Tensor& embedding);
  void write_lora(const LoraWeightMap& lora, int64_t rank, double alpha);
  void write_encoder(const NamedTensors& encoder);
  void write_kv_tokens(const at::Tensor& tokens);  // [2S, D], keys first
  void write_json(const std::string& json);
  void commit();

 private:
  std::string path_, staging_;
  bool overwrite_;
  bool committed_ = false;
};

// What concept.json says of a finished run, whatever the method; concept_json writes it and
// Concept::load reads it back.
struct ConceptRecord {
  std::string method = "singleinsert";
  std::string trigger, class_word;
  int stage = 1;
  std::string model_path, unet_sha256;  // the base model as given, and its UNet file's sha256
  std::string image, image_sha256;      // the source photo as given (absolute path)
  std::string mask, mask_sha256;        // empty when the method ran without a mask
  std::optional<double> foreground_fraction;
  std::string training_json;            // the method's settings, as its config writes them
  std::string init_json;                // how the embedding started (textual inversion, Cross Initialization)
  int64_t embedding_vectors = 1, embedding_width = 0;
  double stage1_seconds = 0, stage2_seconds = 0;
  std::vector<StepRecord> history;      // every stage's rows, stage I's first
  struct Lora {
    int64_t rank = 0;
    double alpha = 0;
    size_t modules = 0;
    std::string parent_concept;         // the stage I concept it continued, if any
  };
  std::optional<Lora> lora;             // stage II
  int64_t kv_stages = 0;                // Beyond Inserting's per-stage tokens (0: none)
  std::string device;
};
std::string concept_json(const ConceptRecord& record);

// The history of a run as JSON rows and back (stored in concept.json and checkpoints).
std::string history_json(const std::vector<StepRecord>& history);
std::vector<StepRecord> parse_history(const std::string& json);

}  // namespace singleinsert
