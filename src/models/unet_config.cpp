#include "singleinsert/models/unet_config.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"

namespace singleinsert {
namespace {

std::vector<int64_t> per_block(const JsonConfig& json, const std::string& key, size_t blocks,
                               const std::vector<int>& fallback) {
  std::vector<int> values = json.get_int_list(key, fallback);
  if (values.size() == 1) values.assign(blocks, values[0]);
  if (values.size() != blocks)
    throw Error(fmt::format("{}: '{}' has {} entries but there are {} down blocks", json.origin(), key,
                            values.size(), blocks));
  return std::vector<int64_t>(values.begin(), values.end());
}

// Keys whose non-default values select architectures outside SD v1.x/v2.x.
void reject_unsupported(const JsonConfig& json) {
  for (const char* key : {"class_embed_type", "addition_embed_type", "time_cond_proj_dim", "encoder_hid_dim",
                          "encoder_hid_dim_type", "time_embedding_dim", "time_embedding_act_fn",
                          "timestep_post_act", "cross_attention_norm", "num_class_embeds",
                          "projection_class_embeddings_input_dim", "reverse_transformer_layers_per_block"})
    if (json.has(key))
      throw Error(fmt::format("{}: '{}' = {} is not supported (SD v1.x/v2.x UNets leave it null)", json.origin(), key,
                              json.json().at(key).dump()));
  const std::pair<const char*, std::string> expected_strings[] = {
      {"act_fn", "silu"}, {"resnet_time_scale_shift", "default"}, {"time_embedding_type", "positional"},
      {"attention_type", "default"}};
  for (const auto& [key, value] : expected_strings)
    if (json.get_string(key, value) != value)
      throw Error(fmt::format("{}: '{}' = \"{}\" is not supported (expected \"{}\")", json.origin(), key,
                              json.get_string(key, value), value));
  for (const char* key : {"dual_cross_attention", "resnet_skip_time_act", "class_embeddings_concat",
                          "mid_block_only_cross_attention"})
    if (json.has(key) && json.json().at(key).is_boolean() && json.get_bool(key, false))
      throw Error(fmt::format("{}: '{}' = true is not supported", json.origin(), key));
  if (json.has("only_cross_attention")) {
    const auto& value = json.json().at("only_cross_attention");
    const bool any = value.is_boolean() ? value.get<bool>()
                                        : (value.is_array() && std::any_of(value.begin(), value.end(),
                                                                           [](const auto& v) { return v == true; }));
    if (any) throw Error(fmt::format("{}: 'only_cross_attention' = true is not supported", json.origin()));
  }
  if (json.has("cross_attention_dim") && json.json().at("cross_attention_dim").is_array())
    throw Error(fmt::format("{}: a per-block 'cross_attention_dim' is not supported", json.origin()));
  if (json.has("layers_per_block") && json.json().at("layers_per_block").is_array())
    throw Error(fmt::format("{}: a per-block 'layers_per_block' is not supported", json.origin()));
}

}  // namespace

UNetConfig UNetConfig::from_json(const JsonConfig& json) {
  reject_unsupported(json);
  UNetConfig c;
  c.in_channels = json.get_int("in_channels", 4);
  c.out_channels = json.get_int("out_channels", 4);
  c.down_block_types = json.get_string_list("down_block_types", c.down_block_types);
  c.mid_block_type = json.get_string("mid_block_type", c.mid_block_type);
  c.up_block_types = json.get_string_list("up_block_types", c.up_block_types);
  const auto channels = json.get_int_list("block_out_channels", {320, 640, 1280, 1280});
  c.block_out_channels.assign(channels.begin(), channels.end());
  c.layers_per_block = json.get_int("layers_per_block", 2);
  c.downsample_padding = json.get_int("downsample_padding", 1);
  c.mid_block_scale_factor = json.get_double("mid_block_scale_factor", 1.0);
  c.norm_num_groups = json.get_int("norm_num_groups", 32);
  c.norm_eps = json.get_double("norm_eps", 1e-5);
  c.cross_attention_dim = json.get_int("cross_attention_dim", 1280);
  const size_t blocks = c.down_block_types.size();
  c.transformer_layers_per_block = per_block(json, "transformer_layers_per_block", blocks, {1});
  // num_attention_heads = num_attention_heads or attention_head_dim (diffusers' UNet2DConditionModel).
  c.num_attention_heads = json.has("num_attention_heads") ? per_block(json, "num_attention_heads", blocks, {8})
                                                          : per_block(json, "attention_head_dim", blocks, {8});
  c.use_linear_projection = json.get_bool("use_linear_projection", false);
  c.upcast_attention = json.get_bool("upcast_attention", false);
  c.flip_sin_to_cos = json.get_bool("flip_sin_to_cos", true);
  c.freq_shift = json.get_double("freq_shift", 0.0);
  c.center_input_sample = json.get_bool("center_input_sample", false);
  c.conv_in_kernel = json.get_int("conv_in_kernel", 3);
  c.conv_out_kernel = json.get_int("conv_out_kernel", 3);
  c.resnet_out_scale_factor = json.get_double("resnet_out_scale_factor", 1.0);
  c.sample_size = json.get_int("sample_size", 64);
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(json.origin() + ": " + e.what());
  }
  return c;
}

