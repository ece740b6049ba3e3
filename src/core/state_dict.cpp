#include "singleinsert/core/state_dict.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "singleinsert/core/error.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {
namespace {

std::string list_some(const std::vector<std::string>& keys, size_t limit = 3) {
  std::string out;
  for (size_t i = 0; i < keys.size() && i < limit; ++i) out += (i ? ", " : "") + keys[i];
  if (keys.size() > limit) out += fmt::format(", ... ({} in all)", keys.size());
  return out;
}

bool is_float(at::ScalarType dtype) { return at::isFloatingType(dtype); }
// The file's keys after prefix selection and renaming, mapped back to the original key.
std::map<std::string, std::string> resolve_keys(const std::vector<std::string>& file_keys,
                                                const LoadOptions& options) {
  std::map<std::string, std::string> resolved;
  for (const std::string& key : file_keys) {
    if (!options.prefix.empty() && key.rfind(options.prefix, 0) != 0) continue;
    std::string name = key.substr(options.prefix.size());
    if (options.rename) name = options.rename(name);
    bool skipped = false;
    for (const std::string& skip : options.skipped_prefixes) skipped = skipped || name.rfind(skip, 0) == 0;
    if (!skipped) resolved[name] = key;
  }
  return resolved;
}

template <typename Lookup>
void load_checked(torch::nn::Module& module, const std::vector<std::string>& file_keys,
                  const Lookup& lookup, const std::string& origin, const LoadOptions& options) {
  auto targets = module_tensors(module);
  const auto resolved = resolve_keys(file_keys, options);
  const std::set<std::string> tolerated(options.tolerated_extra_keys.begin(),
                                        options.tolerated_extra_keys.end());

  std::vector<std::string> missing, unexpected;
  for (const auto& [name, tensor] : targets)
    if (!resolved.count(name)) missing.push_back(name);
  for (const auto& [name, key] : resolved)
    if (!targets.count(name) && !tolerated.count(name)) unexpected.push_back(key);
  if (!missing.empty())
    throw Error(fmt::format("{}: missing {} tensor(s) the model needs: {}", origin, missing.size(),
                            list_some(missing)));
  if (!unexpected.empty())
    throw Error(fmt::format("{}: {} unexpected tensor(s) the model does not have: {}", origin,
                            unexpected.size(), list_some(unexpected)));

  // Check every shape and dtype before copying anything, so a bad file leaves the module as it was.
  for (const auto& [name, target] : targets) {
    const std::string& key = resolved.at(name);
    const auto [shape, dtype] = lookup.describe(key);
    if (at::IntArrayRef(shape) != target.sizes())
      throw Error(fmt::format("{}: tensor '{}' has shape {} in the file but the model expects {}", origin,
                              key, shape_string(shape), shape_string(target.sizes())));
    if (is_float(dtype) != is_float(target.scalar_type()))
      throw Error(fmt::format("{}: tensor '{}' is {} in the file but the model expects {}", origin, key,
                              dtype_string(dtype), dtype_string(target.scalar_type())));
  }
  at::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    const at::Tensor source = lookup.tensor(resolved.at(name));
    target.copy_(source);
    lookup.release(source);
  }
}

struct FileLookup {
  const SafetensorsFile& file;
  std::pair<std::vector<int64_t>, at::ScalarType> describe(const std::string& key) const {
    const auto& e = file.entry(key);
    return {e.shape, e.dtype};
  }
  at::Tensor tensor(const std::string& key) const { return file.view(key); }
  void release(const at::Tensor& view) const { file.release_pages(view); }
};

struct MapLookup {
  const std::map<std::string, at::Tensor>& tensors;
  std::pair<std::vector<int64_t>, at::ScalarType> describe(const std::string& key) const {
    const at::Tensor& t = tensors.at(key);
    return {t.sizes().vec(), t.scalar_type()};
  }
  at::Tensor tensor(const std::string& key) const { return tensors.at(key); }
  void release(const at::Tensor& view) const {
    if (mapped_file) mapped_file->release_pages(view);
  }
  const SafetensorsFile* mapped_file = nullptr;
};

}  // namespace

std::map<std::string, at::Tensor> module_tensors(const torch::nn::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) out[item.key()] = item.value();
  for (const auto& item : module.named_buffers(/*recurse=*/true)) out[item.key()] = item.value();
  return out;
}

void load_state_dict(torch::nn::Module& module, const SafetensorsFile& file, const LoadOptions& options) {
  load_checked(module, file.keys(), FileLookup{file}, file.path(), options);
}

void load_state_dict(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                     const std::string& origin, const LoadOptions& options) {
  std::vector<std::string> keys;
  for (const auto& [key, tensor] : tensors) keys.push_back(key);
  load_checked(module, keys, MapLookup{tensors, options.mapped_file}, origin, options);
}

void allocate_uninitialised(torch::nn::Module& module, const c10::Device& device, at::ScalarType dtype) {
  at::NoGradGuard no_grad;
  for (auto& [name, tensor] : module_tensors(module))
    if (is_float(tensor.scalar_type()) && (tensor.scalar_type() != dtype || tensor.device() != device))
      tensor.set_data(at::empty(tensor.sizes(), tensor.options().dtype(dtype).device(device)));
}

NamedTensors state_dict(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& [name, tensor] : module_tensors(module)) out.emplace_back(name, tensor.detach());
  return out;
}

}  // namespace singleinsert
