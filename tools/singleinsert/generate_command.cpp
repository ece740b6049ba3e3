// singleinsert generate: text to images with any sampler, seeded like diffusers.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/io/generation_metadata.h"
#include "singleinsert/io/png.h"
#include "singleinsert/models/vae.h"
#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/text_to_image.h"
#include "singleinsert/sampling/sampler.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {
namespace {

struct GenerateArgs {
  std::string model;
  GenerateOptions options;
  std::string out;
  std::string device = "auto";
  std::string dtype = "fp32";
  std::string initial_latents;
  std::vector<std::string> concepts;
  bool overwrite = false;
};

// The model's native size (sample_size x VAE factor, 512 for SD v1.5) when none is given.
std::pair<int, int> native_size(const std::string& model) {
  const JsonConfig unet = JsonConfig::load((fs::path(model) / "unet" / "config.json").string());
  const VaeConfig vae = VaeConfig::from_json(JsonConfig::load((fs::path(model) / "vae" / "config.json").string()));
  const int size = unet.get_int("sample_size", 64) * static_cast<int>(vae.downsampling_factor());
  return {size, size};
}

void run_generate(GenerateArgs& args) {
  GenerateOptions& options = args.options;
  const ExecutionOptions execution = make_execution_options(args.device, args.dtype);
  // Everything that can be checked cheaply is checked before the model loads or a file is written.
  if (!fs::exists(args.model)) throw Error(fmt::format("{}: no such model folder", args.model));
  if (fs::is_directory(args.model) && fs::exists(fs::path(args.model) / "vae" / "config.json")) {
    const auto [width, height] = native_size(args.model);
    if (options.width == 0) options.width = width;
    if (options.height == 0) options.height = height;
    const VaeConfig vae = VaeConfig::from_json(JsonConfig::load((fs::path(args.model) / "vae" / "config.json").string()));
    validate_generate_options(options, vae.downsampling_factor());
  }
  if (!args.initial_latents.empty()) {
    const SafetensorsFile file = SafetensorsFile::open(args.initial_latents);
    if (file.size() != 1) throw Error(fmt::format("{}: expected exactly one tensor of latents", args.initial_latents));
    options.initial_latents = file.tensor(file.keys().front());
  }
  OutputDirectory out(args.out, args.overwrite);

  auto bundle = load_model_bundle(args.model, execution);
  std::vector<ConceptRequest> requests;
  for (const auto& text : args.concepts) requests.push_back(parse_concept_request(text));
  const AppliedConcepts concepts = apply_concepts(*bundle, requests);
  require_triggers(options.prompts, concepts.triggers);
  ProgressLine progress;
  const GeneratedImages result = generate(*bundle, options, std::ref(progress));
  progress.finish();

  nlohmann::json images = nlohmann::json::array();
  const int64_t count = result.pixels.size(0);
  for (int64_t i = 0; i < count; ++i) {
    GenerationRecord record;
    record.prompt = result.prompts[i];
    record.negative_prompt = result.negative_prompts[i];
    record.steps = options.steps;
    record.sampler = options.sampler;
    record.guidance_scale = options.guidance_scale;
    record.seed = options.seed;
    record.width = options.width;
    record.height = options.height;
    record.batch_size = static_cast<int>(count);
    record.batch_position = static_cast<int>(i);
    record.model = args.model;
    record.device = execution.device.str();
    record.dtype = dtype_name(execution.dtype);
    record.concepts = args.concepts;
    const std::string name = fmt::format("{:04}.png", i);
    const std::string path = (fs::path(args.out) / name).string();
    write_png(path, result.pixels[i], {{"parameters", a1111_parameters(record)},
                                       {"singleinsert", generation_record_json(record)}});
    images.push_back(nlohmann::json::parse(generation_record_json(record)));
    images.back()["file"] = name;
    std::printf("%s\n", path.c_str());
  }
  const nlohmann::json run = {{"command", "generate"},
                              {"model", args.model},
                              {"sampler", options.sampler},
                              {"steps", options.steps},
                              {"guidance_scale", options.guidance_scale},
                              {"seed", options.seed},
                              {"width", options.width},
                              {"height", options.height},
                              {"images_per_prompt", options.images_per_prompt},
                              {"device", execution.device.str()},
                              {"dtype", dtype_name(execution.dtype)},
                              {"initial_latents", args.initial_latents},
                              {"concepts", concepts.descriptions},
                              {"seconds", result.seconds},
                              {"images", images}};
  write_file_atomic((fs::path(args.out) / "run.json").string(), run.dump(2) + "\n");
  out.commit();
  spdlog::info("{} image(s) in {} ({})", count, args.out, format_duration(result.seconds));
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* command = app.add_subcommand("generate", "Render images from text prompts (optionally with concepts)");
  command->add_option("--model", args->model, "Diffusers model folder")->required();
  command->add_option("--prompt", args->options.prompts, "Prompt (repeat for several)")->required();
  command->add_option("--negative-prompt", args->options.negative_prompts,
                      "Negative prompt: once for all prompts, or once per prompt");
  command->add_option("--images-per-prompt", args->options.images_per_prompt, "Images per prompt")
      ->capture_default_str();
  command->add_option("--steps", args->options.steps, "Sampling steps")->capture_default_str();
  command->add_option("--guidance", args->options.guidance_scale, "Classifier-free guidance scale (1 turns it off)")
      ->capture_default_str();
  std::string samplers;
  for (const auto& name : sampler_names()) samplers += (samplers.empty() ? "" : "|") + name;
  command->add_option("--sampler", args->options.sampler, samplers)->capture_default_str();
  command->add_option("--seed", args->options.seed, "Seed of the CPU generator (as torch.Generator().manual_seed)")
      ->capture_default_str();
  args->options.width = args->options.height = 0;
  command->add_option("--width", args->options.width, "Image width (default: the model's native size)");
  command->add_option("--height", args->options.height, "Image height (default: the model's native size)");
  command->add_option("--out", args->out, "Output folder for 0000.png, 0001.png, ... and run.json")->required();
  command->add_flag("--overwrite", args->overwrite, "Write into a folder that already has files");
  command->add_option("--device", args->device, "auto|cpu|cuda")->capture_default_str();
  command->add_option("--dtype", args->dtype, "fp32|fp16|bf16")->capture_default_str();
  command->add_option("--concept", args->concepts,
                      "A concept folder from invert/finetune, optionally DIR:TRIGGER (repeat to compose)");
  command->add_option("--initial-latents", args->initial_latents,
                      "Start from the latents in this safetensors file instead of seeded noise");
  command->callback([args] { run_generate(*args); });
}

}  // namespace singleinsert::cli
