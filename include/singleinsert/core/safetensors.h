#pragma once
// The safetensors format: an 8-byte little-endian header length, a JSON header mapping tensor
// names to {dtype, shape, data_offsets}, then the raw little-endian bytes. Files are
// memory-mapped; every header is validated before any byte is read, so a malformed or
// truncated file is an Error, never a crash.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace singleinsert {

struct SafetensorsEntry {
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Throws Error naming the path and the problem (missing, truncated, bad header, ...).
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> keys() const;  // sorted
  bool contains(const std::string& key) const { return entries_.count(key) != 0; }
  const SafetensorsEntry& entry(const std::string& key) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t size() const { return entries_.size(); }

  // A view of the mapped bytes (valid while any copy of this file object lives). Its storage
  // keeps the mapping alive, so the view may outlive the SafetensorsFile object itself.
  at::Tensor view(const std::string& key) const;
  // An owned copy, in the file's dtype.
  at::Tensor tensor(const std::string& key) const;
  // Hands the pages under a view of this file back to the kernel once its bytes have been copied
  // (they stop counting as the process's memory; a later read maps them in again from the page
  // cache). A tensor that is not a contiguous view of this mapping is left alone.
  void release_pages(const at::Tensor& view) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Serialises CPU or device tensors (copied to the CPU, made contiguous) atomically.
std::string safetensors_bytes(const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata = {});
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

std::string safetensors_dtype_name(at::ScalarType dtype);

}  // namespace singleinsert
