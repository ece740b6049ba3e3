#pragma once
// Single-file checkpoints in the original LDM/CompVis layout (what AUTOMATIC1111, ComfyUI and
// stable-diffusion.cpp load): model.diffusion_model.* (UNet), first_stage_model.* (VAE),
// cond_stage_model.transformer.* (SD v1 CLIP text encoder) or cond_stage_model.model.* (SD v2
// OpenCLIP). Conversion is a key table per component, generalised from diffusers' published
// tables (scripts/convert_diffusers_to_original_stable_diffusion.py) to any block count.
#include <string>
#include <vector>

#include "singleinsert/core/safetensors.h"
#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/unet.h"
#include "singleinsert/models/vae.h"

namespace singleinsert {

enum class LdmTextEncoder { kClip, kOpenClip };

struct LdmCheckpointInfo {
  LdmTextEncoder text_encoder = LdmTextEncoder::kClip;
  bool has_ema = false;
  int64_t unet_in_channels = 4;
};

// Recognises the checkpoint's model family from its keys; throws Error naming the keys that show
// it is something this tool cannot run (SDXL, not Stable Diffusion at all).
LdmCheckpointInfo inspect_ldm_checkpoint(const SafetensorsFile& file);

// The LDM key that holds a diffusers tensor (without the component prefix).
std::string ldm_unet_key(const std::string& diffusers_key, const UNetConfig& config);
std::string ldm_vae_key(const std::string& diffusers_key, const VaeConfig& config);

// Strictly loads each component from the checkpoint (1x1 convolutions and linear weights are
// reshaped as needed; OpenCLIP's fused q/k/v projections are split).
void load_ldm_unet(UNet2DConditionModelImpl& unet, const SafetensorsFile& file);
void load_ldm_vae(AutoencoderKLImpl& vae, const SafetensorsFile& file);
void load_ldm_text_encoder(ClipTextModelImpl& text_encoder, const SafetensorsFile& file, LdmTextEncoder kind);

// The three SD v1 components as one LDM checkpoint, cast to `dtype`.
NamedTensors to_ldm_checkpoint(const UNet2DConditionModelImpl& unet, const AutoencoderKLImpl& vae,
                               const ClipTextModelImpl& text_encoder, at::ScalarType dtype);

}  // namespace singleinsert
