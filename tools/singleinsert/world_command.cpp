// singleinsert world: render scenes of the procedural world (image, mask, caption, ground truth).
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/io/png.h"
#include "singleinsert/world/render.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {
namespace {

struct WorldArgs {
  std::string out;
  uint64_t seed = 0;
  int count = 1, size = 256;
  int64_t identity = -1;
  bool held_out = false, source = false, overwrite = false;
  std::vector<std::string> edits;
};

// Sample i: a random scene, or (with --source / --with) the source photo of an identity with the
// edits applied. --identity fixes the identity for every sample.
world::Scene scene_for(const WorldArgs& args, int i) {
  const uint64_t seed = args.seed + static_cast<uint64_t>(i);
  const uint64_t offset = args.held_out ? world::kHeldOutIdentitySeed : 0;
  const uint64_t identity_seed = offset + (args.identity >= 0 ? static_cast<uint64_t>(args.identity) : seed);
  world::Scene scene;
  if (args.source || !args.edits.empty()) {
    scene = world::source_scene(world::sample_identity(identity_seed),
                                static_cast<int>(identity_seed % world::kBackgroundColours.size()));
    for (const auto& edit : args.edits) world::apply_edit(scene, edit);
  } else {
    scene = world::sample_scene(seed);
    if (args.identity >= 0 || args.held_out) {
      scene.subject = world::Subject::kFace;
      scene.face = world::sample_identity(identity_seed);
    }
  }
  return scene;
}

}  // namespace

void add_world_command(CLI::App& app) {
  auto args = std::make_shared<WorldArgs>();
  CLI::App* command = app.add_subcommand(
      "world", "Render scenes of the procedural world: image, subject mask, caption and ground-truth attributes");
  command->add_option("--out", args->out, "Output folder")->required();
  command->add_option("--seed", args->seed, "Seed of the first scene (then seed+1, ...)")->capture_default_str();
  command->add_option("--count", args->count, "How many scenes")->capture_default_str()->check(CLI::PositiveNumber);
  command->add_option("--size", args->size, "Image size in pixels")->capture_default_str()->check(CLI::Range(64, 4096));
  command->add_option("--identity", args->identity, "Keep this identity seed in every scene");
  command->add_flag("--held-out", args->held_out, "Draw identities from the held-out range (never in training scenes)");
  command->add_flag("--source", args->source,
                    "Render source photos: the face alone, centred, neutral, no accessories, plain background");
  command->add_option("--with", args->edits, "Edit applied to the source photo (repeatable): " +
                                                  fmt::format("{}", fmt::join(world::edit_names(), ", ")));
  command->add_flag("--overwrite", args->overwrite, "Write into a folder that already has files");
  command->callback([args] {
    world::Scene probe;  // unknown edits fail before anything is written
    for (const auto& edit : args->edits) world::apply_edit(probe, edit);
    OutputDirectory out(args->out, args->overwrite);
    std::string index;
    for (int i = 0; i < args->count; ++i) {
      const world::WorldSample sample = world::render(scene_for(*args, i), args->size);
      const std::string stem = fmt::format("sample_{:04}", i);
      const fs::path base = fs::path(args->out) / stem;
      write_png(base.string() + ".png", sample.image, {{"caption", sample.caption}});
      write_png(base.string() + "_mask.png", sample.mask);
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

}  // namespace singleinsert::cli
