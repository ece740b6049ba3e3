#include "singleinsert/models/vae.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {
namespace {

constexpr double kVaeEps = 1e-6;

ResnetOptions vae_resnet(int64_t in_channels, int64_t out_channels, int64_t groups) {
  ResnetOptions o;
  o.in_channels = in_channels;
  o.out_channels = out_channels;
  o.groups = groups;
  o.eps = kVaeEps;
  return o;
}

}  // namespace

VaeConfig VaeConfig::from_json(const JsonConfig& json) {
  VaeConfig c;
  c.in_channels = json.get_int("in_channels", 3);
  c.out_channels = json.get_int("out_channels", 3);
  c.latent_channels = json.get_int("latent_channels", 4);
  const auto channels = json.get_int_list("block_out_channels", {64});
  c.block_out_channels.assign(channels.begin(), channels.end());
  c.layers_per_block = json.get_int("layers_per_block", 1);
  c.norm_num_groups = json.get_int("norm_num_groups", 32);
  c.scaling_factor = json.get_double("scaling_factor", 0.18215);
  c.force_upcast = json.get_bool("force_upcast", true);
  for (const auto& type : json.get_string_list("down_block_types", {"DownEncoderBlock2D"}))
    if (type != "DownEncoderBlock2D") throw Error(fmt::format("{}: down block type '{}' is not supported", json.origin(), type));
  for (const auto& type : json.get_string_list("up_block_types", {"UpDecoderBlock2D"}))
    if (type != "UpDecoderBlock2D") throw Error(fmt::format("{}: up block type '{}' is not supported", json.origin(), type));
  if (json.get_string("act_fn", "silu") != "silu")
    throw Error(fmt::format("{}: act_fn '{}' is not supported", json.origin(), json.get_string("act_fn", "")));
  if (!json.get_bool("mid_block_add_attention", true))
    throw Error(fmt::format("{}: mid_block_add_attention = false is not supported", json.origin()));
  if (json.has("shift_factor") && json.get_double("shift_factor", 0.0) != 0.0)
    throw Error(fmt::format("{}: shift_factor is not supported (SD v1.x/v2.x VAEs have none)", json.origin()));
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(json.origin() + ": " + e.what());
  }
  return c;
}

std::string VaeConfig::to_json() const {
  const size_t blocks = block_out_channels.size();
  nlohmann::json j = {
      {"_class_name", "AutoencoderKL"},
      {"_diffusers_version", "0.25.1"},
      {"act_fn", "silu"},
      {"in_channels", in_channels},
      {"out_channels", out_channels},
      {"latent_channels", latent_channels},
      {"block_out_channels", block_out_channels},
      {"down_block_types", std::vector<std::string>(blocks, "DownEncoderBlock2D")},
      {"up_block_types", std::vector<std::string>(blocks, "UpDecoderBlock2D")},
      {"layers_per_block", layers_per_block},
      {"norm_num_groups", norm_num_groups},
      {"scaling_factor", scaling_factor},
      {"force_upcast", force_upcast},
      {"sample_size", 512},
  };
  return j.dump(2);
}

void VaeConfig::validate() const {
  if (block_out_channels.empty()) throw Error("block_out_channels is empty");
  for (int64_t channels : block_out_channels)
    if (channels <= 0 || channels % norm_num_groups != 0)
      throw Error(fmt::format("block_out_channels {} is not a multiple of norm_num_groups {}", channels, norm_num_groups));
  if (latent_channels <= 0 || layers_per_block <= 0 || scaling_factor <= 0)
    throw Error("latent_channels, layers_per_block and scaling_factor must be positive");
}

VaeMidBlockImpl::VaeMidBlockImpl(int64_t channels, int64_t groups) {
  AttentionOptions attention;
  attention.query_dim = channels;
  attention.heads = 1;
  attention.dim_head = channels;
  attention.bias = true;
  attention.norm_num_groups = groups;
  attention.norm_eps = kVaeEps;
  attention.residual_connection = true;
  attention.upcast_softmax = true;  // as diffusers builds the VAE's mid-block attention
  attentions.attach(*this, "attentions");
  attentions.push_back(Attention(attention));
  resnets.attach(*this, "resnets");
  resnets.push_back(ResnetBlock2D(vae_resnet(channels, channels, groups)));
  resnets.push_back(ResnetBlock2D(vae_resnet(channels, channels, groups)));
}

at::Tensor VaeMidBlockImpl::forward(const at::Tensor& x) {
  return resnets[1]->forward(attentions[0]->forward(resnets[0]->forward(x)));
}

VaeBlockImpl::VaeBlockImpl(int64_t in_channels, int64_t out_channels, int64_t layers, int64_t groups, bool downsample,
                           bool upsample) {
  resnets.attach(*this, "resnets");
  for (int64_t i = 0; i < layers; ++i)
    resnets.push_back(ResnetBlock2D(vae_resnet(i == 0 ? in_channels : out_channels, out_channels, groups)));
  if (downsample) {
    downsamplers.attach(*this, "downsamplers");
    downsamplers.push_back(Downsample2D(out_channels, /*padding=*/0));
  }
  if (upsample) {
    upsamplers.attach(*this, "upsamplers");
    upsamplers.push_back(Upsample2D(out_channels));
  }
}

at::Tensor VaeBlockImpl::forward(at::Tensor x) {
  for (auto& resnet : resnets) x = resnet->forward(x);
  if (!downsamplers.empty()) x = downsamplers[0]->forward(x);
  if (!upsamplers.empty()) x = upsamplers[0]->forward(x);
  return x;
}

