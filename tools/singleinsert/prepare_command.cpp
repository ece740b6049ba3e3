// singleinsert prepare: a folder of photos -> square crops with foreground masks, ready for
// invert (one concept per photo) or a batch over them.
#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <optional>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/prepare/face_detection.h"
#include "singleinsert/prepare/prepare_folder.h"

namespace singleinsert::cli {

void add_prepare_command(CLI::App& app) {
  struct Args {
    std::string images, masks, out, cascade;
    PrepareOptions options;
    bool overwrite = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = app.add_subcommand(
      "prepare", "Crop every photo of a folder to the largest square around its subject, resize it and write a "
                 "foreground mask (automatic for faces); prepare.json says what happened to each file");
  command->add_option("--images", args->images, "Folder of photos")->required();
  command->add_option("--out", args->out, "Folder to write NAME.png, NAME_mask.png and prepare.json into")->required();
  command->add_option("--class", args->options.class_word,
                      "What the photos show: face (detected, masked automatically unless --masks has a mask) or "
                      "any other word (a mask per photo required)")
      ->capture_default_str();
  command->add_option("--masks", args->masks, "Folder of masks named as the photos (any image extension)");
  command->add_option("--size", args->options.size, "Side of the square crops in pixels")
      ->capture_default_str()
      ->check(CLI::Range(16, 4096));
  command->add_option("--min-face", args->options.min_face, "Skip faces narrower than this (photo pixels)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command->add_option("--cascade", args->cascade,
                      "OpenCV face cascade (default: haarcascade_frontalface_alt2.xml from opencv-data)");
  command->add_flag("--overwrite", args->overwrite, "Write into a folder that already has files");
  command->callback([args] {
    if (args->options.class_word != "face" && args->masks.empty())
      throw Error(fmt::format("prepare: --class {} needs --masks DIR (automatic masks are made for faces only)",
                              args->options.class_word));
    std::optional<FaceDetector> detector;
    if (args->options.class_word == "face") detector.emplace(find_face_cascade(args->cascade));
    OutputDirectory out(args->out, args->overwrite);
    int64_t skipped = 0;
    const auto inputs = prepare_folder(
        args->images, args->masks, args->out, args->options, detector ? &*detector : nullptr,
        [&](const PreparedInput& input) {
          // stdout: one tab-separated line per input (parseable); stderr: the skips, as warnings.
          if (input.status == "prepared") {
            std::printf("%s\tprepared\t%s\t%s mask\n", input.input.c_str(), input.image.c_str(),
                        input.mask_source.c_str());
          } else {
            ++skipped;
            std::printf("%s\tskipped\t%s\n", input.input.c_str(), input.reason.c_str());
            std::fprintf(stderr, "warning: %s: skipped: %s\n", input.input.c_str(), input.reason.c_str());
          }
          std::fflush(stdout);
        });
    out.commit();
    std::fprintf(stderr, "prepared %lld of %zu files into %s (prepare.json)\n",
                 static_cast<long long>(static_cast<int64_t>(inputs.size()) - skipped), inputs.size(),
                 args->out.c_str());
  });
}

}  // namespace singleinsert::cli
