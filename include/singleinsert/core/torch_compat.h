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

// q k^T * scale for q [BH, Lq, D] and k [BH, Lk, D]: [BH, Lq, Lk], the written-out path's scores.
at::Tensor attention_scores(const at::Tensor& q, const at::Tensor& k, double scale);

// fp16 or bf16.
inline bool is_reduced_float(at::ScalarType dtype) { return dtype == at::kHalf || dtype == at::kBFloat16; }

// On the written-out path the scores are computed a group of heads at a time so that one
// group's score matrix stays within this many bytes (1 GiB by default), and a group of queries at
// a time when a single head is over budget. Head groups change no bit of the result; query groups
// can change the last bit, since a BLAS GEMM's rows depend on how many rows it is given.
void set_attention_score_budget(int64_t bytes);
int64_t attention_score_budget();

struct AttentionSlices {
  int64_t heads = 1;    // batch x heads rows of [B*H, Lq, Lk] per slice
  int64_t queries = 1;  // queries per slice (all of them unless one head is over budget)
};
AttentionSlices attention_slices(int64_t batch_heads, int64_t queries, int64_t keys, int64_t element_size);

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

// Whether autocast is on for this device type in the current thread.
bool autocast_active(c10::DeviceType device_type);

// Lets float32 matrix products use TF32 tensor cores on CUDA (no effect elsewhere).
void allow_tf32(bool allowed);

}  // namespace singleinsert::compat
