#include "singleinsert/pipeline/memory_estimate.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "singleinsert/core/error.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/torch_compat.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

// Saturating arithmetic: an absurd size must come out as a huge estimate, not wrap around.
constexpr int64_t kHuge = int64_t{1} << 62;
int64_t mul(int64_t a, int64_t b) { return (a == 0 || b == 0) ? 0 : (a > kHuge / b ? kHuge : a * b); }
int64_t add(int64_t a, int64_t b) { return std::min(kHuge, a + b); }
int64_t mul(std::initializer_list<int64_t> factors) {
  int64_t out = 1;
  for (int64_t f : factors) out = mul(out, f);
  return out;
}

// The score tensors alive at once: the slice's scores and its softmax (with float32 copies on the
// way for half precision), and two more slices for the allocator's fragmentation (with one, the
// 768x768 SD v1.5 run peaked above the estimate; MemoryEstimate.StaysAboveThePeaksMeasuredForSd15).
int64_t attention_bytes(int64_t batch_heads, int64_t queries, int64_t keys, int64_t element) {
  const compat::AttentionSlices slices = compat::attention_slices(batch_heads, queries, keys, element);
  const int64_t slice = mul({slices.heads, slices.queries, keys, element});
  return mul(slice, element == 4 ? 4 : 8);
}

}  // namespace

MemoryEstimate estimate_generation_memory(const UNetConfig& unet, const VaeConfig& vae, const GenerationShape& shape,
                                          int64_t weight_bytes) {
  MemoryEstimate estimate;
  estimate.weights = weight_bytes;
  estimate.runtime = int64_t{300} << 20;  // LibTorch, OpenBLAS and the thread pools (measured 167 MB)
  const int64_t factor = vae.downsampling_factor();
  const int64_t batch = shape.images * (shape.guided ? 2 : 1);
  const int64_t e = at::elementSize(shape.dtype);
  const size_t levels = unet.block_out_channels.size();

  // Skip connections held for the up path: conv_in, every down resnet, every downsampler.
  int64_t skips = 0, working = 0;
  int64_t h = shape.height / factor, w = shape.width / factor;
  skips = mul({unet.block_out_channels[0], h, w});
  for (size_t i = 0; i < levels; ++i) {
    const int64_t c = unet.block_out_channels[i], area = mul(h, w);
    skips = add(skips, mul({unet.layers_per_block, c, area}));
    const bool last = i + 1 == levels;
    const int64_t next_area = last ? area : mul((h + 1) / 2, (w + 1) / 2);
    if (!last) skips = add(skips, mul(c, next_area));
    // An up block at this level concatenates a skip (up to 2c channels in), and a resnet holds its
    // input, two norms and two convolutions: about 8c per position.
    int64_t level = mul({8, c, area, batch, e});
    if (unet.down_block_types[i].rfind("CrossAttn", 0) == 0) {
      // q, k, v, the output and GEGLU's 8c-wide hidden layer, plus the scores.
      const int64_t heads = unet.num_attention_heads[i];
      level = std::max(level, add(mul({16, c, area, batch, e}), attention_bytes(batch * heads, area, area, e)));
    }
    working = std::max(working, level);
    if (!last) { h = (h + 1) / 2; w = (w + 1) / 2; }
  }
  estimate.unet = add(mul({skips, batch, e}), working);

  // The decoder runs one image at a time, in float32 when its config forces the upcast; its widest
  // tensors are at full resolution, where the last up block turns c1 channels into c0.
  const int64_t ve = (vae.force_upcast || shape.dtype == at::kFloat) ? 4 : e;
  const int64_t full = mul(shape.height, shape.width);
  const int64_t c1 = vae.block_out_channels.size() > 1 ? vae.block_out_channels[1] : vae.block_out_channels[0];
  const int64_t latent_area = mul(shape.height / factor, shape.width / factor);
  const int64_t mid = add(mul({4, vae.block_out_channels.back(), latent_area, ve}), attention_bytes(1, latent_area, latent_area, ve));
  const int64_t decoder = std::max(mul({6, c1, full, ve}), mid);
  // Finished images: decoded float32 [N, 3, H, W], their concatenation, the [0, 1] images and bytes.
  const int64_t images = mul({shape.images, 3, full, 4 * 3 + 1});
  estimate.vae_decode = add(decoder, images);
  return estimate;
}

int64_t model_weight_bytes(const std::string& model_path, at::ScalarType dtype, bool vae_in_float32) {
  auto file_bytes = [&](const fs::path& file, at::ScalarType as) {
    const SafetensorsFile weights = SafetensorsFile::open(file.string());
    int64_t total = 0;
    for (const auto& key : weights.keys()) {
      const auto& entry = weights.entry(key);
      int64_t numel = 1;
      for (int64_t d : entry.shape) numel = mul(numel, d);
      total = add(total, mul(numel, at::isFloatingType(entry.dtype) ? at::elementSize(as) : at::elementSize(entry.dtype)));
    }
    return total;
  };
  const fs::path root(model_path);
  if (!fs::is_directory(root)) return file_bytes(root, dtype);
  int64_t total = 0;
  for (const char* component : {"text_encoder", "unet", "vae"}) {
    const fs::path folder = root / component;
    if (!fs::is_directory(folder)) continue;
    // One weights file per component: the full-precision one when both are present, as loading picks.
    fs::path chosen;
    for (const auto& entry : fs::directory_iterator(folder)) {
      const std::string name = entry.path().filename().string();
      if (entry.path().extension() != ".safetensors") continue;
      if (chosen.empty() || name.find(".fp16.") == std::string::npos) chosen = entry.path();
    }
    if (!chosen.empty())
      total = add(total, file_bytes(chosen, std::string(component) == "vae" && vae_in_float32 ? at::kFloat : dtype));
  }
  return total;
}

int64_t available_memory_bytes() {
  int64_t available = kHuge;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t value = 0;
  std::string unit;
  while (meminfo >> key >> value >> unit)
    if (key == "MemAvailable:") available = value * 1024;
  // A container's limit (cgroup v2, then v1) can be lower than what the machine has free.
  for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream file(path);
    std::string text;
    if (!(file >> text) || text == "max") continue;
    try {
      available = std::min<int64_t>(available, std::stoll(text));
    } catch (const std::exception&) {
    }
  }
  return available;
}

std::string format_bytes(int64_t bytes) {
  const double value = static_cast<double>(bytes);
  if (value >= 1e12) return fmt::format("{:.0f} TB", value / 1e12);
  if (value >= 1e9) return fmt::format("{:.1f} GB", value / 1e9);
  return fmt::format("{:.0f} MB", value / 1e6);
}

void require_memory(const MemoryEstimate& estimate, int64_t available, const std::string& what,
                    const std::string& advice) {
  if (estimate.peak() <= available) return;
  throw Error(fmt::format("{} needs about {} of memory (weights {}, UNet {}, VAE decode {}) but {} is available; {}",
                          what, format_bytes(estimate.peak()), format_bytes(estimate.weights),
                          format_bytes(estimate.unet), format_bytes(estimate.vae_decode), format_bytes(available),
                          advice));
}

}  // namespace singleinsert
