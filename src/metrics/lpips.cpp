#include "singleinsert/metrics/lpips.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <filesystem>

#include "singleinsert/core/error.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {
namespace {

struct AlexConv {
  const char* slice;  // lpips' slice and torchvision's index in alexnet.features
  const char* index;
  int64_t in, out, kernel, stride, padding;
  bool pool_before;  // a 3x3 stride-2 max pool opens the slice
};
constexpr std::array<AlexConv, 5> kAlexNet{{{"slice1", "0", 3, 64, 11, 4, 2, false},
                                            {"slice2", "3", 64, 192, 5, 1, 2, true},
                                            {"slice3", "6", 192, 384, 3, 1, 1, true},
                                            {"slice4", "8", 384, 256, 3, 1, 1, false},
                                            {"slice5", "10", 256, 256, 3, 1, 1, false}}};

at::Tensor unit_normalise(const at::Tensor& f) {  // lpips.normalize_tensor, eps 1e-10
  return f / (at::sqrt(f.pow(2).sum(1, true)) + 1e-10);
}

}  // namespace

LpipsImpl::LpipsImpl() {
  auto scaling = register_module("scaling_layer", std::make_shared<torch::nn::Module>());
  shift = scaling->register_buffer("shift", at::zeros({1, 3, 1, 1}));
  scale = scaling->register_buffer("scale", at::ones({1, 3, 1, 1}));
  auto net = register_module("net", std::make_shared<torch::nn::Module>());
  for (size_t i = 0; i < kAlexNet.size(); ++i) {
    const AlexConv& c = kAlexNet[i];
    auto slice = net->register_module(c.slice, std::make_shared<torch::nn::Module>());
    convs[i] = slice->register_module(c.index, Conv2d(c.in, c.out, c.kernel, c.stride, c.padding));
    auto lin = register_module(fmt::format("lin{}", i), std::make_shared<torch::nn::Module>());
    auto model = lin->register_module("model", std::make_shared<torch::nn::Module>());
    heads[i] = model->register_module("1", Conv2d(c.out, 1, 1, 1, 0, /*bias=*/false));  // "0" is a Dropout
  }
}

std::array<at::Tensor, 5> LpipsImpl::features(const at::Tensor& x) {
  std::array<at::Tensor, 5> out;
  at::Tensor h = (x - shift) / scale;
  for (size_t i = 0; i < kAlexNet.size(); ++i) {
    if (kAlexNet[i].pool_before) h = at::max_pool2d(h, {3, 3}, {2, 2});
    h = at::relu(convs[i]->forward(h));
    out[i] = h;
  }
  return out;
}

at::Tensor LpipsImpl::per_layer(const at::Tensor& a, const at::Tensor& b) {
  if (a.dim() != 4 || a.size(1) != 3 || !a.sizes().equals(b.sizes()))
    throw Error(fmt::format("LPIPS compares two [N, 3, H, W] batches of one shape, not {} and {}",
                            shape_string(a.sizes()), shape_string(b.sizes())));
  if (a.size(2) < 32 || a.size(3) < 32) throw Error("LPIPS needs images of at least 32x32 pixels");
  at::NoGradGuard no_grad;
  const auto dtype = shift.scalar_type();
  const auto fa = features(a.to(dtype)), fb = features(b.to(dtype));
  std::vector<at::Tensor> layers;
  for (size_t i = 0; i < fa.size(); ++i) {
    const at::Tensor difference = (unit_normalise(fa[i]) - unit_normalise(fb[i])).pow(2);
    layers.push_back(heads[i]->forward(difference).mean({2, 3}).flatten(1));  // [N, 1]
  }
  return at::cat(layers, 1);  // [N, 5]
}

at::Tensor LpipsImpl::forward(const at::Tensor& a, const at::Tensor& b) { return per_layer(a, b).sum(1); }

Lpips load_lpips(const std::string& path) {
  if (std::filesystem::is_directory(path))
    throw Error(path + ": a folder; LPIPS takes one .safetensors file (see the README's conversion line)");
  const SafetensorsFile file = SafetensorsFile::open(path);
  if (!file.contains("net.slice1.0.weight"))
    throw Error(path + ": not LPIPS AlexNet weights (no tensor 'net.slice1.0.weight'; the README's conversion line "
                       "writes them)");
  std::map<std::string, at::Tensor> tensors;
  for (const std::string& key : file.keys()) {
    if (key.rfind("lins.", 0) == 0) continue;  // lpips' ModuleList view of the same lin heads
    tensors[key] = file.tensor(key);
  }
  Lpips lpips;
  load_state_dict(*lpips, tensors, file.path());
  lpips->eval();
  return lpips;
}

}  // namespace singleinsert
