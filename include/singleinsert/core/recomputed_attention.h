#pragma once
// Attention for training that keeps only q, k and v for the backward pass and recomputes the
// probabilities there. Plain autograd keeps every layer's [BH, Lq, Lk] probability matrix until
// the backward pass: 134 MB per self-attention layer of SD v1.5 at 32x32 latents and batch 8 in
// bf16, 0.67 GB for the five such layers of one stage II step. Recomputing costs one more q k^T
// and softmax per layer in the backward pass. Values equal plain autograd's and gradients agree
// with its to rounding: the same operations, though one product may reach the GEMM transposed.
#include <ATen/core/Tensor.h>

namespace singleinsert {

// softmax(q k^T * scale) v for q [BH, Lq, D], k and v [BH, Lk, D]; with upcast_softmax the
// softmax runs in float32 and its result is cast to v's dtype, as diffusers' VAE attention does.
at::Tensor recomputed_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                bool upcast_softmax);

}  // namespace singleinsert
