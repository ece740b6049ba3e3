#pragma once
// Strict loading of weights into modules: every parameter and persistent buffer must be in
// the file with the same shape, and every tensor in the file must be used, except the extras a
// format is known to carry. Floating-point files of any precision load into modules of any
// floating-point dtype.
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "singleinsert/core/safetensors.h"

namespace singleinsert {

struct LoadOptions {
  // File keys that may be present without a matching module tensor (e.g. CLIP's
  // "text_model.embeddings.position_ids").
  std::vector<std::string> tolerated_extra_keys;
  // Maps a key as written in the file to the module's key (legacy names); identity if unset.
  std::function<std::string(const std::string&)> rename;
  // Only file keys with this prefix are considered; it is removed before matching.
  std::string prefix;
  // File keys with any of these prefixes (after renaming) are skipped: parts of a file the module
  // leaves out on purpose (a VAE built without its encoder).
  std::vector<std::string> skipped_prefixes;
  // The mapped file that in-memory tensors are views of, whose pages are released as each one is
  // copied (the file overload does this by itself).
  const SafetensorsFile* mapped_file = nullptr;
};

// The module's tensors keyed by their registered names.
std::map<std::string, at::Tensor> module_tensors(const torch::nn::Module& module);

void load_state_dict(torch::nn::Module& module, const SafetensorsFile& file,
                     const LoadOptions& options = {});

// Same checks against an in-memory map (used for converted formats).
void load_state_dict(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                     const std::string& origin, const LoadOptions& options = {});

NamedTensors state_dict(const torch::nn::Module& module);

// Gives every floating-point parameter and buffer a fresh uninitialised tensor of `dtype` on
// `device`, for a model about to be loaded: nothing is copied or touched, so a model built in
// float32 and loaded in bf16 never holds a float32 copy of its weights.
void allocate_uninitialised(torch::nn::Module& module, const c10::Device& device, at::ScalarType dtype);

}  // namespace singleinsert
