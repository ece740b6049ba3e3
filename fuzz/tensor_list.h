#pragma once
// A compact text form of a safetensors file for the harnesses that fuzz what is done with a
// file's names and shapes (LoRA and embedding detection, single-file key mapping), so that the
// fuzzer mutates names and shapes directly instead of JSON offsets (fuzz_safetensors does those):
//   NAME SHAPE [DTYPE]     a tensor, SHAPE like 4x320 ("-" for a scalar), DTYPE f32|f16|bf16|i64
//   @KEY=VALUE             a metadata entry
// Tensors are filled with a small constant. Lines whose sizes are out of bounds are skipped.
#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <optional>
#include <sstream>
#include <string>

#include "singleinsert/core/error.h"
#include "singleinsert/core/safetensors.h"

namespace singleinsert::fuzz {

struct TensorList {
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;
};

inline TensorList parse_tensor_list(const std::string& text) {
  constexpr int64_t kMaxNumel = 1 << 16, kMaxTotal = 1 << 22;
  TensorList list;
  int64_t total = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    if (line[0] == '@') {
      const size_t equals = line.find('=');
      if (equals != std::string::npos) list.metadata[line.substr(1, equals - 1)] = line.substr(equals + 1);
      continue;
    }
    std::istringstream fields(line);
    std::string name, shape_text, dtype_text = "f32";
    if (!(fields >> name >> shape_text)) continue;
    fields >> dtype_text;
    std::vector<int64_t> shape;
    int64_t numel = 1;
    bool ok = true;
    if (shape_text != "-") {
      std::istringstream dims(shape_text);
      for (std::string dim; ok && std::getline(dims, dim, 'x');) {
        char* end = nullptr;
        const long long value = std::strtoll(dim.c_str(), &end, 10);
        ok = !dim.empty() && *end == '\0' && value >= 0 && value <= kMaxNumel && shape.size() < 6;
        if (ok) shape.push_back(value), numel *= value, ok = numel <= kMaxNumel;
      }
    }
    const at::ScalarType dtype = dtype_text == "f16" ? at::kHalf : dtype_text == "bf16" ? at::kBFloat16
                                 : dtype_text == "i64" ? at::kLong : at::kFloat;
    if (!ok || total + numel > kMaxTotal) continue;
    total += numel;
    list.tensors.emplace_back(name, at::full(shape, 0.25, at::TensorOptions().dtype(dtype)));
  }
  return list;
}

inline std::string tensor_list_text(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {}) {
  std::string out;
  for (const auto& [key, value] : metadata) out += "@" + key + "=" + value + "\n";
  for (const auto& [name, tensor] : tensors) {
    std::string shape;
    for (int64_t dim : tensor.sizes()) shape += (shape.empty() ? "" : "x") + std::to_string(dim);
    const at::ScalarType dtype = tensor.scalar_type();
    out += name + " " + (shape.empty() ? "-" : shape) + " " +
           (dtype == at::kHalf ? "f16" : dtype == at::kBFloat16 ? "bf16" : dtype == at::kLong ? "i64" : "f32") + "\n";
  }
  return out;
}

// Writes the list as a real safetensors file in memory-backed /dev/shm (the readers take paths);
// nothing for lists the writer refuses (names that are not UTF-8, duplicates).
inline std::optional<std::string> write_tensor_list(const TensorList& list, const std::string& name) {
  const std::string path = "/dev/shm/singleinsert_fuzz_" + std::to_string(::getpid()) + "_" + name + ".safetensors";
  try {
    save_safetensors(path, list.tensors, list.metadata);
  } catch (const Error&) {
    return std::nullopt;
  }
  return path;
}

}  // namespace singleinsert::fuzz
