// singleinsert eval edits: Prompt Tuning Inversion's real-image edits of held-out world faces,
// scored by the world's detector: whether the edit shows, how much of the face's identity is
// kept, and how much the pixels the edit should not touch changed.
#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/io/png.h"
#include "singleinsert/pipeline/device.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_tuning_inversion.h"
#include "singleinsert/pipeline/text_to_image.h"
#include "singleinsert/training/image_preprocess.h"
#include "singleinsert/world/detector.h"
#include "singleinsert/world/evaluation.h"
#include "singleinsert/world/render.h"

namespace singleinsert::cli {
namespace {

struct EditsArgs {
  ModelFlags model;
  EditOptions options;
  std::string detector, json, images, device = "auto";
  int identities = 5, first = 100;
  std::vector<double> etas = {0.6, 0.8, 1.0};
};

double mean_of(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0 : sum / static_cast<double>(v.size());
}

double standard_error(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean_of(v);
  double sum = 0;
  for (double x : v) sum += (x - m) * (x - m);
  return std::sqrt(sum / static_cast<double>(v.size() - 1) / static_cast<double>(v.size()));
}

// Mean |a - b| / 255 over the pixels where `keep` is set: uint8 [H, W, 3] images, keep [H, W] bool.
double kept_pixels_error(const at::Tensor& a, const at::Tensor& b, const at::Tensor& keep) {
  const at::Tensor diff = (a.to(at::kFloat) - b.to(at::kFloat)).abs().mean(-1) / 255.0;
  return keep.any().item<bool>() ? diff.masked_select(keep).mean().item<double>() : 0.0;
}

void run_eval_edits(const EditsArgs& args) {
  const ExecutionOptions execution = make_execution_options(args.device, "fp32");
  for (double eta : args.etas)
    if (!(eta >= 0 && eta <= 1)) throw Error(fmt::format("--eta values must be between 0 and 1, got {}", eta));
  if (args.identities < 1) throw Error("--identities must be at least 1");
  world::WorldDetector detector = world::load_detector(args.detector);
  auto bundle = load_model_bundle(args.model.model, execution, args.model.sources);
  const int size = native_image_size(args.model);
  nlohmann::json rows = nlohmann::json::array();
  // (edit, eta) -> values over identities
  std::map<std::pair<std::string, double>, std::map<std::string, std::vector<double>>> table;
  ProgressLine progress;
  for (int i = 0; i < args.identities; ++i) {
    const int id = args.first + i;
    const uint64_t seed = world::kHeldOutIdentitySeed + static_cast<uint64_t>(id);
    const world::Scene source =
        world::source_scene(world::sample_identity(seed), static_cast<int>(seed % world::kBackgroundColours.size()));
    const at::Tensor image = world::render(source, size).image;  // uint8 [S, S, 3]
    const TunedInversion tuned = tune_inversion(*bundle, to_signed_unit_tensor(image), args.options, std::ref(progress));
    world::SourceReference reference(detector, source);
    const std::vector<world::EditList> all = world::editing_edits(source);
    const std::vector<world::EditList> edits = {all[0], all[1], all[4]};  // sunglasses, hat, another background
    const at::Tensor reconstruction = to_uint8_pixels(tuned.result.reconstruction)[0];
    for (const auto& edit : edits) {
      const std::string name = edit.front().find("background") != std::string::npos ? "background colour" : edit.front();
      const std::string prompt = world::editing_prompt(source, edit, "face");
      // What the edit may change: the pixels where the truth's edited render differs from the source's.
      const at::Tensor truth = world::render(world::edited_scene(source, edit), size).image;
      const at::Tensor keep = (truth.to(at::kShort) - image.to(at::kShort)).abs().amax(-1) == 0;
      for (double eta : args.etas) {
        const at::Tensor edited = to_uint8_pixels(edit_tuned(*bundle, tuned, prompt, eta, args.options))[0];
        const world::ScoredRows scored = reference.score({edit}, edited.unsqueeze(0));
        const double outside = kept_pixels_error(edited, image, keep);
        auto& cell = table[{name, eta}];
        cell["success"].push_back(scored.success);
        cell["closeness"].push_back(scored.closeness.whole);
        cell["closeness_hidden"].push_back(scored.closeness.hidden);
        cell["outside_mae"].push_back(outside);
        rows.push_back({{"identity", id}, {"edit", name}, {"prompt", prompt}, {"eta", eta}, {"success", scored.success},
                        {"closeness", world::to_json(scored.closeness)}, {"outside_mae", outside}});
        if (!args.images.empty())
          write_png(fmt::format("{}/identity-{}_{}_eta{:.2f}.png", args.images, id, edit.front(), eta), edited);
      }
    }
    // The reconstruction (no edit): its identity and its error outside any edit.
    const world::ScoredRows kept = reference.score({{}}, reconstruction.unsqueeze(0));
    auto& cell = table[{"reconstruction", 0.0}];
    cell["closeness"].push_back(kept.closeness.whole);
    cell["closeness_hidden"].push_back(kept.closeness.hidden);
    cell["outside_mae"].push_back(kept_pixels_error(reconstruction, image, at::ones({size, size}, at::kBool)));
    cell["success"].push_back(kept.success);
    if (!args.images.empty()) {
      write_png(fmt::format("{}/identity-{}_source.png", args.images, id), image);
      write_png(fmt::format("{}/identity-{}_reconstruction.png", args.images, id), reconstruction);
    }
  }
  progress.finish();
  nlohmann::json summary = nlohmann::json::array();
  std::printf("edit\teta\tsuccess\tcloseness\tcloseness_hidden\toutside_mae\n");
  for (const auto& [key, cell] : table) {
    nlohmann::json entry = {{"edit", key.first}, {"eta", key.second}, {"identities", cell.at("success").size()}};
    std::printf("%s\t%.2f", key.first.c_str(), key.second);
    for (const char* field : {"success", "closeness", "closeness_hidden", "outside_mae"}) {
      entry[field] = {{"mean", mean_of(cell.at(field))}, {"se", standard_error(cell.at(field))}};
      std::printf("\t%.3f±%.3f", mean_of(cell.at(field)), standard_error(cell.at(field)));
    }
    std::printf("\n");
    summary.push_back(entry);
  }
  if (!args.json.empty()) {
    const auto& o = args.options;
    const nlohmann::json record = {{"model", args.model.model}, {"identities", args.identities}, {"first", args.first},
                                   {"steps", o.steps}, {"guidance", o.guidance_scale}, {"inner_steps", o.inner_steps},
                                   {"lr", o.learning_rate}, {"etas", args.etas}, {"summary", summary}, {"rows", rows}};
    write_file_atomic(args.json, record.dump(2) + "\n");
  }
}

}  // namespace

void add_eval_edits_command(CLI::App& eval) {
  auto args = std::make_shared<EditsArgs>();
  args->options.steps = 25;
  CLI::App* command = eval.add_subcommand(
      "edits",
      "Prompt Tuning Inversion on held-out world faces: edit success, identity kept and pixels changed outside the edit");
  add_model_flags(command, args->model);
  command->add_option("--detector", args->detector, "Detector weights from eval train-detector")->required();
  command->add_option("--identities", args->identities, "Held-out identities")->capture_default_str();
  command->add_option("--first", args->first, "The first held-out identity")->capture_default_str();
  command->add_option("--eta", args->etas, "Interpolation weights to measure")->capture_default_str();
  command->add_option("--steps", args->options.steps, "DDIM steps")->capture_default_str();
  command->add_option("--guidance", args->options.guidance_scale, "Classifier-free guidance")->capture_default_str();
  command->add_option("--inner-steps", args->options.inner_steps, "Adam iterations per step")->capture_default_str();
  command->add_option("--images", args->images, "Also write every edit to this (existing) folder");
  command->add_option("--json", args->json, "Also write the figures to this file");
  command->add_option("--device", args->device, "auto|cpu|cuda")->capture_default_str();
  command->callback([args] { run_eval_edits(*args); });
}

}  // namespace singleinsert::cli
