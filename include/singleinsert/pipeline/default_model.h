#pragma once
// The embedded default model: a small Stable-Diffusion-architecture model the project builds
// itself (fixed-seed random weights, a small BPE vocabulary in CLIP's file format), written as a
// diffusers folder. It exercises every code path without downloading anything; being
// untrained, it draws noise.
#include <cstdint>
#include <string>
#include <memory>
#include <vector>

#include "singleinsert/pipeline/model_bundle.h"

namespace singleinsert {

// The words the default vocabulary spells as single tokens.
const std::vector<std::string>& default_vocabulary_words();

// Writes vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json for a
// byte-level BPE vocabulary containing `words` (lower-case ASCII) into `directory`.
void write_small_clip_tokenizer(const std::string& directory, const std::vector<std::string>& words);

// Creates the default model folder at `directory` (atomically: it appears whole or not at all);
// refuses a `directory` that has files.
void create_default_model(const std::string& directory, uint64_t seed = 0);

// The architectures models can be built from without weights files.
enum class Architecture { kSd15, kDefault };

// A model bundle with seeded random weights in memory (benchmarks, smoke tests): the full
// SD v1.5 architecture or the embedded default's. Its tokenizer is the default vocabulary,
// written under `scratch_dir`.
std::shared_ptr<ModelBundle> random_model_bundle(Architecture architecture, const ExecutionOptions& execution,
                                                 const std::string& scratch_dir, uint64_t seed = 0);

}  // namespace singleinsert
