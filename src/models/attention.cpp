#include "singleinsert/models/attention.h"

#include <ATen/ATen.h>

#include <cmath>

#include "singleinsert/core/torch_compat.h"

namespace singleinsert {

AttentionImpl::AttentionImpl(const AttentionOptions& options_) : options(options_) {
  const int64_t inner = options.heads * options.dim_head;
  const int64_t context_dim = options.cross_attention_dim > 0 ? options.cross_attention_dim : options.query_dim;
  if (options.norm_num_groups > 0)
    group_norm = register_module("group_norm", GroupNorm(options.norm_num_groups, options.query_dim, options.norm_eps));
  to_q = register_module("to_q", Linear(options.query_dim, inner, options.bias));
  to_k = register_module("to_k", Linear(context_dim, inner, options.bias));
  to_v = register_module("to_v", Linear(context_dim, inner, options.bias));
  to_out.attach(*this, "to_out");
  to_out.push_back(Linear(inner, options.query_dim, /*bias=*/true));
}

at::Tensor AttentionImpl::forward(const at::Tensor& input, const c10::optional<at::Tensor>& context) {
  at::Tensor x = input;
  const bool spatial = input.dim() == 4;
  int64_t channels = 0, height = 0, width = 0;
  if (spatial) {  // [B, C, H, W] -> [B, HW, C]
    channels = input.size(1), height = input.size(2), width = input.size(3);
    x = input.view({input.size(0), channels, height * width}).transpose(1, 2);
  }
  if (group_norm) x = group_norm->forward(x.transpose(1, 2)).transpose(1, 2);
  const at::Tensor& source = context.has_value() ? *context : x;
  const int64_t batch = x.size(0), length = x.size(1), source_length = source.size(1);
  auto split_heads = [&](const at::Tensor& t, int64_t tokens) {  // [B, L, H*D] -> [B, H, L, D]
    return t.view({batch, tokens, options.heads, options.dim_head}).transpose(1, 2);
  };
  at::Tensor q = split_heads(to_q->forward(x), length);
  const bool hooked = hook && context.has_value();
  const auto [key_input, value_input] = hooked ? hook->key_value_inputs(hook_path, source) : std::pair{source, source};
  at::Tensor k = split_heads(to_k->forward(key_input), key_input.size(1));
  const at::Tensor v = split_heads(to_v->forward(value_input), value_input.size(1));
  if (hooked) hook->observe(hook_path, *this, q, k);
  const auto dtype = q.scalar_type();
  const bool reduced = compat::is_reduced_float(dtype);
  if (options.upcast_attention && reduced) {
    q = q.to(at::kFloat);
    k = k.to(at::kFloat);
  }
  at::Tensor out = compat::scaled_dot_product_attention(q, k, options.upcast_attention && reduced ? v.to(at::kFloat) : v,
                                                        1.0 / std::sqrt(static_cast<double>(options.dim_head)),
                                                        c10::nullopt, options.upcast_softmax);
  out = out.to(dtype).transpose(1, 2).reshape({batch, length, options.heads * options.dim_head});  // [B, L, H*D]
  out = to_out[0]->forward(out);
  if (spatial) out = out.transpose(1, 2).reshape({batch, channels, height, width});
  if (options.residual_connection) out = out + input;
  return out;
}

}  // namespace singleinsert
