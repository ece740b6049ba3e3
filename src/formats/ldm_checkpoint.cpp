#include "singleinsert/formats/ldm_checkpoint.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <regex>
#include <set>

#include "singleinsert/core/error.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/core/tensor_format.h"

namespace singleinsert {
namespace {

constexpr const char* kUnetPrefix = "model.diffusion_model.";
constexpr const char* kVaePrefix = "first_stage_model.";
constexpr const char* kClipPrefix = "cond_stage_model.transformer.";
constexpr const char* kOpenClipPrefix = "cond_stage_model.model.";

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

// Within a UNet resnet: diffusers' names -> LDM's.
std::string ldm_resnet_part(const std::string& rest) {
  static const std::pair<const char*, const char*> parts[] = {
      {"norm1.", "in_layers.0."}, {"conv1.", "in_layers.2."},  {"norm2.", "out_layers.0."},
      {"conv2.", "out_layers.3."}, {"time_emb_proj.", "emb_layers.1."}, {"conv_shortcut.", "skip_connection."}};
  for (const auto& [hf, sd] : parts)
    if (starts_with(rest, hf)) return sd + rest.substr(std::string(hf).size());
  return rest;
}

// The rest of a VAE key inside a resnet or the mid attention.
std::string ldm_vae_part(const std::string& rest) {
  static const std::pair<const char*, const char*> parts[] = {
      {"conv_shortcut.", "nin_shortcut."}, {"group_norm.", "norm."}, {"to_q.", "q."},
      {"to_k.", "k."},                     {"to_v.", "v."},          {"to_out.0.", "proj_out."}};
  for (const auto& [hf, sd] : parts)
    if (starts_with(rest, hf)) return sd + rest.substr(std::string(hf).size());
  return rest;
}

// Copies `source` into the module tensor's shape: 1x1 convolution weights and linear weights are
// the same numbers in two shapes.
at::Tensor fit_shape(const at::Tensor& source, const at::Tensor& target, const std::string& key,
                     const std::string& origin) {
  if (source.sizes() == target.sizes()) return source;
  if (source.numel() == target.numel() && (source.dim() == 4 || target.dim() == 4) &&
      (source.dim() == 2 || target.dim() == 2))
    return source.reshape(target.sizes());
  throw Error(fmt::format("{}: tensor '{}' has shape {} in the file but the model expects {}", origin, key,
                          shape_string(source.sizes()), shape_string(target.sizes())));
}

// Loads a module from (file key -> module key) pairs, then reports unused keys under `prefix`.
void load_mapped(torch::nn::Module& module, const SafetensorsFile& file, const std::string& prefix,
                 const std::function<std::string(const std::string&)>& ldm_key,
                 const std::function<bool(const std::string&)>& tolerated) {
  std::map<std::string, at::Tensor> tensors;
  std::set<std::string> used;
  std::vector<std::string> missing;
  for (const auto& [name, target] : module_tensors(module)) {
    const std::string key = prefix + ldm_key(name);
    if (!file.contains(key)) {
      missing.push_back(key);
      continue;
    }
    used.insert(key);
    tensors[name] = fit_shape(file.view(key), target, key, file.path());
  }
  if (!missing.empty())
    throw Error(fmt::format("{}: missing {} tensor(s), e.g. {}", file.path(), missing.size(), missing.front()));
  std::vector<std::string> unexpected;
  for (const auto& key : file.keys())
    if (starts_with(key, prefix) && !used.count(key) && !tolerated(key)) unexpected.push_back(key);
  if (!unexpected.empty())
    throw Error(fmt::format("{}: {} unexpected tensor(s) for this architecture, e.g. {} (is --model-config right?)",
                            file.path(), unexpected.size(), unexpected.front()));
  LoadOptions options;
  options.mapped_file = &file;
  load_state_dict(module, tensors, file.path(), options);
}

}  // namespace

LdmCheckpointInfo inspect_ldm_checkpoint(const SafetensorsFile& file) {
  LdmCheckpointInfo info;
  size_t unet = 0, ema = 0, clip = 0, open_clip = 0, sdxl = 0;
  for (const auto& key : file.keys()) {
    unet += starts_with(key, kUnetPrefix);
    ema += starts_with(key, "model_ema.");
    clip += starts_with(key, kClipPrefix);
    open_clip += starts_with(key, kOpenClipPrefix);
    sdxl += starts_with(key, "conditioner.embedders.");
  }
  if (sdxl > 0)
    throw Error(fmt::format("{}: an SDXL checkpoint (its text encoders are under conditioner.embedders.*); "
                            "singleinsert runs SD v1.x and v2.x",
                            file.path()));
  if (unet == 0)
    throw Error(fmt::format("{}: not a Stable Diffusion checkpoint (no model.diffusion_model.* keys){}", file.path(),
                            ema > 0 ? "; it holds only EMA weights (model_ema.*)" : ""));
  if (clip == 0 && open_clip == 0)
    throw Error(fmt::format("{}: no text encoder (neither cond_stage_model.transformer.* nor cond_stage_model.model.*)",
                            file.path()));
  info.text_encoder = open_clip > 0 ? LdmTextEncoder::kOpenClip : LdmTextEncoder::kClip;
  info.has_ema = ema > 100;
  const std::string conv_in = std::string(kUnetPrefix) + "input_blocks.0.0.weight";
  if (file.contains(conv_in)) {
    const auto& shape = file.entry(conv_in).shape;
    if (shape.size() != 4)
      throw Error(fmt::format("{}: '{}' has shape {} (a convolution weight has 4 dimensions)", file.path(), conv_in,
                              shape_string(shape)));
    info.unet_in_channels = shape[1];
  }
  return info;
}

std::string ldm_unet_key(const std::string& key, const UNetConfig& config) {
  static const std::pair<const char*, const char*> top[] = {{"time_embedding.linear_1.", "time_embed.0."},
                                                            {"time_embedding.linear_2.", "time_embed.2."},
                                                            {"conv_in.", "input_blocks.0.0."},
                                                            {"conv_norm_out.", "out.0."},
                                                            {"conv_out.", "out.2."}};
  for (const auto& [hf, sd] : top)
    if (starts_with(key, hf)) return sd + key.substr(std::string(hf).size());
  const int64_t per_block = config.layers_per_block + 1;  // LDM numbers each block's layers consecutively
  static const std::regex block(R"(^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)$)");
  static const std::regex mid(R"(^mid_block\.(resnets|attentions)\.(\d+)\.(.*)$)");
  std::smatch m;
  if (std::regex_match(key, m, block)) {
    const bool down = m[1] == "down_blocks";
    const int64_t i = std::stoll(m[2]), j = std::stoll(m[4]);
    const std::string kind = m[3], rest = m[5];
    if (down) {
      if (kind == "resnets") return fmt::format("input_blocks.{}.0.{}", per_block * i + j + 1, ldm_resnet_part(rest));
      if (kind == "attentions") return fmt::format("input_blocks.{}.1.{}", per_block * i + j + 1, rest);
      return fmt::format("input_blocks.{}.0.op.{}", per_block * (i + 1), rest.substr(std::string("conv.").size()));
    }
    if (kind == "resnets") return fmt::format("output_blocks.{}.0.{}", per_block * i + j, ldm_resnet_part(rest));
    if (kind == "attentions") return fmt::format("output_blocks.{}.1.{}", per_block * i + j, rest);
    const bool has_attention = config.up_block_types.at(i) == "CrossAttnUpBlock2D";
    return fmt::format("output_blocks.{}.{}.{}", per_block * i + config.layers_per_block, has_attention ? 2 : 1, rest);
  }
  if (std::regex_match(key, m, mid)) {
    if (m[1] == "attentions") return "middle_block.1." + std::string(m[3]);
    return fmt::format("middle_block.{}.{}", 2 * std::stoll(m[2]), ldm_resnet_part(m[3]));
  }
  throw Error(fmt::format("no LDM name for UNet tensor '{}'", key));
}

std::string ldm_vae_key(const std::string& key, const VaeConfig& config) {
  const int64_t blocks = static_cast<int64_t>(config.block_out_channels.size());
  static const std::regex block(R"(^(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)$)");
  static const std::regex mid(R"(^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)$)");
  std::smatch m;
  if (std::regex_match(key, m, block)) {
    const std::string side = m[1], kind = m[4], rest = m[6];
    const int64_t i = std::stoll(m[3]), j = std::stoll(m[5]);
    // The decoder's blocks run in the opposite order in LDM.
    const int64_t index = m[2] == "up_blocks" ? blocks - 1 - i : i;
    const std::string level = fmt::format("{}.{}.{}", side, m[2] == "up_blocks" ? "up" : "down", index);
    if (kind == "resnets") return fmt::format("{}.block.{}.{}", level, j, ldm_vae_part(rest));
    return fmt::format("{}.{}.{}", level, kind == "downsamplers" ? "downsample" : "upsample", rest);
  }
  if (std::regex_match(key, m, mid)) {
    const std::string side = m[1], rest = m[4];
    if (m[2] == "attentions") return side + ".mid.attn_1." + ldm_vae_part(rest);
    return fmt::format("{}.mid.block_{}.{}", side, std::stoll(m[3]) + 1, ldm_vae_part(rest));
  }
  for (const char* side : {"encoder.", "decoder."})
    if (starts_with(key, std::string(side) + "conv_norm_out."))
      return std::string(side) + "norm_out." + key.substr(std::string(side).size() + 14);
  return key;  // conv_in, conv_out, quant_conv, post_quant_conv keep their names
}

void load_ldm_unet(UNet2DConditionModelImpl& unet, const SafetensorsFile& file) {
  const UNetConfig& config = unet.config();
  load_mapped(unet, file, kUnetPrefix, [&](const std::string& key) { return ldm_unet_key(key, config); },
              [](const std::string&) { return false; });
}

void load_ldm_vae(AutoencoderKLImpl& vae, const SafetensorsFile& file) {
  const VaeConfig& config = vae.config();
  const bool decoder_only = !vae.has_encoder();
  load_mapped(vae, file, kVaePrefix, [&](const std::string& key) { return ldm_vae_key(key, config); },
              [decoder_only](const std::string& key) {
                const std::string name = key.substr(std::string(kVaePrefix).size());
                return key.find("model_ema") != std::string::npos ||
                       (decoder_only && (starts_with(name, "encoder.") || starts_with(name, "quant_conv.")));
              });
}

void load_ldm_text_encoder(ClipTextModelImpl& text_encoder, const SafetensorsFile& file, LdmTextEncoder kind) {
  if (kind == LdmTextEncoder::kClip) {
    // transformers' own names; files from before transformers 4.19 lack the "text_model." level.
    const bool nested = file.contains(std::string(kClipPrefix) + "text_model.final_layer_norm.weight");
    load_mapped(text_encoder, file, kClipPrefix,
                [nested](const std::string& key) { return nested ? key : key.substr(std::string("text_model.").size()); },
                [](const std::string& key) { return key.find("position_ids") != std::string::npos; });
    return;
  }
  // OpenCLIP (SD v2): fused q/k/v projections, and one more layer than SD uses (it reads the
  // penultimate layer, so diffusers' configs have one layer fewer).
  std::map<std::string, at::Tensor> tensors;
  std::set<std::string> used;
  const std::string p = kOpenClipPrefix;
  auto take = [&](const std::string& key) {
    if (!file.contains(key)) throw Error(fmt::format("{}: missing tensor '{}'", file.path(), key));
    used.insert(key);
    return file.view(key);
  };
  tensors["text_model.embeddings.token_embedding.weight"] = take(p + "token_embedding.weight");
  tensors["text_model.embeddings.position_embedding.weight"] = take(p + "positional_embedding");
  tensors["text_model.final_layer_norm.weight"] = take(p + "ln_final.weight");
  tensors["text_model.final_layer_norm.bias"] = take(p + "ln_final.bias");
  const int64_t layers = text_encoder.config().encoder.num_hidden_layers;
  for (int64_t i = 0; i < layers; ++i) {
    const std::string from = fmt::format("{}transformer.resblocks.{}.", p, i);
    const std::string to = fmt::format("text_model.encoder.layers.{}.", i);
    for (const auto& [sd, hf] : std::vector<std::pair<std::string, std::string>>{
             {"ln_1.", "layer_norm1."}, {"ln_2.", "layer_norm2."}, {"mlp.c_fc.", "mlp.fc1."},
             {"mlp.c_proj.", "mlp.fc2."}, {"attn.out_proj.", "self_attn.out_proj."}})
      for (const char* leaf : {"weight", "bias"}) tensors[to + hf + leaf] = take(from + sd + leaf);
    const auto weights = take(from + "attn.in_proj_weight").chunk(3, 0);
    const auto biases = take(from + "attn.in_proj_bias").chunk(3, 0);
    const char* names[] = {"q_proj", "k_proj", "v_proj"};
    for (int k = 0; k < 3; ++k) {
      tensors[to + "self_attn." + names[k] + ".weight"] = weights[k];
      tensors[to + "self_attn." + names[k] + ".bias"] = biases[k];
    }
  }
  (void)used;
  LoadOptions options;
  options.mapped_file = &file;
  load_state_dict(text_encoder, tensors, file.path(), options);
}

NamedTensors to_ldm_checkpoint(const UNet2DConditionModelImpl& unet, const AutoencoderKLImpl& vae,
                               const ClipTextModelImpl& text_encoder, at::ScalarType dtype) {
  NamedTensors out;
  for (const auto& [key, tensor] : module_tensors(unet))
    out.emplace_back(kUnetPrefix + ldm_unet_key(key, unet.config()), tensor.to(dtype));
  for (const auto& [key, tensor] : module_tensors(vae)) {
    at::Tensor value = tensor.to(dtype);
    // LDM's VAE attention projections are 1x1 convolutions.
    if (key.find("mid_block.attentions.0.to_") != std::string::npos && value.dim() == 2)
      value = value.view({value.size(0), value.size(1), 1, 1});
    out.emplace_back(kVaePrefix + ldm_vae_key(key, vae.config()), value);
  }
  for (const auto& [key, tensor] : module_tensors(text_encoder)) out.emplace_back(kClipPrefix + key, tensor.to(dtype));
  return out;
}

}  // namespace singleinsert
