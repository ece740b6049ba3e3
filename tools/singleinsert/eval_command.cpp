// singleinsert eval: world-aware metrics. `train-detector` trains and validates the attribute
// detector; `adherence` measures how often a base model draws what its captions ask for; `concept`
// scores a learned concept (editing success, identity distance with its scale, leakage).
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/io/png.h"
#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/pipeline/device.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/text_to_image.h"
#include "singleinsert/world/detector.h"
#include "singleinsert/world/render.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {
namespace {

// Scenes for measuring adherence: held-out identities, seeds no training run draws.
constexpr uint64_t kAdherenceScenes = uint64_t{3} << 50;
// Other held-out faces that put a concept's identity distance on a scale.
constexpr uint64_t kReferenceFaces = uint64_t{5} << 50;

void add_train_detector(CLI::App& eval) {
  struct Args {
    std::string out;
    world::DetectorTrainingOptions options;
    int validate = 1024;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = eval.add_subcommand(
      "train-detector", "Train the world's attribute and identity detector on renders and validate it on fresh ones");
  command->add_option("--out", args->out, "Detector weights (.safetensors); the validation goes beside as .json")
      ->required();
  command->add_option("--steps", args->options.steps)->capture_default_str();
  command->add_option("--batch-size", args->options.batch_size)->capture_default_str();
  command->add_option("--lr", args->options.lr)->capture_default_str();
  command->add_option("--seed", args->options.seed)->capture_default_str();
  command->add_option("--validate", args->validate, "Fresh renders to validate on")->capture_default_str();
  command->callback([args] {
    if (fs::exists(args->out)) throw Error(args->out + ": already exists");
    write_file_atomic(args->out + ".probe", "");  // an unwritable destination fails before training
    fs::remove(args->out + ".probe");
    ProgressLine progress;
    world::WorldDetector detector = world::train_detector(args->options, std::ref(progress));
    progress.finish();
    const world::DetectorValidation validation = world::validate_detector(detector, args->validate, 0);
    nlohmann::json record = {{"steps", args->options.steps},
                             {"batch_size", args->options.batch_size},
                             {"lr", args->options.lr},
                             {"seed", args->options.seed},
                             {"validation_samples", validation.samples},
                             {"accuracy", validation.accuracy},
                             {"identity_auc", validation.identity_auc}};
    world::save_detector(detector, args->out);
    write_file_atomic(args->out + ".json", record.dump(2) + "\n");
    for (const auto& [name, accuracy] : validation.accuracy) std::printf("%s\t%.4f\n", name.c_str(), accuracy);
    std::printf("identity_auc\t%.4f\n", validation.identity_auc);
  });
}

// Flags of the commands that generate with a model and read the images with the detector.
struct GenerationEvalArgs {
  ModelFlags model;
  std::string detector, device = "auto", json;
  int steps = 25;
  double guidance = 7.5;
};
void add_generation_eval_flags(CLI::App* command, GenerationEvalArgs& args) {
  add_model_flags(command, args.model);
  command->add_option("--detector", args.detector, "Detector weights from eval train-detector")->required();
  command->add_option("--steps", args.steps)->capture_default_str();
  command->add_option("--guidance", args.guidance)->capture_default_str();
  command->add_option("--device", args.device, "auto|cpu|cuda")->capture_default_str();
  command->add_option("--json", args.json, "Also write the figures to this file");
}

void add_adherence(CLI::App& eval) {
  struct Args : GenerationEvalArgs {
    int count = 64;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = eval.add_subcommand(
      "adherence", "Generate from captions of fresh world scenes and measure how often each attribute is drawn");
  add_generation_eval_flags(command, *args);
  command->add_option("--count", args->count, "Captions (one image each)")->capture_default_str();
  command->callback([args] {
    world::WorldDetector detector = world::load_detector(args->detector);
    auto bundle = load_model_bundle(args->model.model, make_execution_options(args->device, "fp32"), args->model.sources);
    const int size = native_image_size(args->model);
    std::map<std::string, int> correct, counted;
    int all_correct = 0;
    for (int i = 0; i < args->count; ++i) {
      world::Scene scene = world::sample_scene(kAdherenceScenes + static_cast<uint64_t>(i));
      scene.face = world::sample_identity(world::kHeldOutIdentitySeed + kAdherenceScenes + static_cast<uint64_t>(i));
      GenerateOptions options;
      options.prompts = {world::caption(scene)};
      options.steps = args->steps;
      options.guidance_scale = args->guidance;
      options.seed = static_cast<uint64_t>(i);
      options.width = options.height = size;
      const GeneratedImages images = generate(*bundle, options);
      const world::Detection found = world::detect(detector, images.pixels)[0];
      const std::vector<int64_t> labels = world::attribute_labels(scene);
      bool every = true;
      for (size_t h = 0; h < labels.size(); ++h) {
        if (labels[h] < 0) continue;
        const std::string& name = world::attribute_heads()[h].name;
        const bool hit = found.attributes.at(name) == labels[h];
        ++counted[name];
        correct[name] += hit;
        every = every && hit;
      }
      all_correct += every;
    }
    nlohmann::json record = {{"model", args->model.model}, {"count", args->count}, {"steps", args->steps},
                             {"guidance", args->guidance}};
    for (const auto& [name, n] : counted) {
      record["attributes"][name] = static_cast<double>(correct[name]) / n;
      std::printf("%s\t%.4f\n", name.c_str(), static_cast<double>(correct[name]) / n);
    }
    record["all_attributes"] = static_cast<double>(all_correct) / args->count;
    std::printf("all_attributes\t%.4f\n", static_cast<double>(all_correct) / args->count);
    if (!args->json.empty()) write_file_atomic(args->json, record.dump(2) + "\n");
  });
}

// An editing prompt and the edits a generation must show for it to count as a success.
struct EditingPrompt {
  std::string text;  // "{}" stands for "TRIGGER CLASS"
  std::vector<std::string> edits;
};

// About ten prompts with one or two edits each. Background colours are chosen to differ from the
// source's, so that a generation showing the source background counts as leakage.
std::vector<EditingPrompt> editing_prompts(const world::Scene& source) {
  auto other_background = [&](int k) {
    int colour = (source.background + 1 + 2 * k) % static_cast<int>(world::kBackgroundColours.size());
    return world::kBackgroundColours[static_cast<size_t>(colour)];
  };
  const std::string first = other_background(0), second = other_background(1);
  const char* second_article = second[0] == 'o' ? "an" : "a";
  return {{"a photo of a {} wearing sunglasses", {"sunglasses"}},
          {"a photo of a {} wearing a hat", {"hat"}},
          {"a photo of a {} wearing earrings", {"earrings"}},
          {"a photo of a smiling {}", {"smiling"}},
          {fmt::format("a photo of a {{}} on a{} {} background", first[0] == 'o' ? "n" : "", first),
           {first + "-background"}},
          {"a photo of a {} next to a red cup", {"cup"}},
          {"a photo of a {} wearing sunglasses and a hat", {"sunglasses", "hat"}},
          {fmt::format("a photo of a surprised {{}} on {} {} background", second_article, second),
           {"surprised", second + "-background"}},
          {"a photo of a {} wearing a hat on a dotted background", {"hat", "dotted"}},
          {"a photo of a {} on the left on a striped background", {"left", "striped"}}};
}

void add_concept(CLI::App& eval) {
  struct Args : GenerationEvalArgs {
    std::string concept_dir, source, images;
    int seeds = 3;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = eval.add_subcommand(
      "concept", "Fidelity, editing success rate and background leakage of a concept learned from a world render");
  add_generation_eval_flags(command, *args);
  command->add_option("--concept", args->concept_dir, "Concept folder (invert or finetune output)")->required();
  command->add_option("--source", args->source, "samples.jsonl of the world render the concept was learned from")
      ->required();
  command->add_option("--seeds", args->seeds, "Generations per prompt")->capture_default_str();
  command->add_option("--images", args->images, "Also write the generations to this folder");
  command->callback([args] {
    std::ifstream index(args->source);
    std::string line;
    if (!index || !std::getline(index, line)) throw Error(args->source + ": cannot read a sample from it");
    const world::Scene source = world::scene_from_json(nlohmann::json::parse(line).at("attributes"));
    world::WorldDetector detector = world::load_detector(args->detector);
    const world::Detection source_found =
        world::detect(detector, world::render(source, world::WorldDetectorImpl::kInputSize).image.unsqueeze(0))[0];
    auto bundle = load_model_bundle(args->model.model, make_execution_options(args->device, "fp32"), args->model.sources);
    const AppliedConcepts concepts = apply_concepts(*bundle, {parse_concept_request(args->concept_dir)});
    const std::string subject = concepts.triggers.at(0) + " face";
    const int size = native_image_size(args->model);
    if (!args->images.empty()) fs::create_directories(args->images);

    int successes = 0, generations = 0, leaks = 0, recoloured = 0;
    double distance = 0;
    // The scale of the identity distance: the edited scenes rendered with the source face (what a
    // perfect concept would draw) and with other faces (what the class alone would draw).
    std::vector<at::Tensor> same_face, other_face;
    nlohmann::json per_prompt = nlohmann::json::array();
    for (const EditingPrompt& prompt : editing_prompts(source)) {
      world::Scene wanted = source;
      for (const auto& edit : prompt.edits) world::apply_edit(wanted, edit);
      same_face.push_back(world::render(wanted, world::WorldDetectorImpl::kInputSize).image);
      for (int k = 0; k < args->seeds; ++k) {
        world::Scene other = wanted;
        other.face = world::sample_identity(world::kHeldOutIdentitySeed + kReferenceFaces +
                                            static_cast<uint64_t>(other_face.size()));
        other_face.push_back(world::render(other, world::WorldDetectorImpl::kInputSize).image);
      }
      const std::vector<int64_t> labels = world::attribute_labels(wanted), before = world::attribute_labels(source);
      GenerateOptions options;
      options.prompts = {fmt::format(fmt::runtime(prompt.text), subject)};
      options.images_per_prompt = args->seeds;
      options.steps = args->steps;
      options.guidance_scale = args->guidance;
      options.width = options.height = size;
      const GeneratedImages images = generate(*bundle, options);
      const std::vector<world::Detection> found = world::detect(detector, images.pixels);
      int prompt_successes = 0;
      for (size_t i = 0; i < found.size(); ++i) {
        bool every = true;  // every attribute the edits changed is detected as asked
        for (size_t h = 0; h < labels.size(); ++h)
          if (labels[h] != before[h] && labels[h] >= 0)
            every = every && found[i].attributes.at(world::attribute_heads()[h].name) == labels[h];
        prompt_successes += every;
        distance += world::identity_distance(found[i], source_found);
        if (wanted.background != source.background) {
          ++recoloured;
          leaks += found[i].attributes.at("background") == source.background;
        }
        if (!args->images.empty())
          write_file_atomic((fs::path(args->images) / fmt::format("{:02}_{:02}.png", per_prompt.size(), i)).string(),
                            encode_png(images.pixels[static_cast<int64_t>(i)], {{"prompt", options.prompts[0]}}));
      }
      successes += prompt_successes;
      generations += static_cast<int>(found.size());
      per_prompt.push_back({{"prompt", options.prompts[0]},
                            {"edits", prompt.edits},
                            {"success_rate", static_cast<double>(prompt_successes) / found.size()}});
    }
    auto mean_distance = [&](const std::vector<at::Tensor>& renders) {
      double sum = 0;
      for (const world::Detection& found : world::detect(detector, at::stack(renders)))
        sum += world::identity_distance(found, source_found);
      return sum / static_cast<double>(renders.size());
    };
    const nlohmann::json record = {{"concept", args->concept_dir},
                                   {"generations", generations},
                                   {"esr", static_cast<double>(successes) / generations},
                                   {"identity_distance", distance / generations},
                                   {"identity_distance_same_face", mean_distance(same_face)},
                                   {"identity_distance_other_faces", mean_distance(other_face)},
                                   {"background_leakage", recoloured ? static_cast<double>(leaks) / recoloured : 0.0},
                                   {"prompts", per_prompt}};
    std::printf("esr\t%.4f\nidentity_distance\t%.4f\nbackground_leakage\t%.4f\n", record["esr"].get<double>(),
                record["identity_distance"].get<double>(), record["background_leakage"].get<double>());
    std::printf("identity_distance_same_face\t%.4f\nidentity_distance_other_faces\t%.4f\n",
                record["identity_distance_same_face"].get<double>(),
                record["identity_distance_other_faces"].get<double>());
    if (!args->json.empty()) write_file_atomic(args->json, record.dump(2) + "\n");
  });
}

}  // namespace

void add_eval_command(CLI::App& app) {
  CLI::App* eval = app.add_subcommand("eval", "World-aware metrics: the detector and what models draw");
  eval->require_subcommand(1);
  add_train_detector(*eval);
  add_adherence(*eval);
  add_concept(*eval);
}

}  // namespace singleinsert::cli
