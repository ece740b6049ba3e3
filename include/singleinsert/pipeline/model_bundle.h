#pragma once
// A Stable Diffusion model as diffusers lays it out on disk (model_index.json, tokenizer/,
// text_encoder/, unet/, vae/, scheduler/), loaded strictly into the library's modules.
#include <memory>
#include <string>

#include "singleinsert/core/json_config.h"
#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/clip_tokenizer.h"
#include "singleinsert/models/unet.h"
#include "singleinsert/models/vae.h"
#include "singleinsert/pipeline/device.h"

namespace singleinsert {

struct ModelBundle {
  std::string path;  // the folder it came from
  ClipTokenizer tokenizer;
  ClipTextModel text_encoder{nullptr};
  UNet2DConditionModel unet{nullptr};
  AutoencoderKL vae{nullptr};
  JsonConfig scheduler_config;
  ExecutionOptions execution;
  std::string unet_weights_path;  // hashed on demand to identify the base model

  // Pixels per latent along each side.
  int64_t vae_scale_factor() const { return vae->config().downsampling_factor(); }
};

// Loads a diffusers folder. Throws Error naming the folder and the missing or broken part.
std::shared_ptr<ModelBundle> load_model_bundle(const std::string& folder, const ExecutionOptions& execution = {});

}  // namespace singleinsert
