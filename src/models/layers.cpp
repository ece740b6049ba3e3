#include "singleinsert/models/layers.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "singleinsert/core/flop_counter.h"
#include "singleinsert/core/torch_compat.h"

namespace singleinsert {
namespace {

at::Tensor uninitialised(at::IntArrayRef shape) { return at::empty(shape, at::TensorOptions().dtype(at::kFloat)); }

// LibTorch's CPU group and layer norms run about ten times slower in bf16/fp16 than in float32
// (measured in docs/performance.md), so reduced-precision activations are normalised in float32
// and rounded back once; the statistics are float32 either way.
bool normalise_in_float32(const at::Tensor& x) {
  return x.is_cpu() && compat::is_reduced_float(x.scalar_type());
}

at::Tensor as_float32(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; }

// A float32 run may keep a half-precision file's weights as stored (ModelParts::half_weights):
// they are upcast here, as each layer runs, which is exact (float32 holds every fp16 and bf16
// value). Under autocast the weights are left to autocast. Without autograd on the CPU, a weight
// is upcast into one reused buffer (the ops finish before the next layer's weight overwrites
// it): fresh float32 copies of every size would leave the allocator holding hundreds of MB.
at::Tensor weight_for(const at::Tensor& weight, const at::Tensor& x, bool reuse_buffer = false) {
  if (!weight.defined() || x.scalar_type() != at::kFloat || weight.scalar_type() == at::kFloat) return weight;
  if (!compat::is_reduced_float(weight.scalar_type())) return weight;
  if (compat::autocast_active(x.device().type())) return weight;
  if (!reuse_buffer || !weight.is_cpu() || at::GradMode::is_enabled()) return weight.to(at::kFloat);
  thread_local at::Tensor buffer;
  if (!buffer.defined() || buffer.numel() < weight.numel()) buffer = at::empty({weight.numel()}, at::kFloat);
  return buffer.narrow(0, 0, weight.numel()).view(weight.sizes()).copy_(weight);
}

// kaiming_uniform_(a=sqrt(5)) for the weight and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the
// bias: both reduce to the same bound, PyTorch's default for Linear and Conv2d.
void init_fan_in_uniform(at::Tensor& weight, at::Tensor& bias, int64_t fan_in, at::Generator& generator) {
  at::NoGradGuard no_grad;
  const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
  weight.uniform_(-bound, bound, generator);
  if (bias.defined()) bias.uniform_(-bound, bound, generator);
}

at::Tensor apply_adapters(at::Tensor y, const at::Tensor& x, const std::vector<std::shared_ptr<LoraAdapter>>& adapters,
                          bool is_conv) {
  for (const auto& adapter : adapters) {
    if (!adapter->enabled || adapter->scale == 0.0) continue;
    at::Tensor delta;
    if (is_conv) {
      const auto down = at::conv2d(x, adapter->down.to(x.scalar_type()), {}, adapter->stride, adapter->padding);
      delta = at::conv2d(down, adapter->up.to(x.scalar_type()));
    } else {
      delta = at::linear(at::linear(x, adapter->down.to(x.scalar_type())), adapter->up.to(x.scalar_type()));
    }
    y = y + delta * adapter->factor();
  }
  return y;
}

}  // namespace

void AdaptableLayer::remove_adapters(const std::string& name) {
  adapters_.erase(std::remove_if(adapters_.begin(), adapters_.end(),
                                 [&](const auto& adapter) { return adapter->name == name; }),
                  adapters_.end());
}

void AdaptableLayer::remove_adapter(const LoraAdapter* adapter) {
  adapters_.erase(std::remove_if(adapters_.begin(), adapters_.end(),
                                 [&](const auto& candidate) { return candidate.get() == adapter; }),
                  adapters_.end());
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias) {
  weight = register_parameter("weight", uninitialised({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", uninitialised({out_features}));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  if (flops::counting()) flops::add(2 * x.numel() * weight.size(0));  // tokens x in x out
  at::Tensor y = at::linear(x, weight_for(weight, x, /*reuse_buffer=*/true), weight_for(bias, x));
  return adapters_.empty() ? y : apply_adapters(std::move(y), x, adapters_, /*is_conv=*/false);
}

at::Tensor LinearImpl::forward_rows(const at::Tensor& x, int64_t first, int64_t count) {
  if (flops::counting()) flops::add(2 * x.numel() * count);
  return at::linear(x, weight_for(weight.narrow(0, first, count), x, /*reuse_buffer=*/true),
                    bias.defined() ? c10::optional<at::Tensor>(weight_for(bias.narrow(0, first, count), x)) : c10::nullopt);
}

void LinearImpl::init_parameters(at::Generator& generator) {
  init_fan_in_uniform(weight, bias, weight.size(1), generator);
}

Conv2dImpl::Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride_,
                       int64_t padding_, bool with_bias)
    : stride(stride_), padding(padding_) {
  weight = register_parameter("weight", uninitialised({out_channels, in_channels, kernel_size, kernel_size}));
  if (with_bias) bias = register_parameter("bias", uninitialised({out_channels}));
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) {
  at::Tensor y = at::conv2d(x, weight_for(weight, x, /*reuse_buffer=*/true), weight_for(bias, x), stride, padding);
  if (flops::counting()) flops::add(2 * y.numel() * weight.size(1) * weight.size(2) * weight.size(3));
  return adapters_.empty() ? y : apply_adapters(std::move(y), x, adapters_, /*is_conv=*/true);
}

void Conv2dImpl::init_parameters(at::Generator& generator) {
  init_fan_in_uniform(weight, bias, weight.size(1) * weight.size(2) * weight.size(3), generator);
}

GroupNormImpl::GroupNormImpl(int64_t groups_, int64_t channels, double eps_, bool affine)
    : groups(groups_), eps(eps_) {
  if (affine) {
    weight = register_parameter("weight", uninitialised({channels}));
    bias = register_parameter("bias", uninitialised({channels}));
  }
}

at::Tensor GroupNormImpl::forward(const at::Tensor& x) {
  // Under autocast a bf16 activation meets float32 weights (weights being trained); normalise in
  // float32 then, as autocast does for norms on CUDA (LibTorch 1.13's CPU autocast does not).
  if (weight.defined() && x.scalar_type() != weight.scalar_type())
    return at::group_norm(x.to(weight.scalar_type()), groups, weight, bias, eps);
  if (normalise_in_float32(x))
    return at::group_norm(x.to(at::kFloat), groups, as_float32(weight), as_float32(bias), eps).to(x.scalar_type());
  return at::group_norm(x, groups, weight, bias, eps);
}

void GroupNormImpl::init_parameters(at::Generator&) {
  at::NoGradGuard no_grad;
  if (weight.defined()) weight.fill_(1.0);
  if (bias.defined()) bias.zero_();
}

LayerNormImpl::LayerNormImpl(int64_t dim_, double eps_, bool affine) : dim(dim_), eps(eps_) {
  if (affine) {
    weight = register_parameter("weight", uninitialised({dim}));
    bias = register_parameter("bias", uninitialised({dim}));
  }
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) {
  if (weight.defined() && x.scalar_type() != weight.scalar_type())  // as GroupNorm under autocast
    return at::layer_norm(x.to(weight.scalar_type()), {dim}, weight, bias, eps);
  if (normalise_in_float32(x))
    return at::layer_norm(x.to(at::kFloat), {dim}, as_float32(weight), as_float32(bias), eps).to(x.scalar_type());
  return at::layer_norm(x, {dim}, weight, bias, eps);
}

void LayerNormImpl::init_parameters(at::Generator&) {
  at::NoGradGuard no_grad;
  if (weight.defined()) weight.fill_(1.0);
  if (bias.defined()) bias.zero_();
}

EmbeddingImpl::EmbeddingImpl(int64_t count, int64_t dim) {
  weight = register_parameter("weight", uninitialised({count, dim}));
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& ids) { return at::embedding(weight, ids); }

void EmbeddingImpl::init_parameters(at::Generator& generator) {
  at::NoGradGuard no_grad;
  weight.normal_(0.0, 1.0, generator);
}

void init_parameters(torch::nn::Module& module, at::Generator& generator) {
  // modules() lists the module itself first, then its descendants in registration order.
  for (const auto& child : module.modules(/*include_self=*/true))
    if (auto* layer = dynamic_cast<InitializableLayer*>(child.get())) layer->init_parameters(generator);
}

std::vector<std::pair<std::string, AdaptableLayer*>> adaptable_layers(torch::nn::Module& module) {
  std::vector<std::pair<std::string, AdaptableLayer*>> out;
  for (const auto& item : module.named_modules(/*name_prefix=*/"", /*include_self=*/false))
    if (auto* layer = dynamic_cast<AdaptableLayer*>(item.value().get())) out.emplace_back(item.key(), layer);
  return out;
}

}  // namespace singleinsert
