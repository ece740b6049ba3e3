#pragma once
// What the metric-model loaders share: a transformers folder's config.json checked for its kind,
// and its weights file.
#include <string>
#include <vector>

#include "singleinsert/core/json_config.h"

namespace singleinsert {

// FOLDER/config.json, refused with a one-line Error unless its model_type is one of `model_types`
// (`what` names the expected model in the message).
JsonConfig read_metric_config(const std::string& folder, const std::string& what,
                              const std::vector<std::string>& model_types);
// FOLDER/model.safetensors; a folder with only pytorch_model.bin is told how to convert it.
std::string metric_weights_file(const std::string& folder, const std::string& what);

}  // namespace singleinsert