VaeEncoderImpl::VaeEncoderImpl(const VaeConfig& c) {
  const auto& channels = c.block_out_channels;
  conv_in = register_module("conv_in", Conv2d(c.in_channels, channels[0], 3, 1, 1));
  down_blocks.attach(*this, "down_blocks");
  for (size_t i = 0; i < channels.size(); ++i)
    down_blocks.push_back(VaeBlock(i == 0 ? channels[0] : channels[i - 1], channels[i], c.layers_per_block,
                                   c.norm_num_groups, /*downsample=*/i + 1 < channels.size(), /*upsample=*/false));
  mid_block = register_module("mid_block", VaeMidBlock(channels.back(), c.norm_num_groups));
  conv_norm_out = register_module("conv_norm_out", GroupNorm(c.norm_num_groups, channels.back(), kVaeEps));
  conv_out = register_module("conv_out", Conv2d(channels.back(), 2 * c.latent_channels, 3, 1, 1));
}

at::Tensor VaeEncoderImpl::forward(const at::Tensor& images, ActivationTrace* trace) {
  auto record = [&](const std::string& name, const at::Tensor& value) {
    if (trace) (*trace)["encoder." + name] = value;
  };
  at::Tensor x = conv_in->forward(images);
  record("conv_in", x);
  for (size_t i = 0; i < down_blocks.size(); ++i) {
    x = down_blocks[i]->forward(x);
    record(fmt::format("down_blocks.{}", i), x);
  }
  x = mid_block->forward(x);
  record("mid_block", x);
  x = conv_out->forward(at::silu(conv_norm_out->forward(x)));  // [B, 2*latent, h, w]
  record("conv_out", x);
  return x;
}

VaeDecoderImpl::VaeDecoderImpl(const VaeConfig& c) {
  const std::vector<int64_t> reversed(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  conv_in = register_module("conv_in", Conv2d(c.latent_channels, reversed[0], 3, 1, 1));
  mid_block = register_module("mid_block", VaeMidBlock(reversed[0], c.norm_num_groups));
  up_blocks.attach(*this, "up_blocks");
  for (size_t i = 0; i < reversed.size(); ++i)
    up_blocks.push_back(VaeBlock(i == 0 ? reversed[0] : reversed[i - 1], reversed[i], c.layers_per_block + 1,
                                 c.norm_num_groups, /*downsample=*/false, /*upsample=*/i + 1 < reversed.size()));
  conv_norm_out = register_module("conv_norm_out", GroupNorm(c.norm_num_groups, reversed.back(), kVaeEps));
  conv_out = register_module("conv_out", Conv2d(reversed.back(), c.out_channels, 3, 1, 1));
}

at::Tensor VaeDecoderImpl::forward(const at::Tensor& z, ActivationTrace* trace) {
  auto record = [&](const std::string& name, const at::Tensor& value) {
    if (trace) (*trace)["decoder." + name] = value;
  };
  at::Tensor x = conv_in->forward(z);
  record("conv_in", x);
  x = mid_block->forward(x);
  record("mid_block", x);
  for (size_t i = 0; i < up_blocks.size(); ++i) {
    x = up_blocks[i]->forward(x);
    record(fmt::format("up_blocks.{}", i), x);
  }
  x = conv_out->forward(at::silu(conv_norm_out->forward(x)));  // [B, 3, H, W]
  record("conv_out", x);
  return x;
}

AutoencoderKLImpl::AutoencoderKLImpl(const VaeConfig& config, bool with_encoder) : config_(config) {
  config_.validate();
  if (with_encoder) encoder = register_module("encoder", VaeEncoder(config_));
  decoder = register_module("decoder", VaeDecoder(config_));
  if (with_encoder)
    quant_conv = register_module("quant_conv", Conv2d(2 * config_.latent_channels, 2 * config_.latent_channels, 1));
  post_quant_conv = register_module("post_quant_conv", Conv2d(config_.latent_channels, config_.latent_channels, 1));
}

VaePosterior AutoencoderKLImpl::encode(const at::Tensor& images, ActivationTrace* trace) {
  if (!has_encoder()) throw Error("this VAE was loaded without its encoder (for decoding only)");
  if (images.dim() != 4 || images.size(1) != config_.in_channels)
    throw Error(fmt::format("VAE input has shape {} but the model takes [B, {}, H, W]", shape_string(images.sizes()),
                            config_.in_channels));
  at::Tensor moments = quant_conv->forward(encoder->forward(images, trace));  // [B, 2*latent, h, w]
  if (trace) (*trace)["quant_conv"] = moments;
  const auto halves = moments.chunk(2, 1);
  VaePosterior posterior;
  posterior.mean = halves[0];
  posterior.logvar = halves[1].clamp(-30.0, 20.0);
  posterior.std = at::exp(0.5 * posterior.logvar);
  return posterior;
}

at::Tensor AutoencoderKLImpl::decode(const at::Tensor& latents, ActivationTrace* trace) {
  if (latents.dim() != 4 || latents.size(1) != config_.latent_channels)
    throw Error(fmt::format("VAE latents have shape {} but the model takes [B, {}, h, w]",
                            shape_string(latents.sizes()), config_.latent_channels));
  const at::Tensor z = post_quant_conv->forward(latents);
  if (trace) (*trace)["post_quant_conv"] = z;
  return decoder->forward(z, trace);
}

std::string rename_legacy_vae_key(const std::string& key) {
  static const std::pair<const char*, const char*> renames[] = {
      {".attentions.0.query.", ".attentions.0.to_q."}, {".attentions.0.key.", ".attentions.0.to_k."},
      {".attentions.0.value.", ".attentions.0.to_v."}, {".attentions.0.proj_attn.", ".attentions.0.to_out.0."}};
  for (const auto& [from, to] : renames) {
    const size_t at = key.find(from);
    if (at != std::string::npos) return key.substr(0, at) + to + key.substr(at + std::string(from).size());
  }
  return key;
}

}  // namespace singleinsert
