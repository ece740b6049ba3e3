// singleinsert eval: world-aware metrics. `train-detector` trains and validates the attribute
// detector; `adherence` measures how often a base model draws what its captions ask for; `concept`
// scores a learned concept between its floors (words, the class word) and ceilings (the VAE, an
// overfit UNet); `compose` scores two concepts learned apart and used in one prompt.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/io/png.h"
#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/pipeline/device.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/pipeline/text_to_image.h"
#include "singleinsert/world/detector.h"
#include "singleinsert/world/evaluation.h"
#include "singleinsert/world/measurements.h"
#include "singleinsert/world/render.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {
namespace {

// Scenes for measuring adherence: held-out identities, seeds no training run draws.
constexpr uint64_t kAdherenceScenes = uint64_t{3} << 50;
// Galleries of other held-out identities for recognising a composed concept.
constexpr uint64_t kGalleryIdentities = uint64_t{7} << 50;

void add_train_detector(CLI::App& eval) {
  struct Args {
    std::string out, vae_model, precision = "bf16";
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
  command->add_option("--vae", args->vae_model,
                      "A model folder whose VAE some batches pass through, so that the detector reads that model's "
                      "images as well as renders");
  command->add_option("--vae-share", args->options.vae_share, "Share of batches passed through --vae")
      ->capture_default_str();
  command->add_option("--validate", args->validate, "Fresh renders to validate on")->capture_default_str();
  command->add_option("--init", args->options.init, "Detector weights to continue training from")
      ->check(CLI::ExistingFile);
  command->add_option("--first-scene", args->options.first_scene,
                      "Index of the first training scene (to continue on scenes the --init run never saw)")
      ->capture_default_str();
  command->add_option("--precision", args->precision, "fp32|bf16: the training's forward passes")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  command->callback([args] {
    args->options.bf16 = args->precision == "bf16";
    if (fs::exists(args->out)) throw Error(args->out + ": already exists");
    write_file_atomic(args->out + ".probe", "");  // an unwritable destination fails before training
    fs::remove(args->out + ".probe");
    AutoencoderKL vae{nullptr};
    if (!args->vae_model.empty()) vae = load_model_vae(args->vae_model);
    ProgressLine progress;
    world::WorldDetector detector = world::train_detector(args->options, std::ref(progress), vae ? &vae : nullptr);
    progress.finish();
    const world::DetectorValidation validation = world::validate_detector(detector, args->validate, 0);
    nlohmann::json record = {{"steps", args->options.steps},
                             {"batch_size", args->options.batch_size},
                             {"lr", args->options.lr},
                             {"seed", args->options.seed},
                             {"vae", args->vae_model},
                             {"vae_share", args->vae_model.empty() ? 0.0 : args->options.vae_share},
                             {"init", args->options.init},
                             {"first_scene", args->options.first_scene},
                             {"precision", args->precision},
                             {"validation_samples", validation.samples},
                             {"accuracy", validation.accuracy},
                             {"identity_auc", validation.identity_auc},
                             {"cup_identity_auc", validation.cup_identity_auc}};
    world::save_detector(detector, args->out);
    write_file_atomic(args->out + ".json", record.dump(2) + "\n");
    for (const auto& [name, accuracy] : validation.accuracy) std::printf("%s\t%.4f\n", name.c_str(), accuracy);
    std::printf("identity_auc\t%.4f\ncup_identity_auc\t%.4f\n", validation.identity_auc, validation.cup_identity_auc);
  });
}

// Flags of the commands that generate with a model and read the images with the detector.
struct GenerationEvalArgs {
  ModelFlags model;
  std::string detector, device = "auto", json, images;
  int steps = 25, seeds = 3;
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

world::DrawSettings draw_settings(const GenerationEvalArgs& args) {
  world::DrawSettings settings;
  settings.steps = args.steps;
  settings.guidance = args.guidance;
  settings.size = native_image_size(args.model);
  return settings;
}

void add_adherence(CLI::App& eval) {
  struct Args : GenerationEvalArgs {
    int count = 64, persons = 32;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = eval.add_subcommand(
      "adherence", "Generate from captions of fresh world scenes and measure how often each attribute is drawn, and "
                   "how near a named person's face comes to that person's");
  add_generation_eval_flags(command, *args);
  command->add_option("--count", args->count, "Captions (one image each)")->capture_default_str();
  command->add_option("--persons", args->persons, "Named persons drawn by name alone (one image each)")
      ->capture_default_str();
  command->callback([args] {
    world::WorldDetector detector = world::load_detector(args->detector);
    auto bundle = load_model_bundle(args->model.model, make_execution_options(args->device, "fp32"), args->model.sources);
    const int size = native_image_size(args->model);
    std::map<std::string, int> correct, counted;
    std::map<std::string, std::vector<std::vector<int>>> confusion;  // [asked][drawn] per attribute
    int all_correct = 0;
    for (int i = 0; i < args->count; ++i) {
      world::Scene scene = world::sample_scene(kAdherenceScenes + static_cast<uint64_t>(i));
      scene.face = world::sample_identity(world::kHeldOutIdentitySeed + kAdherenceScenes + static_cast<uint64_t>(i));
      scene.person = -1;
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
        const int64_t drawn = found.attributes.at(name);
        const bool hit = drawn == labels[h];
        const size_t classes = static_cast<size_t>(world::attribute_heads()[h].classes);
        auto& table = confusion[name];
        if (table.empty()) table.assign(classes, std::vector<int>(classes, 0));
        ++table[labels[h]][drawn];
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
    for (const auto& [name, table] : confusion) record["confusion"][name] = table;  // rows asked, columns drawn
    record["all_attributes"] = static_cast<double>(all_correct) / args->count;
    std::printf("all_attributes\t%.4f\n", static_cast<double>(all_correct) / args->count);

    if (args->persons > 0) {
      const int persons = std::min<int>(args->persons, static_cast<int>(world::person_names().size()));
      const world::IdentityParts c = world::person_closeness(*bundle, detector, persons, draw_settings(*args));
      record["persons"] = {{"count", persons}, {"closeness", world::to_json(c)}};
      std::printf("persons_closeness_whole\t%.4f\npersons_closeness_named\t%.4f\npersons_closeness_hidden\t%.4f\n",
                  c.whole, c.named, c.hidden);
    }
    if (!args->json.empty()) write_file_atomic(args->json, record.dump(2) + "\n");
  });
}

world::Scene read_source_scene(const std::string& samples_jsonl) {
  std::ifstream index(samples_jsonl);
  std::string line;
  if (!index || !std::getline(index, line)) throw Error(samples_jsonl + ": cannot read a sample from it");
  return world::scene_from_json(nlohmann::json::parse(line).at("attributes"));
}

struct ConceptArgs : GenerationEvalArgs {
  std::string concept_dir, source, floors;
  // At 400 steps and lr 2e-4 the overfit UNet stopped short of its one image (docs/toyworld.md).
  int overfit_steps = 800;
  double overfit_lr = 1e-4;
  double overfit_unconditional = 0.5;
  bool without_floors = false;
};

void add_concept(CLI::App& eval) {
  auto args = std::make_shared<ConceptArgs>();
  CLI::App* command = eval.add_subcommand(
      "concept",
      "Editing success, identity closeness (named and hidden parts) and leakage of a concept learned from a world "
      "render, between its floors (the attributes in words, the class word) and ceilings (the VAE, an overfit UNet)");
  add_generation_eval_flags(command, *args);
  command->add_option("--concept", args->concept_dir, "Concept folder (invert or finetune output)")->required();
  command->add_option("--source", args->source, "samples.jsonl of the world render the concept was learned from")
      ->required();
  command->add_option("--seeds", args->seeds, "Generations per prompt")->capture_default_str();
  command->add_option("--images", args->images, "Also write the concept's generations to this folder");
  command->add_option("--floors", args->floors,
                      "Keep the floors and ceilings in this file: read when it matches this source, model and "
                      "settings, else measured and written");
  command->add_option("--overfit-steps", args->overfit_steps,
                      "Steps of the overfit ceiling's UNet fine-tuning (0: no overfit ceiling; the VAE's is the ceiling)")
      ->capture_default_str();
  command->add_option("--overfit-lr", args->overfit_lr, "Learning rate of the overfit ceiling's fine-tuning")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command->add_option("--overfit-unconditional", args->overfit_unconditional,
                      "Share of each overfit batch on the empty prompt, so that guidance keeps the overfit image")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  command->add_flag("--without-floors", args->without_floors, "Skip the floors and ceilings (faster)");
  command->callback([args] {
    const world::Scene source = read_source_scene(args->source);
    const bool cup = source.subject == world::Subject::kCup;
    world::WorldDetector detector = world::load_detector(args->detector);
    world::SourceReference reference(detector, source);
    auto load_model = [args] {
      return load_model_bundle(args->model.model, make_execution_options(args->device, "fp32"), args->model.sources);
    };
    auto bundle = load_model();
    const world::DrawSettings draw = draw_settings(*args);
    const std::vector<world::EditList> edits = world::editing_edits(source);

    nlohmann::json floors;
    if (!args->without_floors) {
      // The weights' hash as well as the path: a model retrained in place has other floors.
      const nlohmann::json key = {{"model", fs::weakly_canonical(args->model.model).string()},
                                  {"unet_sha256", base_model_sha256(*bundle)},
                                  {"source", world::to_json(source)}, {"seeds", args->seeds},
                                  {"steps", args->steps}, {"guidance", args->guidance},
                                  {"overfit_steps", args->overfit_steps}, {"overfit_lr", args->overfit_lr},
                                  {"overfit_unconditional", args->overfit_unconditional},
                                  {"overfit_latents", world::kOverfitLatents}};
      if (!args->floors.empty() && fs::exists(args->floors)) {
        const nlohmann::json kept = nlohmann::json::parse(read_file(args->floors));
        if (kept.value("key", nlohmann::json()) == key) floors = kept.at("floors");
      }
      if (floors.is_null()) {
        world::FloorSettings settings;
        settings.draw = draw;
        settings.seeds = args->seeds;
        settings.overfit_steps = args->overfit_steps;
        settings.overfit_lr = args->overfit_lr;
        settings.overfit_unconditional = args->overfit_unconditional;
        ProgressLine progress;
        floors = world::measure_floors(*bundle, load_model, reference, settings, std::ref(progress));
        progress.finish();
        if (!args->floors.empty())
          write_file_atomic(args->floors, nlohmann::json{{"key", key}, {"floors", floors}}.dump(2) + "\n");
      }
    }

    const AppliedConcepts concepts = apply_concepts(*bundle, {parse_concept_request(args->concept_dir)});
    const std::string subject = concepts.triggers.at(0) + (cup ? " cup" : " face");
    const at::Tensor images = world::draw(*bundle, world::editing_prompts(source, edits, subject), args->seeds, draw);
    const world::ScoredRows rows = reference.score(edits, images);
    const world::IdentityScale& scale = reference.scale_for(edits);
    nlohmann::json per_prompt = nlohmann::json::array();
    for (size_t p = 0; p < edits.size(); ++p)
      per_prompt.push_back({{"prompt", world::editing_prompt(source, edits[p], subject)},
                            {"edits", edits[p]},
                            {"success_rate", rows.per_prompt_success[p]}});
    nlohmann::json record = {{"concept", args->concept_dir},
                             {"subject", cup ? "cup" : "face"},
                             {"generations", rows.generations},
                             {"esr", rows.success},
                             {"background_leakage", rows.background_leakage},
                             {"identity_distance", rows.distance.whole},
                             {"identity_distance_parts", world::to_json(rows.distance)},
                             {"closeness", world::to_json(rows.closeness)},
                             {"identity_distance_same_face", scale.same.whole},
                             {"identity_distance_other_faces", scale.other.whole},
                             {"prompts", per_prompt}};
    if (!rows.named_kept.empty()) record["named_attributes_kept"] = rows.named_kept;
    if (!cup) {
      const std::vector<world::EditList> views = world::novel_view_edits();
      record["novel_view"] = world::to_json(
          reference.score(views, world::draw(*bundle, world::editing_prompts(source, views, subject), args->seeds, draw)));
    }
    if (!floors.is_null()) {
      record["floors"] = floors;
      record["closeness_floor_to_ceiling"] = world::floor_to_ceiling(rows.closeness, floors);
    }
    if (!args->images.empty()) {
      fs::create_directories(args->images);
      const int64_t per_prompt_count = args->seeds;
      for (int64_t i = 0; i < images.size(0); ++i)
        write_file_atomic((fs::path(args->images) / fmt::format("{:02}_{:02}.png", i / per_prompt_count,
                                                                 i % per_prompt_count)).string(),
                          encode_png(images[i], {{"prompt", per_prompt[static_cast<size_t>(i / per_prompt_count)]
                                                                .at("prompt").get<std::string>()}}));
    }

    // The table: one figure a line, "name<TAB>value", for people and for scripts.
    auto line = [](const std::string& name, const nlohmann::json& value) {  // null (no figure) prints as nan
      std::printf("%s\t%.4f\n", name.c_str(), value.is_null() ? std::nan("") : value.get<double>());
    };
    line("esr", rows.success);
    line("identity_distance", rows.distance.whole);
    line("background_leakage", rows.background_leakage);
    line("identity_distance_same_face", scale.same.whole);
    line("identity_distance_other_faces", scale.other.whole);
    for (const char* part : {"whole", "named", "hidden"}) line(std::string("closeness_") + part, record["closeness"][part]);
    for (const auto& [name, share] : rows.named_kept) line("kept_" + name, share);
    if (record.contains("novel_view")) {
      line("novel_view_success", record["novel_view"]["success"]);
      line("novel_view_closeness_whole", record["novel_view"]["closeness"]["whole"]);
      line("novel_view_closeness_hidden", record["novel_view"]["closeness"]["hidden"]);
    }
    if (!floors.is_null()) {
      for (const char* row : {"text", "class_word", "vae_ceiling", "overfit_ceiling"})
        for (const char* part : floors.contains(row) ? std::vector<const char*>{"whole", "named", "hidden"}
                                                     : std::vector<const char*>{})
          line(fmt::format("{}_closeness_{}", row, part), floors[row]["closeness"][part]);
      line("text_esr", floors["text"]["success"]);
      line("class_word_esr", floors["class_word"]["success"]);
      for (const char* part : {"whole", "named", "hidden"})
        line(std::string("closeness_floor_to_ceiling_") + part, record["closeness_floor_to_ceiling"][part]);
    }
    if (!args->json.empty()) write_file_atomic(args->json, record.dump(2) + "\n");
  });
}

void add_compose(CLI::App& eval) {
  struct Args : GenerationEvalArgs {
    std::string face_concept, cup_concept, face_source, cup_source;
    int gallery = 9;
    bool ceilings_only = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = eval.add_subcommand(
      "compose", "Two concepts learned apart (a face and a cup) in one prompt: are both recognised, and the edits obeyed?");
  add_generation_eval_flags(command, *args);
  command->add_option("--concept", args->face_concept, "The face concept, DIR[:TRIGGER]");
  command->add_option("--cup-concept", args->cup_concept, "The cup concept, DIR[:TRIGGER] (a trigger of its own)");
  command->add_option("--source", args->face_source, "samples.jsonl of the face's source render")->required();
  command->add_option("--cup-source", args->cup_source, "samples.jsonl of the cup's source render")->required();
  command->add_option("--seeds", args->seeds, "Generations per prompt")->capture_default_str();
  command->add_option("--gallery", args->gallery, "Other identities each one is told apart from")->capture_default_str();
  command->add_option("--images", args->images, "Also write the generations to this folder");
  command->add_flag("--ceilings-only", args->ceilings_only,
                    "Only the ceilings, without generating: the wanted scenes rendered, and through the VAE");
  command->callback([args] {
    const world::Scene face = read_source_scene(args->face_source), cup = read_source_scene(args->cup_source);
    if (face.subject != world::Subject::kFace || cup.subject != world::Subject::kCup)
      throw Error("eval compose: --source must be a face render and --cup-source a cup render");
    if (!args->ceilings_only && (args->face_concept.empty() || args->cup_concept.empty()))
      throw Error("eval compose: give --concept and --cup-concept (or --ceilings-only)");
    world::WorldDetector detector = world::load_detector(args->detector);
    auto bundle = load_model_bundle(args->model.model, make_execution_options(args->device, "fp32"), args->model.sources);
    const std::vector<world::EditList> edits = {{"cup"}, {"cup", "sunglasses"}, {"cup", "hat"}, {"cup", "smiling"},
                                                {"cup", world::editing_edits(face)[4][0]}};
    std::vector<world::Scene> wanted;
    for (const auto& edit : edits) {
      world::Scene scene = world::edited_scene(face, edit);
      scene.cup_identity = cup.cup_identity;
      wanted.push_back(scene);
    }
    // Reads images, `per_scene` in a row for each wanted scene: is each identity recognised, each
    // edit obeyed?
    auto read = [&](const at::Tensor& images, int per_scene) {
      const std::vector<world::Detection> found = world::detect(detector, images);
      const std::vector<int64_t> before = world::attribute_labels(face);
      int both = 0, faces = 0, cups = 0, edited = 0, all = 0;
      for (size_t i = 0; i < found.size(); ++i) {
        const world::Scene& scene = wanted[i / static_cast<size_t>(per_scene)];
        const bool face_ok =
            world::recognised(detector, found[i], scene, world::Subject::kFace, args->gallery, kGalleryIdentities);
        const bool cup_ok =
            world::recognised(detector, found[i], scene, world::Subject::kCup, args->gallery, kGalleryIdentities + 64);
        const std::vector<int64_t> labels = world::attribute_labels(scene);
        bool obeyed = true;
        for (size_t h = 0; h < labels.size(); ++h)
          if (labels[h] != before[h] && labels[h] >= 0)
            obeyed = obeyed && found[i].attributes.at(world::attribute_heads()[h].name) == labels[h];
        faces += face_ok;
        cups += cup_ok;
        edited += obeyed;
        both += face_ok && cup_ok;
        all += face_ok && cup_ok && obeyed;
      }
      const double n = static_cast<double>(found.size());
      return nlohmann::json{{"success", all / n},         {"both_recognised", both / n}, {"face_recognised", faces / n},
                            {"cup_recognised", cups / n}, {"edits_obeyed", edited / n}};
    };
    auto score = [&](const std::string& face_words, const std::string& cup_words, const std::string& images_dir) {
      std::vector<std::string> prompts;
      for (const auto& edit : edits) prompts.push_back(world::editing_prompt(face, edit, face_words, cup_words));
      const at::Tensor images = world::draw(*bundle, prompts, args->seeds, draw_settings(*args));
      for (int64_t i = 0; !images_dir.empty() && i < images.size(0); ++i) {
        fs::create_directories(images_dir);
        write_file_atomic((fs::path(images_dir) / fmt::format("{:04}.png", i)).string(),
                          encode_png(images[i], {{"prompt", prompts[static_cast<size_t>(i / args->seeds)]}}));
      }
      nlohmann::json scored = read(images, args->seeds);
      scored["generations"] = images.size(0);
      scored["example_prompt"] = prompts.back();
      return scored;
    };
    // What the detector reads of the wanted scenes themselves, rendered, and through the model's
    // VAE: the ceilings a composition is judged against.
    const int size = draw_settings(*args).size;
    std::vector<at::Tensor> renders;
    for (const world::Scene& scene : wanted) renders.push_back(world::render(scene, size).image);
    nlohmann::json record;
    const at::Tensor rendered = at::stack(renders);  // uint8 [5, S, S, 3]
    record["renders"] = read(rendered, 1);
    record["vae_ceiling"] = read(world::through_model_vae(*bundle, rendered), 1);
    record["renders"]["images"] = record["vae_ceiling"]["images"] = wanted.size();
    if (!args->ceilings_only) {
      record["words"] =
          score(world::identity_words(face.face), world::kObjectColours[cup.cup_identity.colour] + " cup", "");
      const AppliedConcepts concepts = apply_concepts(
          *bundle, {parse_concept_request(args->face_concept), parse_concept_request(args->cup_concept)});
      record["concepts"] = score(concepts.triggers.at(0) + " face", concepts.triggers.at(1) + " cup", args->images);
    }
    record["gallery"] = args->gallery;
    for (const char* row : {"concepts", "words", "vae_ceiling", "renders"})
      if (record.contains(row))
        for (const char* figure : {"success", "both_recognised", "face_recognised", "cup_recognised", "edits_obeyed"})
          std::printf("%s_%s\t%.4f\n", row, figure, record[row][figure].get<double>());
    if (!args->json.empty()) write_file_atomic(args->json, record.dump(2) + "\n");
  });
}

}  // namespace

void add_eval_command(CLI::App& app) {
  CLI::App* eval = app.add_subcommand("eval", "Metrics: the paper's figures on real images (images), and the toy world's detector and what models draw");
  eval->require_subcommand(1);
  add_train_detector(*eval);
  add_adherence(*eval);
  add_concept(*eval);
  add_compose(*eval);
  add_eval_images_command(*eval);
  add_eval_edits_command(*eval);
  add_eval_judge_commands(*eval);
}

}  // namespace singleinsert::cli
