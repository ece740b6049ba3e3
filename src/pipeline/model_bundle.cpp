#include "singleinsert/pipeline/model_bundle.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/runtime.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/staged_directory.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/formats/ldm_checkpoint.h"

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

void check_components_fit(const ModelBundle& bundle) {
  if (bundle.text_encoder->config().encoder.hidden_size != bundle.unet->config().cross_attention_dim)
    throw Error(fmt::format("{}: the text encoder's width {} differs from the UNet's cross_attention_dim {}", bundle.path,
                            bundle.text_encoder->config().encoder.hidden_size, bundle.unet->config().cross_attention_dim));
  if (bundle.vae->config().latent_channels != bundle.unet->config().in_channels)
    throw Error(fmt::format("{}: the VAE has {} latent channels but the UNet takes {}", bundle.path,
                            bundle.vae->config().latent_channels, bundle.unet->config().in_channels));
}

// Half precision VAEs overflow in decoding (diffusers' force_upcast); they stay in float32.
at::ScalarType vae_dtype(const VaeConfig& config, const ExecutionOptions& execution) {
  return execution.dtype == at::kHalf && config.force_upcast ? at::kFloat : execution.dtype;
}

// The dtype a file stores its floating-point weights in (float32 when they are mixed).
at::ScalarType stored_dtype(const SafetensorsFile& file) {
  c10::optional<at::ScalarType> dtype;
  for (const std::string& key : file.keys()) {
    const at::ScalarType d = file.entry(key).dtype;
    if (!at::isFloatingType(d)) continue;
    if (dtype && *dtype != d) return at::kFloat;
    dtype = d;
  }
  return dtype.value_or(at::kFloat);
}

// Before loading: each module's tensors become uninitialised ones in the dtype and on the device
// it will run in, so weights are converted once, straight from the file. With half_weights, a
// float32 run keeps a half-precision file's Linear and Conv2d weights in the file's dtype.
void allocate_for_loading(torch::nn::Module& module, const ExecutionOptions& execution, at::ScalarType dtype,
                          const ModelParts& parts, at::ScalarType file_dtype) {
  allocate_uninitialised(module, execution.device, dtype);
  if (!parts.half_weights || dtype != at::kFloat || !compat::is_reduced_float(file_dtype)) return;
  for (const auto& child : module.modules(/*include_self=*/false)) {
    if (auto* linear = dynamic_cast<LinearImpl*>(child.get())) {
      allocate_uninitialised(*linear, execution.device, file_dtype);
    } else if (auto* conv = dynamic_cast<Conv2dImpl*>(child.get())) {
      allocate_uninitialised(*conv, execution.device, file_dtype);
    }
  }
}

void place(ModelBundle& bundle, const ExecutionOptions& execution) {
  // Dtypes and devices were chosen before loading (allocate_for_loading); this only makes sure.
  bundle.text_encoder->to(execution.device);
  bundle.unet->to(execution.device);
  bundle.vae->to(execution.device);
  for (auto* module : std::initializer_list<torch::nn::Module*>{bundle.text_encoder.get(), bundle.unet.get(),
                                                                bundle.vae.get()}) {
    module->eval();
    for (auto& parameter : module->parameters()) parameter.set_requires_grad(false);
  }
}

std::shared_ptr<ModelBundle> load_folder(const fs::path& root, const ExecutionOptions& execution,
                                         const ModelParts& parts) {
  const std::string folder = root.string();
  if (!fs::exists(root / "model_index.json"))
    throw Error(fmt::format("{}: not a diffusers model folder (no model_index.json)", folder));
  const fs::path tokenizer_dir = component_dir(root, "tokenizer"), text_dir = component_dir(root, "text_encoder"),
                 unet_dir = component_dir(root, "unet"), vae_dir = component_dir(root, "vae"),
                 scheduler_dir = component_dir(root, "scheduler");
  auto bundle = std::make_shared<ModelBundle>(ModelBundle{
      folder, tokenizer_dir.string(), ClipTokenizer::load(tokenizer_dir.string()), nullptr, nullptr, nullptr,
      component_config(scheduler_dir, "scheduler_config.json"), execution, ""});
  at::NoGradGuard no_grad;
  bundle->text_encoder = ClipTextModel(ClipTextConfig::from_json(component_config(text_dir)));
  bundle->unet = UNet2DConditionModel(UNetConfig::from_json(component_config(unet_dir)));
  bundle->vae = AutoencoderKL(VaeConfig::from_json(component_config(vae_dir)), parts.vae_encoder);
  const SafetensorsFile text_file = SafetensorsFile::open(weights_file(text_dir, "model"));
  allocate_for_loading(*bundle->text_encoder, execution, execution.dtype, parts, stored_dtype(text_file));
  load_state_dict(*bundle->text_encoder, text_file, {{"text_model.embeddings.position_ids", "text_projection.weight"}});
  bundle->unet_weights_path = weights_file(unet_dir, "diffusion_pytorch_model");
  const SafetensorsFile unet_file = SafetensorsFile::open(bundle->unet_weights_path);
  allocate_for_loading(*bundle->unet, execution, execution.dtype, parts, stored_dtype(unet_file));
  load_state_dict(*bundle->unet, unet_file);
  LoadOptions vae_options;
  vae_options.rename = rename_legacy_vae_key;
  if (!parts.vae_encoder) vae_options.skipped_prefixes = {"encoder.", "quant_conv."};
  const SafetensorsFile vae_file = SafetensorsFile::open(weights_file(vae_dir, "diffusion_pytorch_model"));
  allocate_for_loading(*bundle->vae, execution, vae_dtype(bundle->vae->config(), execution), parts, stored_dtype(vae_file));
  load_state_dict(*bundle->vae, vae_file, vae_options);
  return bundle;
}

