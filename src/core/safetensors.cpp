#include "singleinsert/core/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {
namespace {

// Larger headers exist in no real checkpoint; the bound keeps a corrupt length from
// allocating gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeName {
  const char* name;
  at::ScalarType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

at::ScalarType parse_dtype(const std::string& name, const std::string& path, const std::string& key) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.dtype;
  throw Error(fmt::format("{}: tensor '{}' has unsupported dtype '{}'", path, key, name));
}

}  // namespace

std::string safetensors_dtype_name(at::ScalarType dtype) {
  for (const auto& d : kDtypes)
    if (dtype == d.dtype) return d.name;
  throw Error("safetensors cannot store dtype " + dtype_string(dtype));
}

struct SafetensorsFile::Mapping {
  void* address = nullptr;
  size_t length = 0;
  const uint8_t* data = nullptr;  // start of the data section
  uint64_t data_length = 0;
  ~Mapping() {
    if (address != nullptr && length > 0) munmap(address, length);
  }
};

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw Error(fmt::format("{}: no such file", path));
    throw Error(fmt::format("{}: cannot be opened ({})", path, std::strerror(errno)));
  }
  struct stat status {};
  if (fstat(fd, &status) != 0 || !S_ISREG(status.st_mode)) {
    ::close(fd);
    throw Error(fmt::format("{}: not a regular file", path));
  }
  const uint64_t file_size = static_cast<uint64_t>(status.st_size);
  if (file_size < 8) {
    ::close(fd);
    throw Error(fmt::format("{}: not a safetensors file (only {} bytes)", path, file_size));
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->address = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping->address == MAP_FAILED) {
    mapping->address = nullptr;
    throw Error(fmt::format("{}: cannot be mapped ({})", path, std::strerror(errno)));
  }
  mapping->length = file_size;
  const auto* bytes = static_cast<const uint8_t*>(mapping->address);

  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | bytes[i];
  // PyTorch's own formats, a zip archive (torch.save since 1.6) or a bare pickle (protocol 2+),
  // read as a header length, are far longer than the file.
  const bool zip = bytes[0] == 'P' && bytes[1] == 'K' && bytes[2] == 3 && bytes[3] == 4;
  const bool pickle = bytes[0] == 0x80 && bytes[1] >= 2 && bytes[1] <= 5;
  if ((zip || pickle) && header_length > file_size - 8)
    throw Error(fmt::format("{}: a PyTorch pickle checkpoint (.ckpt/.bin/.pt), not safetensors; singleinsert reads "
                            "only .safetensors, since loading a pickle can run code (convert it with a trusted tool)",
                            path));
  if (header_length > kMaxHeaderBytes || header_length > file_size - 8)
    throw Error(fmt::format("{}: corrupt or truncated safetensors file (header length {} but file "
                            "has {} bytes)",
                            path, header_length, file_size));

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_length);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: corrupt safetensors header ({})", path, e.what()));
  }
  if (!header.is_object()) throw Error(fmt::format("{}: safetensors header is not a JSON object", path));

  SafetensorsFile file;
  file.path_ = path;
  mapping->data = bytes + 8 + header_length;
  mapping->data_length = file_size - 8 - header_length;

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) throw Error(fmt::format("{}: __metadata__ is not an object", path));
      for (const auto& [name, text] : value.items()) {
        if (!text.is_string())
          throw Error(fmt::format("{}: metadata entry '{}' is not a string", path, name));
        file.metadata_[name] = text.get<std::string>();
      }
      continue;
    }
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") ||
        !value.contains("data_offsets") || !value["dtype"].is_string() || !value["shape"].is_array() ||
        !value["data_offsets"].is_array() || value["data_offsets"].size() != 2)
      throw Error(fmt::format("{}: malformed header entry for tensor '{}'", path, key));
    SafetensorsEntry entry;
    entry.dtype = parse_dtype(value["dtype"].get<std::string>(), path, key);
    uint64_t numel = 1;
    for (const auto& dim : value["shape"]) {
      if (!dim.is_number_unsigned())
        throw Error(fmt::format("{}: tensor '{}' has an invalid shape", path, key));
      const uint64_t size = dim.get<uint64_t>();
      if (size > (1ull << 40) || (size > 0 && numel > (1ull << 40) / size))
        throw Error(fmt::format("{}: tensor '{}' has an impossible shape", path, key));
      numel *= size;
      entry.shape.push_back(static_cast<int64_t>(size));
    }
    for (const auto& offset : value["data_offsets"])
      if (!offset.is_number_unsigned())
        throw Error(fmt::format("{}: tensor '{}' has invalid data offsets", path, key));
    entry.begin = value["data_offsets"][0].get<uint64_t>();
    entry.end = value["data_offsets"][1].get<uint64_t>();
    const uint64_t expected = numel * c10::elementSize(entry.dtype);
    if (entry.begin > entry.end || entry.end - entry.begin != expected)
      throw Error(fmt::format("{}: tensor '{}' with shape {} needs {} bytes but its offsets [{}, {}] "
                              "cover {}",
                              path, key, shape_string(entry.shape), expected, entry.begin, entry.end,
                              entry.end >= entry.begin ? entry.end - entry.begin : 0));
    if (entry.end > mapping->data_length)
      throw Error(fmt::format("{}: truncated file: tensor '{}' ends at byte {} of a {}-byte data section",
                              path, key, entry.end, mapping->data_length));
    file.entries_.emplace(key, std::move(entry));
  }

  std::vector<std::pair<uint64_t, const std::string*>> ranges;
  for (const auto& [key, entry] : file.entries_)
    if (entry.end > entry.begin) ranges.emplace_back(entry.begin, &key);
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    const auto& previous = file.entries_.at(*ranges[i - 1].second);
    if (ranges[i].first < previous.end)
      throw Error(fmt::format("{}: tensors '{}' and '{}' overlap in the data section", path,
                              *ranges[i - 1].second, *ranges[i].second));
  }
  file.mapping_ = std::move(mapping);
  return file;
}

