#pragma once
// diffusers' AutoencoderKL: encoder -> quant_conv -> Gaussian posterior (mean, std), and
// post_quant_conv -> decoder. Registered names equal the keys of vae/diffusion_pytorch_model.safetensors.
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <string>
#include <vector>

#include "singleinsert/models/attention.h"
#include "singleinsert/models/layers.h"
#include "singleinsert/models/resnet.h"
#include "singleinsert/models/unet.h"  // ActivationTrace

namespace singleinsert {

class JsonConfig;

struct VaeConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  int64_t latent_channels = 4;
  std::vector<int64_t> block_out_channels = {128, 256, 512, 512};
  int64_t layers_per_block = 2;
  int64_t norm_num_groups = 32;
  double scaling_factor = 0.18215;
  bool force_upcast = true;  // decode in float32 even when the rest runs in half precision

  static VaeConfig from_json(const JsonConfig& json);
  std::string to_json() const;  // diffusers' config.json
  void validate() const;
  // Pixels per latent along each side (8 for SD).
  int64_t downsampling_factor() const { return int64_t{1} << (block_out_channels.size() - 1); }
};

struct VaePosterior {
  at::Tensor mean;  // [B, latent, h, w]
  at::Tensor std;   // exp(0.5 * clamp(logvar, -30, 20))
  at::Tensor logvar;
};

// UNetMidBlock2D without time embedding: resnet, attention, resnet.
class VaeMidBlockImpl : public torch::nn::Module {
 public:
  VaeMidBlockImpl(int64_t channels, int64_t groups);
  at::Tensor forward(const at::Tensor& x);
  IndexedList<Attention> attentions;
  IndexedList<ResnetBlock2D> resnets;
};
TORCH_MODULE(VaeMidBlock);

// DownEncoderBlock2D / UpDecoderBlock2D.
class VaeBlockImpl : public torch::nn::Module {
 public:
  VaeBlockImpl(int64_t in_channels, int64_t out_channels, int64_t layers, int64_t groups, bool downsample,
               bool upsample);
  at::Tensor forward(at::Tensor x);
  IndexedList<ResnetBlock2D> resnets;
  IndexedList<Downsample2D> downsamplers;
  IndexedList<Upsample2D> upsamplers;
};
TORCH_MODULE(VaeBlock);

class VaeEncoderImpl : public torch::nn::Module {
 public:
  explicit VaeEncoderImpl(const VaeConfig& config);
  at::Tensor forward(const at::Tensor& x, ActivationTrace* trace = nullptr);  // [B, 3, H, W] -> [B, 2*latent, H/f, W/f]
  Conv2d conv_in{nullptr}, conv_out{nullptr};
  IndexedList<VaeBlock> down_blocks;
  VaeMidBlock mid_block{nullptr};
  GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VaeEncoder);

class VaeDecoderImpl : public torch::nn::Module {
 public:
  explicit VaeDecoderImpl(const VaeConfig& config);
  at::Tensor forward(const at::Tensor& z, ActivationTrace* trace = nullptr);  // [B, latent, h, w] -> [B, 3, h*f, w*f]
  Conv2d conv_in{nullptr}, conv_out{nullptr};
  VaeMidBlock mid_block{nullptr};
  IndexedList<VaeBlock> up_blocks;
  GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VaeDecoder);

class AutoencoderKLImpl : public torch::nn::Module {
 public:
  // Without the encoder (and quant_conv) for commands that only decode: a third of the weights.
  explicit AutoencoderKLImpl(const VaeConfig& config, bool with_encoder = true);
  bool has_encoder() const { return !encoder.is_empty(); }

  // Images in [-1, 1] -> the posterior over (unscaled) latents.
  VaePosterior encode(const at::Tensor& images, ActivationTrace* trace = nullptr);
  // Unscaled latents -> images in about [-1, 1]. Callers divide by scaling_factor first.
  at::Tensor decode(const at::Tensor& latents, ActivationTrace* trace = nullptr);

  const VaeConfig& config() const { return config_; }
  // The latent scale of a VAE trained here is measured after its training.
  void set_scaling_factor(double scaling_factor) { config_.scaling_factor = scaling_factor; }

  VaeEncoder encoder{nullptr};
  VaeDecoder decoder{nullptr};
  Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};

 private:
  VaeConfig config_;
};
TORCH_MODULE(AutoencoderKL);

// Maps the attention names of VAE files written before diffusers 0.14 (query, key, value,
// proj_attn) to today's (to_q, to_k, to_v, to_out.0).
std::string rename_legacy_vae_key(const std::string& key);

}  // namespace singleinsert
