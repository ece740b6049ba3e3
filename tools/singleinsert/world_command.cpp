// singleinsert world: render subjects of the procedural world (an image, its mask, a caption).
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/files.h"
#include "singleinsert/io/png.h"
#include "singleinsert/io/world.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {

void add_world_command(CLI::App& app) {
  struct Args {
    std::string out;
    uint64_t seed = 0;
    int count = 1, size = 256;
    bool overwrite = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = app.add_subcommand("world", "Render faces of the procedural world: image, mask and caption");
  command->add_option("--out", args->out, "Output folder")->required();
  command->add_option("--seed", args->seed, "Seed of the first face")->capture_default_str();
  command->add_option("--count", args->count, "How many faces (seeds seed, seed+1, ...)")->capture_default_str();
  command->add_option("--size", args->size, "Image size in pixels")->capture_default_str();
  command->add_flag("--overwrite", args->overwrite, "Write into a folder that already has files");
  command->callback([args] {
    OutputDirectory out(args->out, args->overwrite);
    for (int i = 0; i < args->count; ++i) {
      const WorldSample sample = render_face(args->seed + static_cast<uint64_t>(i), args->size);
      const std::string stem = (fs::path(args->out) / fmt::format("face_{:04}", i)).string();
      write_png(stem + ".png", sample.image, {{"caption", sample.caption}});
      write_png(stem + "_mask.png", sample.mask);
      write_file_atomic(stem + ".txt", sample.caption + "\n");
      std::printf("%s.png\t%s_mask.png\t%s\n", stem.c_str(), stem.c_str(), sample.caption.c_str());
    }
    out.commit();
  });
}

}  // namespace singleinsert::cli
