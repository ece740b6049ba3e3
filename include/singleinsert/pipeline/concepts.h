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

// A trigger is one word: 1 to 100 bytes of UTF-8 without spaces or control characters, and not
// one of CLIP's special tokens. Throws Error naming `origin` otherwise.
void validate_trigger(const std::string& trigger, const std::string& origin);

// Adds `token` (and token_1 ... token_{n-1} for n vectors) with these input embeddings; prompts
// then use the token, which expands to all of them. Errors if the width differs from the text
// encoder's, if the token is not a valid trigger, or if one of the tokens is already taken by
// another concept or embedding; warns if the token shadows a word of the vocabulary.
void insert_embedding(ModelBundle& bundle, const std::string& token, const at::Tensor& vectors, const std::string& origin,
                      bool warn_on_collision = true);

struct LoraRequest {
  std::string path;
  double scale = 1.0;
};
struct EmbeddingRequest {
  std::string path;
  std::string trigger;  // empty: the token in the file, or the file's name (A1111)
};
LoraRequest parse_lora_request(const std::string& text);            // "FILE[:SCALE]", SCALE finite
EmbeddingRequest parse_embedding_request(const std::string& text);  // "FILE[:TRIGGER]"

// LoRA files in any supported layout (kohya, diffusers/PEFT, diffusers' processor layout).
std::vector<std::shared_ptr<LoraNetwork>> apply_loras(ModelBundle& bundle, const std::vector<LoraRequest>& requests);
// Returns the triggers added.
std::vector<std::string> apply_embeddings(ModelBundle& bundle, const std::vector<EmbeddingRequest>& requests);

// Every adaptable module of the bundle (UNet and text encoder) by canonical path.
std::map<std::string, AdaptableLayer*> adaptable_modules(ModelBundle& bundle);

// The base model's identity recorded in concepts: sha256 of the UNet weights (cached).
std::string base_model_sha256(const ModelBundle& bundle);

// The bundle's components as the trainer's frozen base model.
BaseModel base_model(const ModelBundle& bundle);

}  // namespace singleinsert
