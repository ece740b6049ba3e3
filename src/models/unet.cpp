#include "singleinsert/models/unet.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {
namespace {

ResnetOptions resnet_options(const UNetConfig& config, int64_t in_channels, int64_t out_channels) {
  ResnetOptions o;
  o.in_channels = in_channels;
  o.out_channels = out_channels;
  o.temb_channels = config.time_embed_dim();
  o.groups = config.norm_num_groups;
  o.eps = config.norm_eps;
  o.output_scale_factor = config.resnet_out_scale_factor;
  return o;
}

TransformerOptions transformer_options(const UNetConfig& config, int64_t channels, int64_t heads, int64_t layers) {
  TransformerOptions o;
  o.channels = channels;
  o.heads = heads;
  o.cross_attention_dim = config.cross_attention_dim;
  o.num_layers = layers;
  o.norm_num_groups = config.norm_num_groups;
  o.use_linear_projection = config.use_linear_projection;
  o.upcast_attention = config.upcast_attention;
  return o;
}

}  // namespace

at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos, double freq_shift) {
  const int64_t half = dim / 2;
  const auto options = at::TensorOptions().dtype(at::kFloat).device(timesteps.device());
  // Same float32 operation order as diffusers, so the features match to the last bit.
  const at::Tensor exponent = at::arange(0, half, options) * (-std::log(10000.0)) / (static_cast<double>(half) - freq_shift);
  const at::Tensor angles = timesteps.to(at::kFloat).unsqueeze(1) * at::exp(exponent).unsqueeze(0);  // [B, half]
  at::Tensor emb = flip_sin_to_cos ? at::cat({at::cos(angles), at::sin(angles)}, -1)
                                   : at::cat({at::sin(angles), at::cos(angles)}, -1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1}, 0.0);
  return emb;  // [B, dim]
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim) {
  linear_1 = register_module("linear_1", Linear(in_channels, time_embed_dim));
  linear_2 = register_module("linear_2", Linear(time_embed_dim, time_embed_dim));
}

at::Tensor TimestepEmbeddingImpl::forward(const at::Tensor& x) {
  return linear_2->forward(at::silu(linear_1->forward(x)));
}

UNetDownBlockImpl::UNetDownBlockImpl(const UNetConfig& config, size_t index, int64_t in_channels) {
  const int64_t out_channels = config.block_out_channels[index];
  const bool cross_attention = config.down_block_types[index] == "CrossAttnDownBlock2D";
  resnets.attach(*this, "resnets");
  if (cross_attention) attentions.attach(*this, "attentions");
  for (int64_t i = 0; i < config.layers_per_block; ++i) {
    resnets.push_back(ResnetBlock2D(resnet_options(config, i == 0 ? in_channels : out_channels, out_channels)));
    if (cross_attention)
      attentions.push_back(Transformer2DModel(transformer_options(
          config, out_channels, config.num_attention_heads[index], config.transformer_layers_per_block[index])));
  }
  if (index + 1 < config.block_out_channels.size()) {
    downsamplers.attach(*this, "downsamplers");
    downsamplers.push_back(Downsample2D(out_channels, config.downsample_padding));
  }
}

at::Tensor UNetDownBlockImpl::forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& context,
                                      std::vector<at::Tensor>& residuals) {
  for (size_t i = 0; i < resnets.size(); ++i) {
    x = resnets[i]->forward(x, temb);
    if (!attentions.empty()) x = attentions[i]->forward(x, context);
    residuals.push_back(x);
  }
  if (!downsamplers.empty()) {
    x = downsamplers[0]->forward(x);
    residuals.push_back(x);
  }
  return x;
}

UNetMidBlockImpl::UNetMidBlockImpl(const UNetConfig& config) {
  const int64_t channels = config.block_out_channels.back();
  ResnetOptions options = resnet_options(config, channels, channels);
  options.output_scale_factor = config.mid_block_scale_factor;
  attentions.attach(*this, "attentions");
  attentions.push_back(Transformer2DModel(transformer_options(config, channels, config.num_attention_heads.back(),
                                                              config.transformer_layers_per_block.back())));
  resnets.attach(*this, "resnets");
  resnets.push_back(ResnetBlock2D(options));
  resnets.push_back(ResnetBlock2D(options));
}

at::Tensor UNetMidBlockImpl::forward(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context) {
  at::Tensor h = resnets[0]->forward(x, temb);
  h = attentions[0]->forward(h, context);
  return resnets[1]->forward(h, temb);
}

UNetUpBlockImpl::UNetUpBlockImpl(const UNetConfig& config, size_t index) {
  // Up block i mirrors down block (n-1-i): its skips come from that block and the one before.
  const size_t n = config.block_out_channels.size();
  const std::vector<int64_t> reversed(config.block_out_channels.rbegin(), config.block_out_channels.rend());
  const std::vector<int64_t> reversed_heads(config.num_attention_heads.rbegin(), config.num_attention_heads.rend());
  const std::vector<int64_t> reversed_layers(config.transformer_layers_per_block.rbegin(),
                                             config.transformer_layers_per_block.rend());
  const int64_t out_channels = reversed[index];
  const int64_t prev_output_channels = reversed[index == 0 ? 0 : index - 1];
  const int64_t skip_in_channels = reversed[std::min(index + 1, n - 1)];
  const bool cross_attention = config.up_block_types[index] == "CrossAttnUpBlock2D";
  const int64_t num_layers = config.layers_per_block + 1;
  resnets.attach(*this, "resnets");
  if (cross_attention) attentions.attach(*this, "attentions");
  for (int64_t i = 0; i < num_layers; ++i) {
    const int64_t skip_channels = i == num_layers - 1 ? skip_in_channels : out_channels;
    const int64_t resnet_in = i == 0 ? prev_output_channels : out_channels;
    resnets.push_back(ResnetBlock2D(resnet_options(config, resnet_in + skip_channels, out_channels)));
    if (cross_attention)
      attentions.push_back(Transformer2DModel(
          transformer_options(config, out_channels, reversed_heads[index], reversed_layers[index])));
  }
  if (index + 1 < n) {
    upsamplers.attach(*this, "upsamplers");
    upsamplers.push_back(Upsample2D(out_channels));
  }
}

