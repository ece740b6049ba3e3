#pragma once
// The few places where LibTorch 1.13 (Debian, CI) and 2.x (CUDA machines) differ. Nothing
// else in the project tests the version.
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/version.h>

namespace singleinsert::compat {

#if TORCH_VERSION_MAJOR >= 2
inline constexpr bool kHasFusedAttention = true;
#else
inline constexpr bool kHasFusedAttention = false;
#endif

// softmax(q k^T * scale + mask) v for q [B, H, Lq, D], k/v [B, H, Lk, D]. On 2.x this is
// scaled_dot_product_attention (flash / memory-efficient kernels on CUDA); on 1.13 the math
// is written out the way diffusers' AttnProcessor does it, which the parity tests pin down.
at::Tensor scaled_dot_product_attention(const at::Tensor& query, const at::Tensor& key,
                                        const at::Tensor& value, double scale,
                                        const c10::optional<at::Tensor>& additive_mask = c10::nullopt,
                                        bool upcast_softmax = true);

// Mixed precision for a scope: matrix products and convolutions on `device_type` run in `dtype`
// (bf16, or fp16 on CUDA), norms and reductions stay in float32. Restores the previous state.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device_type, at::ScalarType dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_type_;
  bool was_enabled_;
  at::ScalarType previous_dtype_;
};

// Lets float32 matrix products use TF32 tensor cores on CUDA (no effect elsewhere).
void allow_tf32(bool allowed);

}  // namespace singleinsert::compat
