#include "singleinsert/core/torch_compat.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include "singleinsert/core/flop_counter.h"

namespace singleinsert::compat {

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
  const auto batch = query.size(0), heads = query.size(1);
  const auto q = query.reshape({batch * heads, query.size(2), query.size(3)});
  const auto k = key.reshape({batch * heads, key.size(2), key.size(3)});
  const auto v = value.reshape({batch * heads, value.size(2), value.size(3)});
  // alpha applies the scale inside the GEMM exactly as diffusers' get_attention_scores does. It
  // runs in place on zeros: LibTorch 1.13's out-of-place CPU baddbmm leaves its result uninitialised
  // when beta is 0 and then still multiplies it by beta, so NaNs left in reused memory leak into the
  // scores (0 * NaN); in place, the result is these zeros.
  at::Tensor scores = at::zeros({q.size(0), q.size(1), k.size(1)}, q.options())
                          .baddbmm_(q, k.transpose(-1, -2), /*beta=*/0.0, /*alpha=*/scale);  // [BH, Lq, Lk]
  if (additive_mask.has_value())
    scores = (scores.view({batch, heads, q.size(1), k.size(1)}) + *additive_mask).view_as(scores);
  const bool reduced = scores.scalar_type() == at::kHalf || scores.scalar_type() == at::kBFloat16;
  at::Tensor probs = upcast_softmax && reduced
                         ? scores.to(at::kFloat).softmax(-1).to(value.scalar_type())
                         : scores.softmax(-1);
  return at::bmm(probs, v).view({batch, heads, query.size(2), value.size(3)});  // [B, H, Lq, D]
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