std::shared_ptr<ModelBundle> load_single_file(const fs::path& file_path, const ModelSourceOptions& sources,
                                              const ExecutionOptions& execution, const ModelParts& parts) {
  const std::string path = file_path.string();
  const SafetensorsFile file = SafetensorsFile::open(path);
  const LdmCheckpointInfo info = inspect_ldm_checkpoint(file);
  const fs::path config_root(sources.model_config);
  if (!sources.model_config.empty() && !fs::is_directory(config_root))
    throw Error(fmt::format("--model-config {}: no such folder", sources.model_config));
  if (info.text_encoder == LdmTextEncoder::kOpenClip && sources.model_config.empty())
    throw Error(fmt::format("{}: an SD 2.x checkpoint (OpenCLIP text encoder keys cond_stage_model.model.*); pass "
                            "--model-config DIR with its diffusers configs (unet/, vae/, text_encoder/, tokenizer/)",
                            path));
  std::string tokenizer_dir = sources.tokenizer;
  if (tokenizer_dir.empty() && !sources.model_config.empty()) tokenizer_dir = (config_root / "tokenizer").string();
  if (tokenizer_dir.empty())
    throw Error(fmt::format("{}: a single-file checkpoint carries no tokenizer; pass --tokenizer DIR (a CLIP tokenizer "
                            "folder with vocab.json and merges.txt, e.g. the tokenizer/ folder of any SD v1.5 "
                            "diffusers download) or --model-config DIR",
                            path));
  auto config_of = [&](const std::string& component) -> std::optional<JsonConfig> {
    if (sources.model_config.empty()) return std::nullopt;
    return component_config(component_dir(config_root, component));
  };
  const auto unet_json = config_of("unet"), vae_json = config_of("vae"), text_json = config_of("text_encoder");
  const std::string scheduler_json =
      !sources.model_config.empty() && fs::exists(config_root / "scheduler" / "scheduler_config.json")
          ? read_file((config_root / "scheduler" / "scheduler_config.json").string())
          : sd15_scheduler_config_json();
  auto bundle = std::make_shared<ModelBundle>(ModelBundle{
      path, tokenizer_dir, ClipTokenizer::load(tokenizer_dir), nullptr, nullptr, nullptr,
      JsonConfig::parse(scheduler_json, "scheduler config"), execution, path});
  const UNetConfig unet_config = unet_json ? UNetConfig::from_json(*unet_json) : UNetConfig::sd15();
  if (info.unet_in_channels != unet_config.in_channels)
    throw Error(fmt::format("{}: its UNet takes {} input channels (an inpainting or other special checkpoint) but "
                            "the configuration says {}",
                            path, info.unet_in_channels, unet_config.in_channels));
  if (info.has_ema) spdlog::info("{}: the file also holds EMA weights (model_ema.*); using the non-EMA weights", path);
  at::NoGradGuard no_grad;
  bundle->unet = UNet2DConditionModel(unet_config);
  bundle->vae = AutoencoderKL(vae_json ? VaeConfig::from_json(*vae_json) : VaeConfig(), parts.vae_encoder);
  bundle->text_encoder = ClipTextModel(text_json ? ClipTextConfig::from_json(*text_json) : ClipTextConfig::sd15());
  const at::ScalarType file_dtype = stored_dtype(file);
  allocate_for_loading(*bundle->unet, execution, execution.dtype, parts, file_dtype);
  allocate_for_loading(*bundle->vae, execution, vae_dtype(bundle->vae->config(), execution), parts, file_dtype);
  allocate_for_loading(*bundle->text_encoder, execution, execution.dtype, parts, file_dtype);
  load_ldm_unet(*bundle->unet, file);
  load_ldm_vae(*bundle->vae, file);
  load_ldm_text_encoder(*bundle->text_encoder, file, info.text_encoder);
  return bundle;
}

}  // namespace

