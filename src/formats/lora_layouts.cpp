#include "singleinsert/formats/lora_layouts.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "singleinsert/core/error.h"

namespace singleinsert {
namespace {

// (suffix of the canonical module path, processor-layout infix) for the UNet's attention.
const std::pair<const char*, const char*> kUnetProjections[] = {
    {".to_q", ".processor.to_q_lora"}, {".to_k", ".processor.to_k_lora"},
    {".to_v", ".processor.to_v_lora"}, {".to_out.0", ".processor.to_out_lora"}};

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string file_prefix(const std::string& path, const std::string& origin) {
  if (path.rfind("unet.", 0) == 0) {
    for (const auto& [module, infix] : kUnetProjections)
      if (ends_with(path, module)) return path.substr(0, path.size() - std::string(module).size()) + infix;
  } else if (path.rfind("text_encoder.", 0) == 0) {
    return path + ".lora_linear_layer";
  }
  throw Error(fmt::format("{}: module '{}' has no place in diffusers' processor LoRA layout", origin, path));
}

}  // namespace

NamedTensors to_diffusers_processor_layout(const LoraWeightMap& weights) {
  NamedTensors out;
  for (const auto& [path, w] : weights) {
    const std::string prefix = file_prefix(path, "LoRA");
    out.emplace_back(prefix + ".down.weight", w.down.contiguous());
    out.emplace_back(prefix + ".up.weight", w.up.contiguous());
  }
  return out;
}

LoraWeightMap from_diffusers_processor_layout(const std::map<std::string, at::Tensor>& tensors,
                                              const std::string& origin, double alpha) {
  LoraWeightMap out;
  for (const auto& [key, tensor] : tensors) {
    const bool down = ends_with(key, ".down.weight"), up = ends_with(key, ".up.weight");
    if (!down && !up) throw Error(fmt::format("{}: unexpected tensor '{}' in a LoRA file", origin, key));
    const std::string prefix = key.substr(0, key.size() - (down ? 12 : 10));
    std::string path;
    if (ends_with(prefix, ".lora_linear_layer")) {
      path = prefix.substr(0, prefix.size() - 18);
    } else {
      for (const auto& [module, infix] : kUnetProjections)
        if (ends_with(prefix, infix)) path = prefix.substr(0, prefix.size() - std::string(infix).size()) + module;
    }
    if (path.empty()) throw Error(fmt::format("{}: '{}' is not a key of diffusers' processor LoRA layout", origin, key));
    (down ? out[path].down : out[path].up) = tensor;
    out[path].alpha = alpha;
  }
  for (const auto& [path, w] : out)
    if (!w.down.defined() || !w.up.defined())
      throw Error(fmt::format("{}: LoRA for '{}' lacks its {} weight", origin, path, w.down.defined() ? "up" : "down"));
  return out;
}

std::map<std::string, at::Tensor> read_all_tensors(const SafetensorsFile& file) {
  std::map<std::string, at::Tensor> out;
  for (const auto& key : file.keys()) out[key] = file.tensor(key);
  return out;
}

}  // namespace singleinsert
