#include "singleinsert/formats/lora_layouts.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "singleinsert/core/error.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

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

// A LoRA's alpha: one finite number >= 0 (kohya and PEFT store it as a scalar tensor).
double alpha_value(const at::Tensor& tensor, const std::string& key, const std::string& origin) {
  if (tensor.numel() != 1)
    throw Error(fmt::format("{}: '{}' holds {} values; an alpha is one number", origin, key, tensor.numel()));
  const double alpha = tensor.to(at::kDouble).item<double>();
  if (!std::isfinite(alpha) || alpha < 0) throw Error(fmt::format("{}: '{}' is {}; an alpha is a finite number >= 0", origin, key, alpha));
  return alpha;
}

}  // namespace

double lora_metadata_number(const SafetensorsFile& file, const std::string& key, double fallback) {
  const auto it = file.metadata().find(key);
  if (it == file.metadata().end()) return fallback;
  const std::string& text = it->second;
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::logic_error&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !std::isfinite(value) || value < 0)
    throw Error(fmt::format("{}: its metadata {} is '{}', not a finite number >= 0", file.path(), key, text));
  return value;
}

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

std::string lora_layout_name(LoraLayout layout) {
  switch (layout) {
    case LoraLayout::kKohya: return "kohya";
    case LoraLayout::kPeft: return "peft";
    default: return "diffusers-processor";
  }
}

LoraLayout detect_lora_layout(const std::map<std::string, at::Tensor>& tensors, const std::string& origin) {
  size_t kohya = 0, peft = 0, processor = 0;
  for (const auto& [key, tensor] : tensors) {
    kohya += key.rfind("lora_unet_", 0) == 0 || key.rfind("lora_te_", 0) == 0;
    peft += ends_with(key, ".lora_A.weight") || ends_with(key, ".lora_B.weight") || ends_with(key, ".lora.down.weight") ||
            ends_with(key, ".lora.up.weight");
    processor += key.find(".processor.") != std::string::npos || key.find(".lora_linear_layer.") != std::string::npos;
  }
  if (kohya > 0 && peft == 0 && processor == 0) return LoraLayout::kKohya;
  if (peft > 0 && kohya == 0) return LoraLayout::kPeft;
  if (processor > 0 && kohya == 0 && peft == 0) return LoraLayout::kDiffusersProcessor;
  throw Error(fmt::format("{}: not a LoRA layout singleinsert reads (kohya lora_unet_/lora_te_, diffusers/PEFT "
                          "lora_A/lora_B, or diffusers' attention-processor layout)",
                          origin));
}

std::string kohya_name(const std::string& path) {
  std::string rest;
  std::string prefix;
  if (path.rfind("unet.", 0) == 0) prefix = "lora_unet_", rest = path.substr(5);
  else if (path.rfind("text_encoder.", 0) == 0) prefix = "lora_te_", rest = path.substr(13);
  else throw Error(fmt::format("module '{}' has no kohya name", path));
  std::replace(rest.begin(), rest.end(), '.', '_');
  return prefix + rest;
}

LoraWeightMap from_kohya_layout(const std::map<std::string, at::Tensor>& tensors,
                                const std::vector<std::string>& module_paths, const std::string& origin) {
  std::map<std::string, std::string> by_name;
  for (const auto& path : module_paths)
    if (path.rfind("unet.", 0) == 0 || path.rfind("text_encoder.", 0) == 0) by_name[kohya_name(path)] = path;
  LoraWeightMap out;
  std::vector<std::string> unknown;
  for (const auto& [key, tensor] : tensors) {
    if (key.rfind("bundle_emb.", 0) == 0) continue;  // embeddings bundled with a LoRA (sd-scripts, A1111)
    const size_t dot = key.find('.');
    const std::string name = key.substr(0, dot), leaf = dot == std::string::npos ? "" : key.substr(dot + 1);
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      if (std::find(unknown.begin(), unknown.end(), name) == unknown.end()) unknown.push_back(name);
      continue;
    }
    LoraWeights& w = out[it->second];
    if (leaf == "lora_down.weight") w.down = tensor;
    else if (leaf == "lora_up.weight") w.up = tensor;
    else if (leaf == "alpha") w.alpha = alpha_value(tensor, key, origin);
    else throw Error(fmt::format("{}: unexpected LoRA tensor '{}'", origin, key));
  }
  if (!unknown.empty()) {
    std::string listed;
    for (size_t i = 0; i < unknown.size() && i < 3; ++i) listed += (i ? ", " : "") + unknown[i];
    throw Error(fmt::format("{}: {} LoRA target(s) do not exist in the model: {}{}", origin, unknown.size(), listed,
                            unknown.size() > 3 ? ", ..." : ""));
  }
  for (const auto& [path, w] : out)
    if (!w.down.defined() || !w.up.defined())
      throw Error(fmt::format("{}: LoRA for '{}' lacks its {} weight", origin, kohya_name(path),
                              w.down.defined() ? "lora_up" : "lora_down"));
  return out;
}

