// singleinsert world: render scenes of the procedural world (image, mask, caption, ground truth).
// singleinsert train-base: train a small model from scratch on that world.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/interrupt.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/pipeline/default_model.h"
#include "singleinsert/training/base_training.h"
#include "singleinsert/io/png.h"
#include "singleinsert/world/render.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {
namespace {

struct WorldArgs {
  std::string out, tokenizer, subject = "face";
  uint64_t seed = 0;
  int count = 1, size = 256;
  int64_t identity = -1;
  bool held_out = false, source = false, full_mask = false, overwrite = false, list_names = false;
  std::vector<std::string> edits;
};

// Sample i: a random scene, or (with --source / --with) the source photo of an identity with the
// edits applied. --identity fixes the identity (a face's, or with --subject cup a cup's) for every
// sample.
world::Scene scene_for(const WorldArgs& args, int i) {
  const uint64_t seed = args.seed + static_cast<uint64_t>(i);
  const uint64_t offset = args.held_out ? world::kHeldOutIdentitySeed : 0;
  const uint64_t identity_seed = offset + (args.identity >= 0 ? static_cast<uint64_t>(args.identity) : seed);
  const bool cup = args.subject == "cup";
  const int background = static_cast<int>(identity_seed % world::kBackgroundColours.size());
  world::Scene scene;
  if (args.source || !args.edits.empty()) {
    scene = cup ? world::cup_source_scene(world::sample_cup_identity(identity_seed), background)
                : world::source_scene(world::sample_identity(identity_seed), background);
    for (const auto& edit : args.edits) world::apply_edit(scene, edit);
  } else {
    scene = world::sample_scene(seed);
    if (args.identity >= 0 || args.held_out) {
      scene.subject = cup ? world::Subject::kCup : world::Subject::kFace;
      scene.person = -1;
      if (cup) scene.cup_identity = world::sample_cup_identity(identity_seed);
      else scene.face = world::sample_identity(identity_seed);
    }
  }
  return scene;
}

}  // namespace

void add_world_command(CLI::App& app) {
  auto args = std::make_shared<WorldArgs>();
  CLI::App* command = app.add_subcommand(
      "world", "Render scenes of the procedural world: image, subject mask, caption and ground-truth attributes");
  command->add_option("--out", args->out, "Output folder");
  command->add_option("--write-tokenizer", args->tokenizer,
                      "Instead of rendering, write the world's vocabulary as a CLIP tokenizer folder here");
  command->add_option("--seed", args->seed, "Seed of the first scene (then seed+1, ...)")->capture_default_str();
  command->add_option("--count", args->count, "How many scenes")->capture_default_str()->check(CLI::PositiveNumber);
  command->add_option("--size", args->size, "Image size in pixels")->capture_default_str()->check(CLI::Range(32, 4096));
  command->add_option("--identity", args->identity, "Keep this identity seed in every scene");
  command->add_option("--subject", args->subject, "face|cup: what --source and --identity draw")
      ->capture_default_str()
      ->check(CLI::IsMember({"face", "cup"}));
  command->add_flag("--held-out", args->held_out, "Draw identities from the held-out range (never in training scenes)");
  command->add_flag("--source", args->source,
                    "Render source photos: the subject alone, centred, frontal, neutral, no accessories, plain background");
  command->add_option("--with", args->edits, "Edit applied to the source photo (repeatable): " +
                                                  fmt::format("{}", fmt::join(world::edit_names(), ", ")));
  command->add_flag("--full-mask", args->full_mask,
                    "Write masks that cover the whole image (for full-image-loss baselines)");
  command->add_flag("--overwrite", args->overwrite, "Write into a folder that already has files");
  command->add_flag("--list-names", args->list_names, "Print the named persons of the training scenes, one per line");
  command->callback([args] {
    if (!args->tokenizer.empty()) {  // the tokenizer train-base gives world models
      write_small_clip_tokenizer(args->tokenizer, world::vocabulary_words());
      return;
    }
    if (args->list_names) {  // the world's celebrities: what Cross Initialization starts from
      for (const auto& name : world::person_names()) std::printf("%s\n", name.c_str());
      return;
    }
    if (args->out.empty()) throw Error("world: --out is required");
    world::Scene probe;  // unknown edits fail before anything is written
    for (const auto& edit : args->edits) world::apply_edit(probe, edit);
    OutputDirectory out(args->out, args->overwrite);
    std::string index;
    for (int i = 0; i < args->count; ++i) {
      const world::WorldSample sample = world::render(scene_for(*args, i), args->size);
      const std::string stem = fmt::format("sample_{:04}", i);
      const fs::path base = fs::path(args->out) / stem;
      write_png(base.string() + ".png", sample.image, {{"caption", sample.caption}});
      write_png(base.string() + "_mask.png", args->full_mask ? at::full_like(sample.mask, 255) : sample.mask);
      write_file_atomic(base.string() + ".txt", sample.caption + "\n");
      index += nlohmann::json{{"image", stem + ".png"},
                              {"mask", stem + "_mask.png"},
                              {"caption", sample.caption},
                              {"attributes", sample.attributes}}
                   .dump() +
               "\n";
      std::printf("%s.png\t%s_mask.png\t%s\n", base.c_str(), base.c_str(), sample.caption.c_str());
    }
    write_file_atomic((fs::path(args->out) / "samples.jsonl").string(), index);
    out.commit();
  });
}