std::vector<std::string> SafetensorsFile::keys() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [key, entry] : entries_) out.push_back(key);
  return out;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& key) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) throw Error(fmt::format("{}: no tensor named '{}'", path_, key));
  return it->second;
}

at::Tensor SafetensorsFile::view(const std::string& key) const {
  const SafetensorsEntry& e = entry(key);
  // The deleter holds the mapping, so views stay valid after this object is gone.
  auto keep_alive = mapping_;
  void* data = const_cast<uint8_t*>(mapping_->data + e.begin);
  const size_t element = c10::elementSize(e.dtype);
  if (e.end == e.begin) return at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
  if (reinterpret_cast<uintptr_t>(data) % element != 0) {
    // Unaligned data (legal in the format): copy byte-wise into aligned memory.
    at::Tensor aligned = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
    std::memcpy(aligned.data_ptr(), data, e.end - e.begin);
    return aligned;
  }
  return at::from_blob(
      data, e.shape, [keep_alive](void*) {}, at::TensorOptions().dtype(e.dtype));
}

at::Tensor SafetensorsFile::tensor(const std::string& key) const { return view(key).clone(); }

void SafetensorsFile::release_pages(const at::Tensor& view) const {
  if (!mapping_ || !view.defined() || !view.is_cpu() || !view.is_contiguous() || view.numel() == 0) return;
  const auto* begin = static_cast<const uint8_t*>(view.data_ptr());
  const uint8_t* end = begin + view.numel() * view.element_size();
  const auto* mapped = static_cast<const uint8_t*>(mapping_->address);
  if (begin < mapping_->data || end > mapping_->data + mapping_->data_length) return;
  // Only whole pages inside the tensor: its neighbours' bytes may still be needed.
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page * page;
  const uintptr_t last = reinterpret_cast<uintptr_t>(end) / page * page;
  if (last <= first || first < reinterpret_cast<uintptr_t>(mapped)) return;
  madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::string safetensors_bytes(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> contiguous;
  contiguous.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(cpu.numel()) * cpu.element_size();
    if (name == "__metadata__") throw Error("'__metadata__' cannot name a tensor in a safetensors file");
    header[name] = {{"dtype", safetensors_dtype_name(cpu.scalar_type())},
                    {"shape", cpu.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(std::move(cpu));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    throw Error("safetensors names and metadata must be valid UTF-8");
  }
  // Pad with spaces so that the data section starts 8-byte aligned, as the reference writer does.
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');
  std::string out;
  out.reserve(8 + text.size() + offset);
  uint64_t length = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
  out += text;
  for (const auto& tensor : contiguous)
    out.append(static_cast<const char*>(tensor.data_ptr()), tensor.numel() * tensor.element_size());
  return out;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : tensors) names.push_back(name);
  std::sort(names.begin(), names.end());
  if (std::adjacent_find(names.begin(), names.end()) != names.end())
    throw Error(fmt::format("{}: duplicate tensor name '{}'", path,
                            *std::adjacent_find(names.begin(), names.end())));
  write_file_atomic(path, safetensors_bytes(tensors, metadata));
}

}  // namespace singleinsert