NamedTensors to_kohya_layout(const LoraWeightMap& weights) {
  NamedTensors out;
  for (const auto& [path, w] : weights) {
    const std::string name = kohya_name(path);
    out.emplace_back(name + ".lora_down.weight", w.down.contiguous());
    out.emplace_back(name + ".lora_up.weight", w.up.contiguous());
    // kohya always stores alpha; "no alpha" means a factor of 1, i.e. alpha = rank.
    out.emplace_back(name + ".alpha",
                     at::scalar_tensor(w.alpha > 0 ? w.alpha : static_cast<double>(w.down.size(0)), at::kFloat));
  }
  return out;
}

LoraWeightMap from_peft_layout(const std::map<std::string, at::Tensor>& tensors, const std::string& origin) {
  static const std::pair<const char*, bool> suffixes[] = {
      {".lora_A.weight", true}, {".lora_B.weight", false}, {".lora.down.weight", true}, {".lora.up.weight", false}};
  LoraWeightMap out;
  for (const auto& [key, tensor] : tensors) {
    bool matched = false;
    for (const auto& [suffix, is_down] : suffixes)
      if (ends_with(key, suffix)) {
        const std::string path = key.substr(0, key.size() - std::string(suffix).size());
        (is_down ? out[path].down : out[path].up) = tensor;
        matched = true;
      }
    if (!matched && ends_with(key, ".alpha")) {
      out[key.substr(0, key.size() - 6)].alpha = alpha_value(tensor, key, origin);
      matched = true;
    }
    if (!matched) throw Error(fmt::format("{}: unexpected tensor '{}' in a PEFT LoRA file", origin, key));
  }
  for (const auto& [path, w] : out)
    if (!w.down.defined() || !w.up.defined())
      throw Error(fmt::format("{}: LoRA for '{}' lacks its {} weight", origin, path, w.down.defined() ? "lora_B" : "lora_A"));
  return out;
}

NamedTensors to_peft_layout(const LoraWeightMap& weights) {
  NamedTensors out;
  for (const auto& [path, w] : weights) {
    out.emplace_back(path + ".lora_A.weight", w.down.contiguous());
    out.emplace_back(path + ".lora_B.weight", w.up.contiguous());
  }
  return out;
}

LoraWeightMap read_lora_file(const SafetensorsFile& file, const std::vector<std::string>& module_paths,
                             LoraLayout* layout) {
  const auto tensors = read_all_tensors(file);
  const LoraLayout detected = detect_lora_layout(tensors, file.path());
  if (layout) *layout = detected;
  switch (detected) {
    case LoraLayout::kKohya: return from_kohya_layout(tensors, module_paths, file.path());
    case LoraLayout::kPeft: {
      LoraWeightMap weights = from_peft_layout(tensors, file.path());
      const double alpha = lora_metadata_number(file, "lora_alpha");
      for (auto& [path, w] : weights)
        if (w.alpha == 0) w.alpha = alpha;
      return weights;
    }
    default: {
      const double alpha = lora_metadata_number(file, "lora_alpha");
      return from_diffusers_processor_layout(tensors, file.path(), alpha);
    }
  }
}

std::map<std::string, at::Tensor> read_all_tensors(const SafetensorsFile& file) {
  std::map<std::string, at::Tensor> out;
  for (const auto& key : file.keys()) out[key] = file.tensor(key);
  return out;
}

}  // namespace singleinsert
