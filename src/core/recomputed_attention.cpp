#include "singleinsert/core/recomputed_attention.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "singleinsert/core/torch_compat.h"

namespace singleinsert {
namespace {

struct Probabilities {
  at::Tensor softmax;  // what softmax returned (float32 when upcast)
  at::Tensor probs;    // in v's dtype, what multiplies v
};

// softmax_dtype: the dtype the forward pass's softmax actually ran in (autocast may have chosen
// it), so that the backward pass recomputes the same probabilities outside autocast.
Probabilities attention_probabilities(const at::Tensor& q, const at::Tensor& k, at::ScalarType value_dtype,
                                      double scale, bool upcast_softmax,
                                      c10::optional<at::ScalarType> softmax_dtype = c10::nullopt) {
  const at::Tensor scores = compat::attention_scores(q, k, scale);  // [BH, Lq, Lk]
  Probabilities p;
  if (softmax_dtype) p.softmax = scores.to(*softmax_dtype).softmax(-1);
  else if (upcast_softmax && compat::is_reduced_float(scores.scalar_type())) p.softmax = scores.to(at::kFloat).softmax(-1);
  else p.softmax = scores.softmax(-1);
  p.probs = p.softmax.to(value_dtype);
  return p;
}

class RecomputedAttention : public torch::autograd::Function<RecomputedAttention> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, double scale, bool upcast_softmax) {
    ctx->save_for_backward({q, k, v});
    ctx->saved_data["scale"] = scale;
    const Probabilities p = attention_probabilities(q, k, v.scalar_type(), scale, upcast_softmax);
    ctx->saved_data["softmax_dtype"] = static_cast<int64_t>(p.softmax.scalar_type());
    return at::bmm(p.probs, v);  // [BH, Lq, D]
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2];
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto softmax_dtype = static_cast<at::ScalarType>(ctx->saved_data["softmax_dtype"].toInt());
    const Probabilities p = attention_probabilities(q, k, v.scalar_type(), scale, false, softmax_dtype);
    const at::Tensor grad_out = grad_outputs[0].to(v.scalar_type());                     // [BH, Lq, D]
    const at::Tensor grad_v = at::bmm(p.probs.transpose(1, 2), grad_out);               // [BH, Lk, D]
    const at::Tensor grad_probs = at::bmm(grad_out, v.transpose(1, 2)).to(p.softmax.scalar_type());
    const at::Tensor grad_scores = at::_softmax_backward_data(grad_probs, p.softmax, -1, p.softmax.scalar_type())
                                       .to(q.scalar_type());                                // [BH, Lq, Lk]
    const at::Tensor grad_q = at::bmm(grad_scores, k) * scale;                   // [BH, Lq, D]
    const at::Tensor grad_k = at::bmm(grad_scores.transpose(1, 2), q) * scale;   // [BH, Lk, D]
    return {grad_q, grad_k, grad_v, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor recomputed_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                bool upcast_softmax) {
  return RecomputedAttention::apply(q, k, v, scale, upcast_softmax);
}

}  // namespace singleinsert
