#include "singleinsert/pipeline/model_bundle.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>

#include "singleinsert/core/error.h"
#include "singleinsert/core/state_dict.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

// The weights file of a component folder: safetensors only (pickled .bin files can run code).
std::string weights_file(const fs::path& component, const std::string& stem) {
  const fs::path file = component / (stem + ".safetensors");
  if (fs::exists(file)) return file.string();
  const fs::path half = component / (stem + ".fp16.safetensors");
  if (fs::exists(half)) return half.string();
  if (fs::exists(component / (stem == "model" ? "pytorch_model.bin" : stem + ".bin")))
    throw Error(fmt::format("{}: only a PyTorch .bin weights file is present; singleinsert reads .safetensors "
                            "(convert it once, e.g. with diffusers' save_pretrained(safe_serialization=True))",
                            component.string()));
  throw Error(fmt::format("{}: missing {}.safetensors", component.string(), stem));
}

fs::path component_dir(const fs::path& root, const std::string& name) {
  const fs::path dir = root / name;
  if (!fs::is_directory(dir))
    throw Error(fmt::format("{}: missing the {}/ folder (a diffusers Stable Diffusion folder has tokenizer/, "
                            "text_encoder/, unet/, vae/ and scheduler/)",
                            root.string(), name));
  return dir;
}

JsonConfig component_config(const fs::path& dir, const std::string& file = "config.json") {
  const fs::path path = dir / file;
  if (!fs::exists(path)) throw Error(fmt::format("{}: missing {}", dir.string(), file));
  return JsonConfig::load(path.string());
}

}  // namespace

std::shared_ptr<ModelBundle> load_model_bundle(const std::string& folder, const ExecutionOptions& execution) {
  const fs::path root(folder);
  if (!fs::exists(root)) throw Error(fmt::format("{}: no such model folder", folder));
  if (!fs::is_directory(root))
    throw Error(fmt::format("{}: not a folder (single-file checkpoints are not supported yet: give a diffusers "
                            "folder)",
                            folder));
  if (!fs::exists(root / "model_index.json"))
    throw Error(fmt::format("{}: not a diffusers model folder (no model_index.json)", folder));

  const fs::path tokenizer_dir = component_dir(root, "tokenizer"), text_dir = component_dir(root, "text_encoder"),
                 unet_dir = component_dir(root, "unet"), vae_dir = component_dir(root, "vae"),
                 scheduler_dir = component_dir(root, "scheduler");
  auto bundle = std::make_shared<ModelBundle>(ModelBundle{
      folder, ClipTokenizer::load(tokenizer_dir.string()), nullptr, nullptr, nullptr,
      component_config(scheduler_dir, "scheduler_config.json"), execution, ""});

  at::NoGradGuard no_grad;
  bundle->text_encoder = ClipTextModel(ClipTextConfig::from_json(component_config(text_dir)));
  load_state_dict(*bundle->text_encoder, SafetensorsFile::open(weights_file(text_dir, "model")),
                  {{"text_model.embeddings.position_ids", "text_projection.weight"}});

  bundle->unet = UNet2DConditionModel(UNetConfig::from_json(component_config(unet_dir)));
  bundle->unet_weights_path = weights_file(unet_dir, "diffusion_pytorch_model");
  load_state_dict(*bundle->unet, SafetensorsFile::open(bundle->unet_weights_path));

  bundle->vae = AutoencoderKL(VaeConfig::from_json(component_config(vae_dir)));
  LoadOptions vae_options;
  vae_options.rename = rename_legacy_vae_key;
  load_state_dict(*bundle->vae, SafetensorsFile::open(weights_file(vae_dir, "diffusion_pytorch_model")), vae_options);

  if (bundle->text_encoder->config().encoder.hidden_size != bundle->unet->config().cross_attention_dim)
    throw Error(fmt::format("{}: the text encoder's width {} differs from the UNet's cross_attention_dim {}", folder,
                            bundle->text_encoder->config().encoder.hidden_size,
                            bundle->unet->config().cross_attention_dim));
  if (bundle->vae->config().latent_channels != bundle->unet->config().in_channels)
    throw Error(fmt::format("{}: the VAE has {} latent channels but the UNet takes {}", folder,
                            bundle->vae->config().latent_channels, bundle->unet->config().in_channels));

  // Half precision VAEs overflow in decoding (diffusers' force_upcast); they stay in float32.
  const bool vae_in_fp32 = execution.dtype == at::kHalf && bundle->vae->config().force_upcast;
  bundle->text_encoder->to(execution.device, execution.dtype);
  bundle->unet->to(execution.device, execution.dtype);
  bundle->vae->to(execution.device, vae_in_fp32 ? at::kFloat : execution.dtype);
  for (auto* module : std::initializer_list<torch::nn::Module*>{bundle->text_encoder.get(), bundle->unet.get(),
                                                                bundle->vae.get()}) {
    module->eval();
    for (auto& parameter : module->parameters()) parameter.set_requires_grad(false);
  }
  spdlog::debug("loaded {} ({} on {})", folder, dtype_name(execution.dtype), execution.device.str());
  return bundle;
}

}  // namespace singleinsert
