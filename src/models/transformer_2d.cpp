#include "singleinsert/models/transformer_2d.h"

#include <ATen/ATen.h>

namespace singleinsert {

GegluImpl::GegluImpl(int64_t dim_in, int64_t dim_out) { proj = register_module("proj", Linear(dim_in, dim_out * 2)); }

at::Tensor GegluImpl::forward(const at::Tensor& x) {
  // (Only for a frozen projection: a trained one would get two full-size gradients, one per half.)
  if (proj->adapters().empty() && !(proj->weight.requires_grad() && at::GradMode::is_enabled())) {
    // Two half-width products give a contiguous gate: gelu on the strided half of one product
    // runs several times slower on the CPU, and the products cost the same.
    const int64_t half = proj->out_features() / 2;
    return proj->forward_rows(x, 0, half) * at::gelu(proj->forward_rows(x, half, half));  // [B, L, out]
  }
  const auto halves = proj->forward(x).chunk(2, -1);  // value, gate: [B, L, out] each
  return halves[0] * at::gelu(halves[1]);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim) {
  auto net = register_module("net", std::make_shared<torch::nn::Module>());
  geglu = net->register_module("0", Geglu(dim, dim * 4));
  out = net->register_module("2", Linear(dim * 4, dim));
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) { return out->forward(geglu->forward(x)); }

BasicTransformerBlockImpl::BasicTransformerBlockImpl(const TransformerOptions& o) {
  AttentionOptions self_attention;
  self_attention.query_dim = o.channels;
  self_attention.heads = o.heads;
  self_attention.dim_head = o.channels / o.heads;
  self_attention.upcast_attention = o.upcast_attention;
  AttentionOptions cross_attention = self_attention;
  cross_attention.cross_attention_dim = o.cross_attention_dim;
  norm1 = register_module("norm1", LayerNorm(o.channels, 1e-5));
  attn1 = register_module("attn1", Attention(self_attention));
  norm2 = register_module("norm2", LayerNorm(o.channels, 1e-5));
  attn2 = register_module("attn2", Attention(cross_attention));
  norm3 = register_module("norm3", LayerNorm(o.channels, 1e-5));
  ff = register_module("ff", FeedForward(o.channels));
}

at::Tensor BasicTransformerBlockImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  at::Tensor h = x + attn1->forward(norm1->forward(x));
  h = h + attn2->forward(norm2->forward(h), context);
  return h + ff->forward(norm3->forward(h));
}

Transformer2DModelImpl::Transformer2DModelImpl(const TransformerOptions& o)
    : use_linear_projection(o.use_linear_projection) {
  norm = register_module("norm", GroupNorm(o.norm_num_groups, o.channels, 1e-6));
  if (use_linear_projection) proj_in_linear = register_module("proj_in", Linear(o.channels, o.channels));
  else proj_in_conv = register_module("proj_in", Conv2d(o.channels, o.channels, 1));
  transformer_blocks.attach(*this, "transformer_blocks");
  for (int64_t i = 0; i < o.num_layers; ++i) transformer_blocks.push_back(BasicTransformerBlock(o));
  if (use_linear_projection) proj_out_linear = register_module("proj_out", Linear(o.channels, o.channels));
  else proj_out_conv = register_module("proj_out", Conv2d(o.channels, o.channels, 1));
}

at::Tensor Transformer2DModelImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  auto to_tokens = [&](const at::Tensor& t) {  // [B, C, H, W] -> [B, HW, C]
    // Contiguous once here rather than in every norm and projection of the blocks (a strided
    // residual stream makes each of them copy it first).
    return t.permute({0, 2, 3, 1}).reshape({batch, height * width, channels}).contiguous();
  };
  auto to_map = [&](const at::Tensor& t) {  // [B, HW, C] -> [B, C, H, W]
    return t.reshape({batch, height, width, channels}).permute({0, 3, 1, 2}).contiguous();
  };
  const at::Tensor normed = norm->forward(x);
  at::Tensor h = use_linear_projection ? proj_in_linear->forward(to_tokens(normed))
                                      : to_tokens(proj_in_conv->forward(normed));  // [B, HW, C]
  for (auto& block : transformer_blocks) h = block->forward(h, context);
  h = use_linear_projection ? to_map(proj_out_linear->forward(h)) : proj_out_conv->forward(to_map(h));
  return h + x;
}

}  // namespace singleinsert
