#pragma once
// A Stable Diffusion model as diffusers lays it out on disk (model_index.json, tokenizer/,
// text_encoder/, unet/, vae/, scheduler/), loaded strictly into the library's modules.
#include <c10/core/ScalarType.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "singleinsert/core/json_config.h"
#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/clip_tokenizer.h"
#include "singleinsert/models/unet.h"
#include "singleinsert/models/vae.h"
#include "singleinsert/pipeline/device.h"

namespace singleinsert {

struct ModelBundle {
  std::string path;  // the folder or file it came from
  std::string tokenizer_path;  // the tokenizer folder used
  ClipTokenizer tokenizer;
  ClipTextModel text_encoder{nullptr};
  UNet2DConditionModel unet{nullptr};
  AutoencoderKL vae{nullptr};
  JsonConfig scheduler_config;
  ExecutionOptions execution;
  std::string unet_weights_path;  // hashed on demand to identify the base model
  // Multi-vector embeddings: a trigger in a prompt stands for several tokens ("t" -> "t t_1 t_2").
  std::map<std::string, std::string> prompt_expansions;
  // Beyond Inserting concepts' per-stage tokens: at stage s's cross-attention, to_k reads the text
  // states made with keys[s] as the token's input embedding and to_v those made with values[s].
  struct StageTokens {
    int64_t token_id = 0;
    at::Tensor keys, values;  // [S, D]
  };
  std::vector<StageTokens> stage_tokens;

  // One-shot commands free what they need no more: the text encoder once every prompt is
  // encoded, the UNet once sampling is done (before decoding, whose activations then reuse it).
  void release_text_encoder();
  void release_unet();

  // Pixels per latent along each side.
  int64_t vae_scale_factor() const { return vae->config().downsampling_factor(); }
};

// Where the parts a single-file checkpoint lacks come from.
struct ModelSourceOptions {
  std::string model_config;  // a diffusers-style folder with unet/, vae/, text_encoder/ configs and tokenizer/
  std::string tokenizer;     // a CLIP tokenizer folder (vocab.json, merges.txt)
};

// The parts of a model a command needs (what it leaves out is never read from the file).
struct ModelParts {
  bool vae_encoder = true;  // false for commands that only decode (generate)
  // A float32 run on a half-precision file: its Linear and Conv2d weights stay as stored and are
  // upcast layer by layer as they run. The same results (float32 holds every fp16 and bf16
  // value) with about half the weight memory.
  bool half_weights = false;
};

// Loads a diffusers folder, or a single-file LDM checkpoint (.safetensors) with the architecture
// of `sources.model_config` or the built-in SD v1.5 one. Throws Error naming the file or folder
// and the missing or broken part.
std::shared_ptr<ModelBundle> load_model_bundle(const std::string& path, const ExecutionOptions& execution = {},
                                               const ModelSourceOptions& sources = {},
                                               const ModelParts& parts = {});

// model_index.json of a StableDiffusionPipeline folder.
std::string diffusers_model_index_json();

// SD v1.5's scheduler_config.json (PNDM with PLMS steps), as diffusers 0.25 writes it.
std::string sd15_scheduler_config_json();

// Writes a bundle as a diffusers folder (configs, tokenizer files, weights in `dtype`), atomically.
void save_model_folder(const ModelBundle& bundle, const std::string& directory, at::ScalarType dtype);

// Writes text_encoder/, unet/ and vae/ (config.json and weights in `dtype`), scheduler/ and
// model_index.json into `directory`: a diffusers folder but for its tokenizer.
void write_model_parts(const std::string& directory, const ClipTextModelImpl& text_encoder,
                       const UNet2DConditionModelImpl& unet, const AutoencoderKLImpl& vae,
                       const std::string& scheduler_config_json, at::ScalarType dtype);

}  // namespace singleinsert
