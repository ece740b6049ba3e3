// singleinsert eval train-clip / eval judge: a CLIP trained on the toy world, and the check of
// eval images' ESR judge (CLIP zero-shot on an editing list) where the truth is known: against
// the scenes' own attributes on renders, and against the world's detector on generations.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/interrupt.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/io/png.h"
#include "singleinsert/metrics/clip_model.h"
#include "singleinsert/metrics/concept_metrics.h"
#include "singleinsert/metrics/editing_prompts.h"
#include "singleinsert/world/clip_training.h"
#include "singleinsert/world/detector.h"
#include "singleinsert/world/render.h"
#include "singleinsert/world/scene.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {
namespace {

// Held-out scenes for judging renders: identities and seeds no training run draws.
constexpr uint64_t kJudgeScenes = uint64_t{13} << 50;

void add_train_clip(CLI::App& eval) {
  struct Args {
    std::string out, tokenizer, vae_model, precision = "bf16";
    world::ClipTrainingOptions options;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = eval.add_subcommand(
      "train-clip", "Train a CLIP (both towers) on the toy world's renders and captions; writes a transformers "
                    "CLIPModel folder, for eval images and eval judge (with --clip-tokenizer: the world's tokenizer)");
  command->add_option("--out", args->out, "Output folder")->required();
  command->add_option("--tokenizer", args->tokenizer, "The world model's tokenizer folder (world --write-tokenizer)")
      ->required();
  command->add_option("--steps", args->options.steps)->capture_default_str()->check(CLI::PositiveNumber);
  command->add_option("--batch-size", args->options.batch_size)->capture_default_str()->check(CLI::Range(2, 4096));
  command->add_option("--lr", args->options.lr)->capture_default_str();
  command->add_option("--seed", args->options.seed)->capture_default_str();
  command->add_option("--width", args->options.width, "Both towers' width (layers and heads below)")
      ->capture_default_str()
      ->check(CLI::Range(16, 1024));
  command->add_option("--layers", args->options.layers)->capture_default_str()->check(CLI::Range(1, 24));
  command->add_option("--vae", args->vae_model, "A world model folder whose VAE some batches pass through");
  command->add_option("--vae-share", args->options.vae_share)->capture_default_str()->check(CLI::Range(0.0, 1.0));
  command->add_option("--precision", args->precision, "fp32|bf16: the forward passes")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  command->add_option("--checkpoint-every", args->options.checkpoint_every,
                      "Steps between checkpoints in OUT.partial (and one on Ctrl-C); 0: only on Ctrl-C")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  command->add_flag("--resume", args->options.resume,
                    "Continue the interrupted run in OUT.partial (same flags) to the weights of an uninterrupted one");
  command->callback([args] {
    args->options.bf16 = args->precision == "bf16";
    if (args->options.width % args->options.heads != 0) throw Error("train-clip: --width must be a multiple of 4");
    const ClipTokenizer tokenizer = ClipTokenizer::load(args->tokenizer);
    if (fs::exists(args->out)) throw Error(args->out + ": already exists");
    // The run is built in OUT.partial (its checkpoint there meanwhile) and renamed when complete.
    const fs::path partial = fs::path(args->out).lexically_normal().string() + ".partial";
    args->options.checkpoint = (partial / "checkpoint.safetensors").string();
    const nlohmann::json settings = {{"steps", args->options.steps},   {"batch_size", args->options.batch_size},
                                     {"lr", args->options.lr},         {"seed", args->options.seed},
                                     {"width", args->options.width},   {"layers", args->options.layers},
                                     {"vae", args->vae_model},         {"vae_share", args->options.vae_share},
                                     {"precision", args->precision}};
    if (args->options.resume) {
      if (!fs::exists(args->options.checkpoint))
        throw Error(partial.string() + ": no checkpoint to resume (run without --resume)");
      const nlohmann::json saved = nlohmann::json::parse(read_file((partial / "settings.json").string()));
      if (saved != settings)
        throw Error(partial.string() + ": that run had other settings (" + saved.dump() + "); resume it with them");
    } else {
      if (fs::exists(partial))
        throw Error(partial.string() + ": an interrupted run is there; --resume continues it, or remove it");
      fs::create_directories(partial);
      write_file_atomic((partial / "settings.json").string(), settings.dump(2) + "\n");
    }
    install_interrupt_handler();
    AutoencoderKL vae{nullptr};
    if (!args->vae_model.empty()) vae = load_model_vae(args->vae_model);
    ProgressLine progress;
    const auto start = std::chrono::steady_clock::now();
    double last_loss = 0;
    ClipModel clip = world::train_world_clip(
        args->options, tokenizer,
        [&](const ProgressReport& report) {
          last_loss = report.values.at("loss");
          progress(report);
        },
        vae ? &vae : nullptr);
    progress.finish();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    clip.save(partial.string());
    nlohmann::json record = settings;
    record["final_loss"] = last_loss;
    record["seconds"] = seconds;  // of this run (after a --resume: of its part)
    write_file_atomic((partial / "train_clip.json").string(), record.dump(2) + "\n");
    fs::remove(args->options.checkpoint);
    fs::remove(partial / "settings.json");
    fs::rename(partial, args->out);
    std::printf("final_loss\t%.4f\nseconds\t%.1f\n", last_loss, seconds);
  });
}

// Agreement counts of two yes/no readers.
struct Agreement {
  int both_yes = 0, both_no = 0, only_first = 0, only_second = 0;
  void add(bool first, bool second) {
    both_yes += first && second;
    both_no += !first && !second;
    only_first += first && !second;
    only_second += !first && second;
  }
  Agreement& operator+=(const Agreement& o) {
    both_yes += o.both_yes, both_no += o.both_no, only_first += o.only_first, only_second += o.only_second;
    return *this;
  }
  int total() const { return both_yes + both_no + only_first + only_second; }
  double share() const { return total() ? static_cast<double>(both_yes + both_no) / total() : 0.0; }
  // Cohen's kappa: agreement beyond what two readers with these yes-rates reach by chance
  // (generations mostly obey their edits, so raw agreement flatters a judge that says yes).
  double kappa() const {
    if (total() == 0) return 0.0;
    const double n = total(), first = (both_yes + only_first) / n, second = (both_yes + only_second) / n;
    const double chance = first * second + (1 - first) * (1 - second);
    return chance < 1 ? (share() - chance) / (1 - chance) : 1.0;
  }
  nlohmann::json json() const {
    return {{"agreement", share()}, {"kappa", kappa()},        {"n", total()},
            {"both_yes", both_yes}, {"both_no", both_no},      {"only_judge", only_first},
            {"only_reference", only_second}};
  }
};

void add_judge(CLI::App& eval) {
  struct Args {
    std::string clip, clip_tokenizer, detector, images, edits, trigger = "*", json;
    int renders = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = eval.add_subcommand(
      "judge", "Check eval images' ESR judge in the toy world: its verdicts against the scenes' truth on renders "
               "and against the world's detector on generations");
  command->add_option("--clip", args->clip, "A CLIPModel folder that knows the world (eval train-clip)")->required();
  command->add_option("--clip-tokenizer", args->clip_tokenizer, "CLIP's tokenizer folder (default: the --clip folder)");
  command->add_option("--detector", args->detector, "Detector weights from eval train-detector")->required();
  command->add_option("--edits", args->edits, "The world's editing list (assets/editing_prompts/world.json)")
      ->required();
  command->add_option("--images", args->images, "Generations from the list's prompts (their prompts recorded)");
  command->add_option("--trigger", args->trigger, "The trigger word the generations' prompts use")
      ->capture_default_str();
  command->add_option("--renders", args->renders, "Held-out renders per edit, half showing it, half not")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  command->add_option("--json", args->json, "Also write the figures to this file");
  command->callback([args] {
    const EditingPromptList list = EditingPromptList::load(args->edits);
    std::map<std::string, std::pair<std::string, std::string>> texts;  // edit -> (present, absent)
    for (const EditingPrompt& prompt : list.prompts)
      for (const EditCheck& edit : prompt.edits) {
        world::Scene probe;
        world::apply_edit(probe, edit.name);  // every edit must be one the world knows
        texts[edit.name] = {edit.present, edit.absent};
      }
    ClipModel clip = ClipModel::load(args->clip);
    const ClipTokenizer tokenizer = load_clip_tokenizer(args->clip, args->clip_tokenizer);
    world::WorldDetector detector = world::load_detector(args->detector);
    at::NoGradGuard no_grad;
    // eval images' judge itself: P(present) for each image of `pixels` (uint8 [N, H, W, 3]).
    EditJudge edit_judge(clip, tokenizer);
    auto probability = [&](const at::Tensor& features, const std::string& edit) {
      return edit_judge.probability(features, {edit, texts.at(edit).first, texts.at(edit).second});
    };
    auto features_of = [&](const at::Tensor& pixels) {
      return edit_judge.image_features(std::vector<at::Tensor>(pixels.unbind(0)));
    };
    nlohmann::json record = {{"clip", args->clip}, {"detector", args->detector}, {"edits", args->edits}};

    if (args->renders > 0) {  // the truth: each scene's own attributes
      Agreement judge_total, detector_total;
      nlohmann::json per_edit;
      uint64_t scene_index = 0;
      for (const auto& [edit, unused] : texts) {
        Agreement judge_edit, detector_edit;
        std::vector<at::Tensor> images;
        std::vector<bool> truth;
        for (int k = 0; k < args->renders; ++k, ++scene_index) {
          const uint64_t seed = kJudgeScenes + scene_index;
          world::Scene scene = world::source_scene(world::sample_identity(world::kHeldOutIdentitySeed + seed),
                                                   static_cast<int>(seed % world::kBackgroundColours.size()));
          if (k % 2 == 0) world::apply_edit(scene, edit);
          truth.push_back(world::edit_shown(world::attribute_map(scene), edit));
          images.push_back(world::render(scene, static_cast<int>(clip.vision_config().image_size)).image);
        }
        const at::Tensor pixels = at::stack(images);
        const at::Tensor p = probability(features_of(pixels), edit);
        const std::vector<world::Detection> found = world::detect(detector, pixels);
        for (size_t i = 0; i < truth.size(); ++i) {
          const bool judged = p[static_cast<int64_t>(i)].item<double>() > 0.5;
          const bool detected = world::edit_shown(found[i].attributes, edit);
          judge_edit.add(judged, truth[i]);
          detector_edit.add(detected, truth[i]);
        }
        judge_total += judge_edit;
        detector_total += detector_edit;
        per_edit[edit] = {{"judge_vs_truth", judge_edit.json()}, {"detector_vs_truth", detector_edit.json()}};
        std::printf("renders\t%s\tjudge %.3f\tdetector %.3f\t(n=%d)\n", edit.c_str(), judge_edit.share(),
                    detector_edit.share(), judge_edit.total());
      }
      record["renders"] = {{"per_edit", per_edit},
                           {"judge_vs_truth", judge_total.json()},
                           {"detector_vs_truth", detector_total.json()}};
      std::printf("renders_judge_accuracy\t%.4f\nrenders_judge_kappa\t%.4f\nrenders_detector_accuracy\t%.4f\n",
                  judge_total.share(), judge_total.kappa(), detector_total.share());
    }

    if (!args->images.empty()) {  // generations: the detector as the reference
      Agreement per_check, per_image;
      std::map<std::string, Agreement> per_edit;
      int images = 0;
      for (const fs::path& file : generation_files(args->images)) {
        const EditingPrompt* prompt = list.find(recorded_prompt(file), args->trigger);
        if (!prompt) continue;
        const at::Tensor pixels = read_image_rgb(file.string()).pixels.unsqueeze(0);
        const world::Detection detection = world::detect(detector, pixels).at(0);
        const at::Tensor features = features_of(pixels);
        bool judge_all = true, detector_all = true;
        for (const EditCheck& edit : prompt->edits) {
          const bool judged = probability(features, edit.name)[0].item<double>() > 0.5;
          const bool detected = world::edit_shown(detection.attributes, edit.name);
          per_check.add(judged, detected);
          per_edit[edit.name].add(judged, detected);
          judge_all = judge_all && judged;
          detector_all = detector_all && detected;
        }
        per_image.add(judge_all, detector_all);
        ++images;
      }
      if (images == 0) throw Error(args->images + ": no generation from a prompt of the list");
      nlohmann::json edits;
      for (const auto& [edit, agreement] : per_edit) {
        edits[edit] = agreement.json();
        std::printf("generations\t%s\tagreement %.3f\t(n=%d)\n", edit.c_str(), agreement.share(), agreement.total());
      }
      const double judge_esr = static_cast<double>(per_image.both_yes + per_image.only_first) / per_image.total();
      const double detector_esr = static_cast<double>(per_image.both_yes + per_image.only_second) / per_image.total();
      record["generations"] = {{"images", images},          {"per_edit", edits},
                               {"per_check", per_check.json()}, {"per_image", per_image.json()},
                               {"judge_esr", judge_esr},    {"detector_esr", detector_esr}};
      std::printf("generations_check_agreement\t%.4f\ngenerations_check_kappa\t%.4f\n"
                  "generations_image_agreement\t%.4f\ngenerations_image_kappa\t%.4f\njudge_esr\t%.4f\n"
                  "detector_esr\t%.4f\n",
                  per_check.share(), per_check.kappa(), per_image.share(), per_image.kappa(), judge_esr, detector_esr);
    }
    if (args->renders == 0 && args->images.empty()) throw Error("judge: give --renders N, --images DIR or both");
    if (!args->json.empty()) write_file_atomic(args->json, record.dump(2) + "\n");
  });
}

}  // namespace

void add_eval_judge_commands(CLI::App& eval) {
  add_train_clip(eval);
  add_judge(eval);
}

}  // namespace singleinsert::cli
