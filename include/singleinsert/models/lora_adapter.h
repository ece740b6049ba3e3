#pragma once
// One low-rank update attached to a Linear or Conv2d: y += scale * (alpha / rank) * up(down(x)).
// `down` is [rank, in] ([rank, in, k, k] for convolutions) and `up` is [out, rank] ([out, rank,
// 1, 1]). Disabling an adapter gives back the base model exactly, with no second copy.
#include <ATen/core/Tensor.h>

#include <string>

namespace singleinsert {

struct LoraAdapter {
  std::string name;          // which LoRA (a concept, a file) this adapter belongs to
  at::Tensor down;           // [rank, in] or [rank, in, k, k]
  at::Tensor up;             // [out, rank] or [out, rank, 1, 1]
  double alpha = 0.0;        // network alpha; 0 means "no alpha", i.e. a factor of 1
  double scale = 1.0;        // user scale (diffusers' cross_attention_kwargs["scale"])
  bool enabled = true;
  int64_t stride = 1;        // convolutions: the base layer's stride and padding for `down`
  int64_t padding = 0;

  int64_t rank() const { return down.size(0); }
  double factor() const { return scale * (alpha > 0.0 ? alpha / static_cast<double>(rank()) : 1.0); }
};

}  // namespace singleinsert
