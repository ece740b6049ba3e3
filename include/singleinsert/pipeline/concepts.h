#pragma once
// Learned concepts in a model bundle: each trigger becomes an added token whose input embedding
// is the learned vector, and each stage II concept's LoRA is attached. Concepts with different
// triggers compose without joint training: their tokens are independent and their LoRA updates add.
#include <memory>
#include <string>
#include <vector>

#include "singleinsert/models/lora.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/training/concept.h"
#include "singleinsert/training/trainer.h"

namespace singleinsert {

struct ConceptRequest {
  std::string path;
  std::string trigger;  // empty: the concept's own
  double lora_scale = 1.0;
};

// "DIR" or "DIR:TRIGGER".
ConceptRequest parse_concept_request(const std::string& text);

struct AppliedConcepts {
  std::vector<std::string> triggers;
  std::vector<std::string> descriptions;  // "DIR (trigger '*', class 'face', stage 2)"
  std::vector<std::shared_ptr<LoraNetwork>> networks;  // detach when released
};

// Checks each concept against the bundle (base model hash, embedding width, distinct triggers)
// and applies it. Errors name the concept folder.
AppliedConcepts apply_concepts(ModelBundle& bundle, const std::vector<ConceptRequest>& requests);

// Every prompt must use at least one of the triggers (otherwise the concept has no effect).
void require_triggers(const std::vector<std::string>& prompts, const std::vector<std::string>& triggers);

// The base model's identity recorded in concepts: sha256 of the UNet weights (cached).
std::string base_model_sha256(const ModelBundle& bundle);

// The bundle's components as the trainer's frozen base model.
BaseModel base_model(const ModelBundle& bundle);

}  // namespace singleinsert
