#pragma once
// LPIPS v0.1 with the AlexNet trunk (Zhang et al. 2018; richzhang/PerceptualSimilarity's
// lpips.LPIPS(net='alex')): the input scaled by a fixed per-channel shift and scale, AlexNet's
// five ReLU outputs, each unit-normalised over channels, their squared difference weighted by a
// learned 1x1 head (lin0..lin4), averaged over space and summed. Registered with lpips.LPIPS's
// state-dict keys (scaling_layer.*, net.slice1.0 ... net.slice5.10, linK.model.1.weight), which
// one documented Python line writes to a .safetensors file (README, "Measuring a concept").
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <array>
#include <string>

#include "singleinsert/models/layers.h"

namespace singleinsert {

class LpipsImpl : public torch::nn::Module {
 public:
  LpipsImpl();
  // Images [N, 3, H, W] in [-1, 1] (both the same size) -> distance [N].
  at::Tensor forward(const at::Tensor& a, const at::Tensor& b);
  // Each of the five layers' contribution, [N, 5] (they sum to forward's distance).
  at::Tensor per_layer(const at::Tensor& a, const at::Tensor& b);

  at::Tensor shift, scale;  // scaling_layer.*: [1, 3, 1, 1]
  std::array<Conv2d, 5> convs{Conv2d{nullptr}, Conv2d{nullptr}, Conv2d{nullptr}, Conv2d{nullptr}, Conv2d{nullptr}};
  std::array<Conv2d, 5> heads{Conv2d{nullptr}, Conv2d{nullptr}, Conv2d{nullptr}, Conv2d{nullptr}, Conv2d{nullptr}};

 private:
  std::array<at::Tensor, 5> features(const at::Tensor& x);
};
TORCH_MODULE(Lpips);

// Reads the converted weights file; Error naming the file and the missing tensor otherwise.
Lpips load_lpips(const std::string& path);

}  // namespace singleinsert