void add_train_base_command(CLI::App& app) {
  struct Args {
    std::string config, out, device = "auto", save_dtype = "fp16", snapshot, init, init_vae;
    std::optional<int> vae_steps, steps, batch_size, checkpoint_every;
    std::optional<uint64_t> seed;
    bool resume = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = app.add_subcommand(
      "train-base", "Train a small SD-architecture model from scratch on the procedural world (VAE, then text "
                    "encoder and UNet) and write it as a diffusers folder");
  command->add_option("--config", args->config, "Training config (e.g. configs/base/world.json)")->required();
  command->add_option("--out", args->out, "Model folder to create")->required();
  command->add_option("--vae-steps", args->vae_steps, "Override the VAE phase's steps");
  command->add_option("--steps", args->steps, "Override the diffusion phase's steps");
  command->add_option("--batch-size", args->batch_size, "Override the diffusion phase's batch size");
  command->add_option("--seed", args->seed, "Override the seed");
  command->add_option("--checkpoint-every", args->checkpoint_every,
                      "Steps between checkpoints (OUT.checkpoint.safetensors; also written on Ctrl-C)");
  command->add_flag("--resume", args->resume, "Continue the interrupted run whose checkpoint is beside --out");
  command->add_option("--init", args->init,
                      "Start from this model folder (same architecture): its VAE as it is, its text encoder and UNet "
                      "trained on by the diffusion phase")
      ->check(CLI::ExistingDirectory);
  command->add_option("--init-vae", args->init_vae,
                      "Take only this model folder's VAE and latent scaling factor; the text encoder and UNet start "
                      "fresh (the VAE phase is skipped)")
      ->check(CLI::ExistingDirectory)
      ->excludes("--init");
  command->add_option("--snapshot", args->snapshot,
                      "Instead of training, write the checkpoint beside --out as a model folder here (the run may "
                      "still be going)");
  command->add_option("--device", args->device, "auto|cpu|cuda")->capture_default_str();
  command->add_option("--save-dtype", args->save_dtype, "Weights dtype on disk: fp16|fp32")->capture_default_str();
  command->callback([args] {
    BaseTrainingConfig config = BaseTrainingConfig::from_json(JsonConfig::load(args->config));
    if (args->vae_steps) config.vae.steps = *args->vae_steps;
    if (args->steps) config.diffusion.steps = *args->steps;
    if (args->batch_size) config.diffusion.batch_size = *args->batch_size;
    if (args->seed) config.seed = *args->seed;
    if (args->checkpoint_every) config.checkpoint_every = *args->checkpoint_every;
    config.init_model = args->init_vae.empty() ? args->init : args->init_vae;
    config.init_vae_only = !args->init_vae.empty();
    config.validate();
    if (args->save_dtype != "fp16" && args->save_dtype != "fp32")
      throw Error("--save-dtype must be fp16 or fp32, not '" + args->save_dtype + "'");
    if (!args->snapshot.empty()) {
      export_base_snapshot(config, world::vocabulary_words(), args->out, args->snapshot,
                           args->save_dtype == "fp16" ? at::kHalf : at::kFloat);
      std::printf("%s\n", args->snapshot.c_str());
      return;
    }
    if (fs::exists(args->out) && !fs::is_empty(args->out)) throw Error(args->out + ": already exists");
    if (args->resume) std::fprintf(stderr, "resuming from %s\n", base_checkpoint_path(args->out).c_str());
    const ExecutionOptions execution = make_execution_options(args->device, "fp32");
    const int resolution = config.resolution;
    // Example i of the stream is world scene i, rendered at the training resolution, with a
    // caption that leaves out some of what the full caption says, and where its small details are
    // when the phase weights them.
    const CaptionedSource source = [resolution](uint64_t first, int count, bool with_details) {
      CaptionedBatch batch;
      std::vector<at::Tensor> images, details;
      for (int i = 0; i < count; ++i) {
        const uint64_t index = first + static_cast<uint64_t>(i);
        const world::Scene scene = world::sample_scene(index);
        const world::WorldSample sample = world::render(scene, resolution);
        images.push_back(sample.image.permute({2, 0, 1}).to(at::kFloat) / 127.5 - 1.0);
        if (with_details) details.push_back(world::detail_regions(scene, sample.image).unsqueeze(0));
        batch.captions.push_back(world::caption(scene, world::training_caption_parts(scene, index)));
      }
      batch.images = at::stack(images);
      if (with_details) batch.detail = at::stack(details);
      return batch;
    };
    install_interrupt_handler();
    ProgressLine progress;
    // Piped, a run of hours still reports: a plain line at every 5% of each phase.
    const ProgressCallback report = [&progress](const ProgressReport& r) {
      progress(r);
      if (!progress.interactive() && r.step % std::max<int64_t>(1, r.total / 20) == 0)
        std::fprintf(stderr, "%s step %lld/%lld loss %.5f elapsed %.1f s\n", r.stage.c_str(),
                     static_cast<long long>(r.step), static_cast<long long>(r.total), r.values.at("loss"),
                     r.elapsed_seconds);
    };
    const BaseTrainingSummary summary =
        train_base_model(config, world::vocabulary_words(), source, args->out, execution,
                         args->save_dtype == "fp16" ? at::kHalf : at::kFloat, report, args->resume);
    progress.finish();
    std::printf("%s\n", args->out.c_str());
    // A phase with no steps (the VAE under --init, the diffusion phase of a VAE-only run) is named
    // as skipped rather than given a loss of zero.
    const auto phase_line = [](const char* name, bool ran, double first, double last, double seconds) {
      return ran ? fmt::format("{}: loss {:.5f} -> {:.5f} in {}", name, first, last, format_duration(seconds))
                 : fmt::format("{}: skipped", name);
    };
    const bool vae_ran = config.init_model.empty() && config.vae.steps > 0;
    std::fprintf(stderr, "%s; %s; latent scaling factor %.5f\n",
                 phase_line("vae", vae_ran, summary.vae_loss_first, summary.vae_loss_last, summary.vae_seconds).c_str(),
                 phase_line("diffusion", config.diffusion.steps > 0, summary.diffusion_loss_first,
                            summary.diffusion_loss_last, summary.diffusion_seconds)
                     .c_str(),
                 summary.scaling_factor);
  });
}

}  // namespace singleinsert::cli