at::Tensor UNetUpBlockImpl::forward(at::Tensor x, std::vector<at::Tensor>& residuals, const at::Tensor& temb,
                                    const at::Tensor& context, c10::optional<std::array<int64_t, 2>> upsample_size) {
  for (size_t i = 0; i < resnets.size(); ++i) {
    x = at::cat({x, residuals.back()}, 1);  // [B, C + C_skip, H, W]
    residuals.pop_back();
    x = resnets[i]->forward(x, temb);
    if (!attentions.empty()) x = attentions[i]->forward(x, context);
  }
  if (!upsamplers.empty()) x = upsamplers[0]->forward(x, upsample_size);
  return x;
}

UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNetConfig& config) : config_(config) {
  config_.validate();
  const auto& channels = config_.block_out_channels;
  conv_in = register_module("conv_in", Conv2d(config_.in_channels, channels[0], config_.conv_in_kernel, 1,
                                              config_.conv_in_kernel / 2));
  // time_proj has no parameters; its features feed time_embedding.
  time_embedding = register_module("time_embedding", TimestepEmbedding(channels[0], config_.time_embed_dim()));
  down_blocks.attach(*this, "down_blocks");
  for (size_t i = 0; i < channels.size(); ++i)
    down_blocks.push_back(UNetDownBlock(config_, i, i == 0 ? channels[0] : channels[i - 1]));
  mid_block = register_module("mid_block", UNetMidBlock(config_));
  up_blocks.attach(*this, "up_blocks");
  for (size_t i = 0; i < channels.size(); ++i) up_blocks.push_back(UNetUpBlock(config_, i));
  conv_norm_out = register_module("conv_norm_out", GroupNorm(config_.norm_num_groups, channels[0], config_.norm_eps));
  conv_out = register_module("conv_out", Conv2d(channels[0], config_.out_channels, config_.conv_out_kernel, 1,
                                                config_.conv_out_kernel / 2));
}

at::Tensor UNet2DConditionModelImpl::forward(const at::Tensor& sample, const at::Tensor& timesteps,
                                             const at::Tensor& context, ActivationTrace* trace) {
  if (sample.dim() != 4 || sample.size(1) != config_.in_channels)
    throw Error(fmt::format("UNet input has shape {} but the model takes [B, {}, H, W]", shape_string(sample.sizes()),
                            config_.in_channels));
  if (context.dim() != 3 || context.size(0) != sample.size(0) || context.size(2) != config_.cross_attention_dim)
    throw Error(fmt::format("UNet text conditioning has shape {} but the model takes [{}, L, {}]",
                            shape_string(context.sizes()), sample.size(0), config_.cross_attention_dim));
  const int64_t batch = sample.size(0);
  auto record = [&](const std::string& name, const at::Tensor& value) {
    if (trace != nullptr) (*trace)[name] = value;
  };

  // With inputs that are not multiples of the overall downsampling factor, each upsampler is
  // told the size of the skip connection it must meet.
  const int64_t factor = int64_t{1} << config_.num_upsamplers();
  const bool forward_upsample_size = sample.size(2) % factor != 0 || sample.size(3) % factor != 0;

  at::Tensor t = timesteps.dim() == 0 ? timesteps.reshape({1}).expand({batch}) : timesteps;
  if (t.numel() != batch)
    throw Error(fmt::format("{} timesteps for a batch of {}", t.numel(), batch));
  const at::Tensor t_features = timestep_embedding(t.to(sample.device()), config_.block_out_channels[0],
                                                   config_.flip_sin_to_cos, config_.freq_shift)
                                    .to(sample.scalar_type());  // [B, C0]
  record("time_proj", t_features);
  const at::Tensor temb = time_embedding->forward(t_features);  // [B, 4*C0]
  record("time_embedding", temb);

  at::Tensor x = config_.center_input_sample ? 2.0 * sample - 1.0 : sample;
  x = conv_in->forward(x);  // [B, C0, H, W]
  record("conv_in", x);
  std::vector<at::Tensor> residuals{x};
  for (size_t i = 0; i < down_blocks.size(); ++i) {
    const size_t before = residuals.size();
    x = down_blocks[i]->forward(x, temb, context, residuals);
    record(fmt::format("down_blocks.{}", i), x);
    for (size_t k = before; k < residuals.size(); ++k)
      record(fmt::format("down_blocks.{}.res{}", i, k - before), residuals[k]);
  }
  x = mid_block->forward(x, temb, context);
  record("mid_block", x);
  for (size_t i = 0; i < up_blocks.size(); ++i) {
    c10::optional<std::array<int64_t, 2>> upsample_size;
    const size_t consumed = up_blocks[i]->resnets.size();
    if (forward_upsample_size && i + 1 < up_blocks.size()) {
      const at::Tensor& next_skip = residuals[residuals.size() - consumed - 1];
      upsample_size = std::array<int64_t, 2>{next_skip.size(2), next_skip.size(3)};
    }
    x = up_blocks[i]->forward(x, residuals, temb, context, upsample_size);
    record(fmt::format("up_blocks.{}", i), x);
  }
  x = conv_norm_out->forward(x);
  record("conv_norm_out", x);
  x = conv_out->forward(at::silu(x));  // [B, C_out, H, W]
  record("conv_out", x);
  return x;
}

}  // namespace singleinsert
