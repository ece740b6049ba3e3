#include "singleinsert/metrics/metric_folder.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "singleinsert/core/error.h"

namespace fs = std::filesystem;

namespace singleinsert {

JsonConfig read_metric_config(const std::string& folder, const std::string& what,
                              const std::vector<std::string>& model_types) {
  if (!fs::is_directory(folder)) throw Error(fmt::format("{}: not a folder (a {} model folder is needed)", folder, what));
  const fs::path path = fs::path(folder) / "config.json";
  if (!fs::exists(path)) throw Error(fmt::format("{}: no config.json (a {} model folder is needed)", folder, what));
  JsonConfig config = JsonConfig::load(path.string());
  const std::string type = config.get_string("model_type", "");
  if (std::find(model_types.begin(), model_types.end(), type) == model_types.end())
    throw Error(fmt::format("{}: model_type '{}' is not a {} model (expected '{}')", path.string(), type, what,
                            fmt::join(model_types, "' or '")));
  return config;
}

std::string metric_weights_file(const std::string& folder, const std::string& what) {
  const fs::path path = fs::path(folder) / "model.safetensors";
  if (fs::exists(path)) return path.string();
  if (fs::exists(fs::path(folder) / "pytorch_model.bin"))
    throw Error(fmt::format("{}: only pytorch_model.bin; save the {} model with safe_serialization "
                            "(model.save_pretrained(folder)) to get model.safetensors",
                            folder, what));
  throw Error(fmt::format("{}: no model.safetensors", folder));
}

}  // namespace singleinsert