std::string UNetConfig::to_json() const {
  nlohmann::json j = {
      {"_class_name", "UNet2DConditionModel"},
      {"_diffusers_version", "0.25.1"},
      {"act_fn", "silu"},
      {"in_channels", in_channels},
      {"out_channels", out_channels},
      {"down_block_types", down_block_types},
      {"mid_block_type", mid_block_type},
      {"up_block_types", up_block_types},
      {"block_out_channels", block_out_channels},
      {"layers_per_block", layers_per_block},
      {"downsample_padding", downsample_padding},
      {"mid_block_scale_factor", mid_block_scale_factor},
      {"norm_num_groups", norm_num_groups},
      {"norm_eps", norm_eps},
      {"cross_attention_dim", cross_attention_dim},
      {"transformer_layers_per_block", transformer_layers_per_block},
      // diffusers reads the head count from attention_head_dim (and rejects num_attention_heads).
      {"attention_head_dim", num_attention_heads},
      {"use_linear_projection", use_linear_projection},
      {"upcast_attention", upcast_attention},
      {"flip_sin_to_cos", flip_sin_to_cos},
      {"freq_shift", freq_shift},
      {"center_input_sample", center_input_sample},
      {"conv_in_kernel", conv_in_kernel},
      {"conv_out_kernel", conv_out_kernel},
      {"resnet_out_scale_factor", resnet_out_scale_factor},
      {"sample_size", sample_size},
  };
  return j.dump(2);
}

void UNetConfig::validate() const {
  const size_t blocks = block_out_channels.size();
  if (blocks == 0) throw Error("block_out_channels is empty");
  if (down_block_types.size() != blocks || up_block_types.size() != blocks)
    throw Error(fmt::format("{} down and {} up block types for {} block_out_channels", down_block_types.size(),
                            up_block_types.size(), blocks));
  for (const auto& type : down_block_types)
    if (type != "CrossAttnDownBlock2D" && type != "DownBlock2D")
      throw Error(fmt::format("down block type '{}' is not supported", type));
  for (const auto& type : up_block_types)
    if (type != "CrossAttnUpBlock2D" && type != "UpBlock2D")
      throw Error(fmt::format("up block type '{}' is not supported", type));
  if (mid_block_type != "UNetMidBlock2DCrossAttn")
    throw Error(fmt::format("mid block type '{}' is not supported", mid_block_type));
  for (int64_t channels : block_out_channels)
    if (channels <= 0 || channels % norm_num_groups != 0)
      throw Error(fmt::format("block_out_channels {} is not a multiple of norm_num_groups {}", channels,
                              norm_num_groups));
  for (size_t i = 0; i < blocks; ++i)
    if (num_attention_heads[i] <= 0 || block_out_channels[i] % num_attention_heads[i] != 0)
      throw Error(fmt::format("block {} has {} channels, not divisible into {} attention heads", i,
                              block_out_channels[i], num_attention_heads[i]));
  if (layers_per_block <= 0 || in_channels <= 0 || out_channels <= 0 || cross_attention_dim <= 0)
    throw Error("layers_per_block, in/out_channels and cross_attention_dim must be positive");
  if (conv_in_kernel % 2 == 0 || conv_out_kernel % 2 == 0)
    throw Error(fmt::format("conv_in_kernel {} and conv_out_kernel {} must be odd", conv_in_kernel, conv_out_kernel));
}

}  // namespace singleinsert
