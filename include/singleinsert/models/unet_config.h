#pragma once
// UNet2DConditionModel's configuration as diffusers writes it in unet/config.json. Defaults are
// SD v1.5's; options that SD v1.x/v2.x folders do not use are rejected by validate() with the
// offending key and value rather than silently ignored.
#include <cstdint>
#include <string>
#include <vector>

namespace singleinsert {

class JsonConfig;

struct UNetConfig {
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "CrossAttnDownBlock2D", "DownBlock2D"};
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D"};
  std::vector<int64_t> block_out_channels = {320, 640, 1280, 1280};
  int64_t layers_per_block = 2;
  int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1.0;
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  int64_t cross_attention_dim = 768;
  std::vector<int64_t> transformer_layers_per_block = {1, 1, 1, 1};  // per down block
  // Heads per down block. diffusers reads "attention_head_dim" as the head count when
  // "num_attention_heads" is absent (a historical quirk every SD config relies on).
  std::vector<int64_t> num_attention_heads = {8, 8, 8, 8};
  bool use_linear_projection = false;
  bool upcast_attention = false;
  bool flip_sin_to_cos = true;
  double freq_shift = 0.0;
  bool center_input_sample = false;
  int64_t conv_in_kernel = 3;
  int64_t conv_out_kernel = 3;
  double resnet_out_scale_factor = 1.0;
  int64_t sample_size = 64;

  static UNetConfig from_json(const JsonConfig& json);
  // diffusers' config.json for this architecture (loadable by diffusers too).
  std::string to_json() const;
  static UNetConfig sd15() { return UNetConfig(); }
  void validate() const;
  int64_t time_embed_dim() const { return block_out_channels.front() * 4; }
  int64_t num_upsamplers() const { return static_cast<int64_t>(block_out_channels.size()) - 1; }
};

}  // namespace singleinsert
