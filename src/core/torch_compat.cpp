#include "singleinsert/core/torch_compat.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "singleinsert/core/flop_counter.h"
#include "singleinsert/core/recomputed_attention.h"

namespace singleinsert::compat {

namespace {

std::atomic<int64_t> score_budget_bytes{int64_t{1} << 30};

// softmax(q k^T * scale + mask) v for q [BH, Lq, D], k/v [BH, Lk, D]; mask broadcasts to [B, H, Lq, Lk].
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t batch, int64_t heads,
                  double scale, const c10::optional<at::Tensor>& additive_mask, bool upcast_softmax) {
  // Training: keep q, k and v rather than the probabilities for the backward pass.
  if (!additive_mask.has_value() && at::GradMode::is_enabled() &&
      (q.requires_grad() || k.requires_grad() || v.requires_grad()))
    return recomputed_attention(q, k, v, scale, upcast_softmax);
  at::Tensor scores = attention_scores(q, k, scale);  // [BH, Lq, Lk]
  if (additive_mask.has_value())
    scores = (scores.view({batch, heads, q.size(1), k.size(1)}) + *additive_mask).view_as(scores);
  at::Tensor probs = upcast_softmax && is_reduced_float(scores.scalar_type())
                         ? scores.to(at::kFloat).softmax(-1).to(v.scalar_type())
                         : scores.softmax(-1);
  return at::bmm(probs, v);  // [BH, Lq, D]
}

}  // namespace

at::Tensor attention_scores(const at::Tensor& q, const at::Tensor& k, double scale) {
  // alpha applies the scale inside the GEMM exactly as diffusers' get_attention_scores does. It
  // runs in place on zeros: LibTorch 1.13's out-of-place CPU baddbmm leaves its result uninitialised
  // when beta is 0 and then still multiplies it by beta, so NaNs left in reused memory leak into the
  // scores (0 * NaN); in place, the result is these zeros.
  return at::zeros({q.size(0), q.size(1), k.size(1)}, q.options())
      .baddbmm_(q, k.transpose(-1, -2), /*beta=*/0.0, /*alpha=*/scale);  // [BH, Lq, Lk]
}

void set_attention_score_budget(int64_t bytes) { score_budget_bytes = std::max<int64_t>(bytes, 1); }
int64_t attention_score_budget() { return score_budget_bytes; }

AttentionSlices attention_slices(int64_t batch_heads, int64_t queries, int64_t keys, int64_t element_size) {
  const int64_t budget = score_budget_bytes;
  const int64_t head_bytes = queries * keys * element_size;
  AttentionSlices slices;
  slices.heads = std::clamp<int64_t>(budget / std::max<int64_t>(head_bytes, 1), 1, batch_heads);
  slices.queries = slices.heads > 1 ? queries
                                    : std::clamp<int64_t>(budget / std::max<int64_t>(keys * element_size, 1), 1, queries);
  return slices;
}

at::Tensor scaled_dot_product_attention(const at::Tensor& query, const at::Tensor& key,
                                        const at::Tensor& value, double scale,
                                        const c10::optional<at::Tensor>& additive_mask, bool upcast_softmax) {
  // q k^T and probs v: 2 * 2 * B * H * Lq * Lk * D.
  if (flops::counting()) flops::add(4 * query.numel() * key.size(2));
#if TORCH_VERSION_MAJOR >= 2
  if (query.is_cuda()) {
    return at::scaled_dot_product_attention(query, key, value, additive_mask, /*dropout_p=*/0.0,
                                            /*is_causal=*/false, scale);
  }
#endif
  // [B, H, L, D] -> [B*H, L, D], as diffusers' head_to_batch_dim lays them out.
  const auto batch = query.size(0), heads = query.size(1), queries = query.size(2), keys = key.size(2);
  const auto q = query.reshape({batch * heads, queries, query.size(3)});
  const auto k = key.reshape({batch * heads, keys, key.size(3)});
  const auto v = value.reshape({batch * heads, keys, value.size(3)});
  // The score matrix grows with the square of the token count (1 GiB per head at 1024x1024 in
  // SD v1.5, 16 GiB for a guided batch's 16 heads), so it is made a group of heads at a time and,
  // when one head alone is over budget, a group of queries at a time.
  const AttentionSlices slices = attention_slices(batch * heads, queries, keys, q.element_size());
  if (slices.heads >= batch * heads)
    return attend(q, k, v, batch, heads, scale, additive_mask, upcast_softmax).view({batch, heads, queries, value.size(3)});
  // A mask broadcasts over [B, H, Lq, Lk]; expanded (no copy), it is sliced one head at a time.
  c10::optional<at::Tensor> mask;
  if (additive_mask.has_value()) mask = additive_mask->expand({batch, heads, queries, keys});
  const int64_t group = mask ? 1 : slices.heads;
  std::vector<at::Tensor> parts;
  for (int64_t first_head = 0; first_head < batch * heads; first_head += group) {
    const int64_t count = std::min(group, batch * heads - first_head);
    std::vector<at::Tensor> rows;
    for (int64_t first = 0; first < queries; first += slices.queries) {
      const int64_t length = std::min(slices.queries, queries - first);
      c10::optional<at::Tensor> part_mask;
      if (mask) part_mask = (*mask)[first_head / heads][first_head % heads].narrow(0, first, length).unsqueeze(0).unsqueeze(0);
      rows.push_back(attend(q.narrow(0, first_head, count).narrow(1, first, length), k.narrow(0, first_head, count),
                            v.narrow(0, first_head, count), count, 1, scale, part_mask, upcast_softmax));
    }
    parts.push_back(rows.size() == 1 ? rows.front() : at::cat(rows, 1));
  }
  return at::cat(parts, 0).view({batch, heads, queries, value.size(3)});  // [B, H, Lq, D]
}

namespace {

bool autocast_enabled(c10::DeviceType device_type) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::is_autocast_enabled(device_type);
#else
  return device_type == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}

at::ScalarType autocast_dtype(c10::DeviceType device_type) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::get_autocast_dtype(device_type);
#else
  return device_type == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype()
                                             : at::autocast::get_autocast_gpu_dtype();
#endif
}

void set_autocast(c10::DeviceType device_type, bool enabled, at::ScalarType dtype) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(device_type, enabled);
  at::autocast::set_autocast_dtype(device_type, dtype);
#else
  if (device_type == c10::DeviceType::CPU) {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  } else {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  }
#endif
}

}  // namespace

bool autocast_active(c10::DeviceType device_type) { return autocast_enabled(device_type); }

AutocastGuard::AutocastGuard(c10::DeviceType device_type, at::ScalarType dtype)
    : device_type_(device_type), was_enabled_(autocast_enabled(device_type)), previous_dtype_(autocast_dtype(device_type)) {
  set_autocast(device_type, true, dtype);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  // The cache of casted weights is only valid inside the outermost autocast region.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(device_type_, was_enabled_, previous_dtype_);
}

void allow_tf32(bool allowed) {
  at::globalContext().setAllowTF32CuBLAS(allowed);
  at::globalContext().setAllowTF32CuDNN(allowed);
}

}  // namespace singleinsert::compat
