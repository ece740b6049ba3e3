// singleinsert generate: text to images with any sampler, seeded like diffusers, with concepts,
// LoRAs and embeddings.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/io/generation_metadata.h"
#include "singleinsert/io/plots.h"
#include "singleinsert/io/png.h"
#include "singleinsert/metrics/editing_prompts.h"
#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/pipeline/memory_estimate.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/text_to_image.h"
#include "singleinsert/sampling/noise_schedule.h"
#include "singleinsert/sampling/sampler.h"
#include "singleinsert/core/json_config.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {
namespace {

struct GenerateArgs {
  ModelFlags model;
  GenerateOptions options;
  std::string out;
  std::string device = "auto";
  std::string dtype = "fp32";
  std::string initial_latents, prompts_from;
  std::vector<std::string> concepts, loras, embeddings;
  bool overwrite = false;
  bool grid = false;
  bool half_weights = false;
};

// An editing list's prompts (.json, as eval images reads them) or a text file's non-empty lines.
std::vector<std::string> prompts_from_file(const std::string& path) {
  std::vector<std::string> prompts;
  if (fs::path(path).extension() == ".json") {
    for (const EditingPrompt& entry : EditingPromptList::load(path).prompts) prompts.push_back(entry.prompt);
    return prompts;
  }
  std::istringstream lines(read_file(path));
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) prompts.push_back(line);
  }
  if (prompts.empty()) throw Error(path + ": no prompts");
  return prompts;
}