std::shared_ptr<ModelBundle> load_model_bundle(const std::string& path, const ExecutionOptions& execution,
                                               const ModelSourceOptions& sources, const ModelParts& parts) {
  const fs::path root(path);
  if (!fs::exists(root)) throw Error(fmt::format("{}: no such model folder or file", path));
  std::shared_ptr<ModelBundle> bundle;
  if (fs::is_directory(root)) {
    bundle = load_folder(root, execution, parts);
  } else if (root.extension() == ".safetensors") {
    bundle = load_single_file(root, sources, execution, parts);
  } else {
    throw Error(fmt::format("{}: give a diffusers folder or a single-file .safetensors checkpoint", path));
  }
  check_components_fit(*bundle);
  place(*bundle, execution);
  if (parts.half_weights && execution.dtype == at::kFloat && bundle->unet->conv_in->weight.scalar_type() == at::kFloat)
    spdlog::warn("{}: the UNet's weights are stored in float32 (or in mixed precision), so --half-weights changes "
                 "nothing",
                 path);
  spdlog::debug("loaded {} ({} on {})", path, dtype_name(execution.dtype), execution.device.str());
  return bundle;
}

namespace {

// LoRA networks keep their models alive to detach from them later, so the storage itself is
// dropped, not just the bundle's reference.
void release_weights(torch::nn::Module& module) {
  at::NoGradGuard no_grad;
  for (auto& [name, tensor] : module_tensors(module)) tensor.set_data(at::empty({0}, tensor.options()));
  release_free_memory();
}

}  // namespace

void ModelBundle::release_text_encoder() {
  if (!text_encoder) return;
  release_weights(*text_encoder);
  text_encoder = nullptr;
}

void ModelBundle::release_unet() {
  if (!unet) return;
  release_weights(*unet);
  unet = nullptr;
}

std::string diffusers_model_index_json() {
  const nlohmann::json j = {{"_class_name", "StableDiffusionPipeline"},
                            {"_diffusers_version", "0.25.1"},
                            {"requires_safety_checker", false},
                            {"feature_extractor", {nullptr, nullptr}},
                            {"safety_checker", {nullptr, nullptr}},
                            {"scheduler", {"diffusers", "PNDMScheduler"}},
                            {"text_encoder", {"transformers", "CLIPTextModel"}},
                            {"tokenizer", {"transformers", "CLIPTokenizer"}},
                            {"unet", {"diffusers", "UNet2DConditionModel"}},
                            {"vae", {"diffusers", "AutoencoderKL"}}};
  return j.dump(2);
}

std::string sd15_scheduler_config_json() {
  const nlohmann::json j = {{"_class_name", "PNDMScheduler"}, {"_diffusers_version", "0.25.1"},
                            {"beta_start", 0.00085},         {"beta_end", 0.012},
                            {"beta_schedule", "scaled_linear"}, {"num_train_timesteps", 1000},
                            {"prediction_type", "epsilon"},  {"set_alpha_to_one", false},
                            {"skip_prk_steps", true},        {"steps_offset", 1},
                            {"clip_sample", false},          {"timestep_spacing", "leading"},
                            {"trained_betas", nullptr}};
  return j.dump(2);
}

void write_model_parts(const std::string& directory, const ClipTextModelImpl& text_encoder,
                       const UNet2DConditionModelImpl& unet, const AutoencoderKLImpl& vae,
                       const std::string& scheduler_config_json, at::ScalarType dtype) {
  const fs::path root(directory);
  auto save = [&](const char* name, const std::string& config_json, const torch::nn::Module& module,
                  const char* weights) {
    fs::create_directories(root / name);
    write_file_atomic((root / name / "config.json").string(), config_json);
    NamedTensors tensors = state_dict(module);
    for (auto& [key, tensor] : tensors) tensor = tensor.detach().to(at::kCPU, dtype).contiguous();
    save_safetensors((root / name / weights).string(), tensors, {{"format", "pt"}});
  };
  save("text_encoder", text_encoder.config().to_json(), text_encoder, "model.safetensors");
  save("unet", unet.config().to_json(), unet, "diffusion_pytorch_model.safetensors");
  save("vae", vae.config().to_json(), vae, "diffusion_pytorch_model.safetensors");
  fs::create_directories(root / "scheduler");
  write_file_atomic((root / "scheduler" / "scheduler_config.json").string(), scheduler_config_json);
  write_file_atomic((root / "model_index.json").string(), diffusers_model_index_json());
}

void save_model_folder(const ModelBundle& bundle, const std::string& directory, at::ScalarType dtype) {
  write_directory_atomic(directory, [&](const fs::path& staging) {
    fs::create_directories(staging / "tokenizer");
    for (const auto& entry : fs::directory_iterator(bundle.tokenizer_path))
      if (entry.is_regular_file()) fs::copy_file(entry.path(), staging / "tokenizer" / entry.path().filename());
    write_model_parts(staging.string(), *bundle.text_encoder, *bundle.unet, *bundle.vae,
                      bundle.scheduler_config.json().dump(2), dtype);
  });
}

}  // namespace singleinsert
