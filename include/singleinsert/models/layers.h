#pragma once
// Leaf layers registered under PyTorch's parameter names ("weight", "bias"). Unlike
// torch::nn's layers they allocate without initialising, because nearly every model is loaded
// from a file right after construction (init_parameters() gives PyTorch's default init for
// models built from scratch). Linear and Conv2d accept LoRA adapters, which live outside the
// module's parameters so that base checkpoints load strictly.
#include <ATen/core/Generator.h>
#include <torch/nn/module.h>

#include <memory>
#include <vector>

#include "singleinsert/models/lora_adapter.h"

namespace singleinsert {

// A layer that knows how to give itself PyTorch's default initialisation.
class InitializableLayer {
 public:
  virtual ~InitializableLayer() = default;
  virtual void init_parameters(at::Generator& generator) = 0;
};

// A layer that LoRA adapters can be attached to.
class AdaptableLayer : public InitializableLayer {
 public:
  void add_adapter(std::shared_ptr<LoraAdapter> adapter) { adapters_.push_back(std::move(adapter)); }
  void remove_adapters(const std::string& name);
  void remove_adapter(const LoraAdapter* adapter);
  void clear_adapters() { adapters_.clear(); }
  const std::vector<std::shared_ptr<LoraAdapter>>& adapters() const { return adapters_; }
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;

 protected:
  std::vector<std::shared_ptr<LoraAdapter>> adapters_;
};

class LinearImpl : public torch::nn::Module, public AdaptableLayer {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  at::Tensor forward(const at::Tensor& x);  // [..., in] -> [..., out]
  // Outputs first .. first + count only, without adapters: [..., in] -> [..., count].
  at::Tensor forward_rows(const at::Tensor& x, int64_t first, int64_t count);
  void init_parameters(at::Generator& generator) override;
  int64_t in_features() const override { return weight.size(1); }
  int64_t out_features() const override { return weight.size(0); }

  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined
};
TORCH_MODULE(Linear);

class Conv2dImpl : public torch::nn::Module, public AdaptableLayer {
 public:
  Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1,
             int64_t padding = 0, bool bias = true);
  at::Tensor forward(const at::Tensor& x);  // [N, Cin, H, W] -> [N, Cout, H', W']
  void init_parameters(at::Generator& generator) override;
  int64_t in_features() const override { return weight.size(1); }
  int64_t out_features() const override { return weight.size(0); }

  at::Tensor weight;  // [out, in, k, k]
  at::Tensor bias;    // [out] or undefined
  int64_t stride;
  int64_t padding;
};
TORCH_MODULE(Conv2d);

class GroupNormImpl : public torch::nn::Module, public InitializableLayer {
 public:
  GroupNormImpl(int64_t groups, int64_t channels, double eps, bool affine = true);
  at::Tensor forward(const at::Tensor& x);  // [N, C, ...]
  void init_parameters(at::Generator& generator) override;

  at::Tensor weight, bias;
  int64_t groups;
  double eps;
};
TORCH_MODULE(GroupNorm);

class LayerNormImpl : public torch::nn::Module, public InitializableLayer {
 public:
  LayerNormImpl(int64_t dim, double eps, bool affine = true);
  at::Tensor forward(const at::Tensor& x);  // [..., dim]
  void init_parameters(at::Generator& generator) override;

  at::Tensor weight, bias;
  int64_t dim;
  double eps;
};
TORCH_MODULE(LayerNorm);

class EmbeddingImpl : public torch::nn::Module, public InitializableLayer {
 public:
  EmbeddingImpl(int64_t count, int64_t dim);
  at::Tensor forward(const at::Tensor& ids);  // [...] int64 -> [..., dim]
  void init_parameters(at::Generator& generator) override;  // N(0, 1) as nn.Embedding

  at::Tensor weight;  // [count, dim]
};
TORCH_MODULE(Embedding);

// A container whose children are registered as "0", "1", ... so that keys read
// "down_blocks.0.resnets.1.conv1.weight", as in the PyTorch checkpoints.
template <typename T>
class IndexedList {
 public:
  void attach(torch::nn::Module& owner, const std::string& name) {
    holder_ = owner.register_module(name, std::make_shared<torch::nn::Module>());
  }
  void push_back(T item) {
    holder_->register_module(std::to_string(items_.size()), item.ptr());
    items_.push_back(std::move(item));
  }
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  T& operator[](size_t i) { return items_[i]; }
  const T& operator[](size_t i) const { return items_[i]; }
  auto begin() { return items_.begin(); }
  auto end() { return items_.end(); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::shared_ptr<torch::nn::Module> holder_;
  std::vector<T> items_;
};

// PyTorch's default initialisation for every layer under `module`, from one generator, so a
// seed gives the same weights everywhere.
void init_parameters(torch::nn::Module& module, at::Generator& generator);

// Every adaptable layer under `module` with its registered path ("down_blocks.0....to_q").
std::vector<std::pair<std::string, AdaptableLayer*>> adaptable_layers(torch::nn::Module& module);

}  // namespace singleinsert
