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

// Turns autocast on or off for one device type with the given dtype.
void set_autocast(c10::DeviceType device_type, bool enabled, at::ScalarType dtype);

}  // namespace singleinsert::compat