void run_generate(GenerateArgs& args) {
  GenerateOptions& options = args.options;
  const ExecutionOptions execution = make_execution_options(args.device, args.dtype);
  if (!args.prompts_from.empty()) {
    for (const std::string& prompt : prompts_from_file(args.prompts_from)) options.prompts.push_back(prompt);
  }
  if (options.prompts.empty()) throw Error("generate needs --prompt or --prompts-from");
  if (args.half_weights && execution.dtype != at::kFloat)
    throw Error("--half-weights is for --dtype fp32 (with fp16 or bf16 the weights are half precision already)");
  // Everything that can be checked cheaply is checked before the model loads or a file is written.
  if (!fs::exists(args.model.model)) throw Error(fmt::format("{}: no such model folder or file", args.model.model));
  if (options.width == 0) options.width = native_image_size(args.model);
  if (options.height == 0) options.height = native_image_size(args.model);
  const fs::path scheduler = fs::path(args.model.model) / "scheduler" / "scheduler_config.json";
  validate_generate_options(options, vae_factor(args.model),
                            fs::exists(scheduler) ? NoiseScheduleConfig::from_json(JsonConfig::load(scheduler.string())).num_train_timesteps
                                                  : NoiseScheduleConfig().num_train_timesteps);
  if (execution.device.is_cpu()) {
    GenerationShape shape;
    shape.images = static_cast<int64_t>(options.prompts.size()) * options.images_per_prompt;
    shape.guided = options.guidance_scale > 1.0;
    shape.width = options.width;
    shape.height = options.height;
    shape.dtype = execution.dtype;
    const VaeConfig vae = vae_config(args.model);
    const bool vae_fp32 = vae.force_upcast || execution.dtype == at::kFloat;
    require_memory(estimate_generation_memory(unet_config(args.model), vae, shape,
                                              model_weight_bytes(args.model.model, execution.dtype, vae_fp32)),
                   available_memory_bytes(),
                   fmt::format("{} image(s) of {}x{}", shape.images, options.width, options.height),
                   "use a smaller --width/--height or fewer prompts and --images-per-prompt");
  }
  if (!args.initial_latents.empty()) {
    const SafetensorsFile file = SafetensorsFile::open(args.initial_latents);
    if (file.size() != 1) throw Error(fmt::format("{}: expected exactly one tensor of latents", args.initial_latents));
    options.initial_latents = file.tensor(file.keys().front());
  }
  OutputDirectory out(args.out, args.overwrite);

  ModelParts parts;
  parts.vae_encoder = false;  // generate only decodes
  parts.half_weights = args.half_weights;
  auto bundle = load_model_bundle(args.model.model, execution, args.model.sources, parts);
  std::vector<ConceptRequest> concept_requests;
  for (const auto& text : args.concepts) concept_requests.push_back(parse_concept_request(text));
  std::vector<LoraRequest> lora_requests;
  for (const auto& text : args.loras) lora_requests.push_back(parse_lora_request(text));
  std::vector<EmbeddingRequest> embedding_requests;
  for (const auto& text : args.embeddings) embedding_requests.push_back(parse_embedding_request(text));
  const AppliedConcepts concepts = apply_concepts(*bundle, concept_requests);
  const auto loras = apply_loras(*bundle, lora_requests);
  const auto embedding_triggers = apply_embeddings(*bundle, embedding_requests);
  require_triggers(options.prompts, concepts.triggers);

  options.release_models = true;  // one batch: every prompt is encoded and sampled at once
  ProgressLine progress;
  const GeneratedImages result = generate(*bundle, options, std::ref(progress));
  progress.finish();

  const std::string model_hash = bundle->unet_weights_path.empty() ? "" : base_model_sha256(*bundle).substr(0, 10);
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
    record.model = args.model.model;
    record.model_hash = model_hash;
    record.device = execution.device.str();
    record.dtype = dtype_name(execution.dtype);
    record.concepts = args.concepts;
    record.loras = args.loras;
    record.embeddings = args.embeddings;
    const std::string name = fmt::format("{:04}.png", i);
    const std::string path = (fs::path(args.out) / name).string();
    write_png(path, result.pixels[i], {{"parameters", a1111_parameters(record)},
                                       {"singleinsert", generation_record_json(record)}});
    images.push_back(nlohmann::json::parse(generation_record_json(record)));
    images.back()["file"] = name;
    std::printf("%s\n", path.c_str());
  }
  if (args.grid) {
    // One row per prompt; captions only where a tile is wide enough to hold a readable line.
    std::vector<at::Tensor> tiles;
    for (int64_t i = 0; i < count; ++i) tiles.push_back(result.pixels[i]);
    const std::vector<std::string> captions = options.width >= 256 ? result.prompts : std::vector<std::string>{};
    write_png((fs::path(args.out) / "grid.png").string(), image_grid(tiles, options.images_per_prompt, captions));
  }
  const nlohmann::json run = {{"command", "generate"},
                              {"model", args.model.model},
                              {"model_hash", model_hash},
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
                              {"loras", args.loras},
                              {"embeddings", embedding_triggers},
                              {"seconds", result.seconds},
                              {"images", images}};
  write_file_atomic((fs::path(args.out) / "run.json").string(), run.dump(2) + "\n");
  out.commit();
  spdlog::info("{} image(s) in {} ({})", count, args.out, format_duration(result.seconds));
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* command = app.add_subcommand("generate", "Render images from text prompts (with concepts, LoRAs, embeddings)");
  add_model_flags(command, args->model);
  command->add_option("--prompt", args->options.prompts, "Prompt (repeat for several)");
  command->add_option("--prompts-from", args->prompts_from,
                      "More prompts: an editing list (.json, e.g. assets/editing_prompts/faces.json) or a text file, "
                      "one prompt per line");
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
  command->add_flag("--grid", args->grid, "Also write grid.png: one row per prompt, one column per image");
  command->add_option("--device", args->device, "auto|cpu|cuda")->capture_default_str();
  command->add_option("--dtype", args->dtype, "fp32|fp16|bf16")->capture_default_str();
  command->add_flag("--half-weights", args->half_weights,
                    "With --dtype fp32 and a half-precision model file: keep its weights as stored and upcast "
                    "each layer's as it runs (the same images, half the memory for weights)");
  command->add_option("--concept", args->concepts,
                      "A concept folder from invert/finetune, optionally DIR:TRIGGER (repeat to compose)");
  command->add_option("--lora", args->loras, "A LoRA file (kohya, diffusers/PEFT), optionally FILE:SCALE (repeatable)");
  command->add_option("--embedding", args->embeddings,
                      "A textual-inversion embedding (diffusers or AUTOMATIC1111), optionally FILE:TRIGGER");
  command->add_option("--initial-latents", args->initial_latents,
                      "Start from the latents in this safetensors file instead of seeded noise");
  command->callback([args] { run_generate(*args); });
}

}  // namespace singleinsert::cli
