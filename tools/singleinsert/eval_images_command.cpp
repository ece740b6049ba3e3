// singleinsert eval images: the paper's seven figures (CLIP-I-f/b, DINO-f/b, CLIP-T, DIV, ESR) for
// a folder of generations against a concept's source, with metric models read from the files the
// user has (metrics/concept_metrics.h says what each figure is and how regions are made).
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/metrics/concept_metrics.h"
#include "singleinsert/prepare/face_detection.h"
#include "singleinsert/training/concept.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {
namespace {

at::Tensor read_mask(const fs::path& path) {  // uint8 [H, W]
  return read_image_rgb(path.string()).pixels.to(at::kFloat).mean(2).round().to(at::kByte);
}

std::string figure(const std::optional<double>& value) { return value ? fmt::format("{:.4f}", *value) : "-"; }

}  // namespace

void add_eval_images_command(CLI::App& eval) {
  struct Args {
    std::string concept_dir, images, clip, clip_tokenizer, dino, lpips, masks = "auto", source_mask, edits, prompt,
        json, cascade;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = eval.add_subcommand(
      "images", "The paper's figures for a folder of generations against a concept's source: CLIP-I-f/b, DINO-f/b, "
                "CLIP-T, DIV and ESR, per image and as means");
  command->add_option("--concept", args->concept_dir, "The concept whose source.png (and mask.png) is the reference")
      ->required();
  command->add_option("--images", args->images, "Folder of generations (their prompts are read from the PNGs)")
      ->required();
  command->add_option("--clip", args->clip, "A transformers CLIPModel folder (e.g. clip-vit-base-patch32)")->required();
  command->add_option("--clip-tokenizer", args->clip_tokenizer, "CLIP's tokenizer folder (default: the --clip folder)");
  command->add_option("--dino", args->dino, "A transformers ViTModel folder with DINO weights (e.g. dino-vits16)");
  command->add_option("--lpips", args->lpips, "LPIPS AlexNet weights (.safetensors; README: converting them)");
  command->add_option("--masks", args->masks,
                      "Foregrounds of the generations: auto (the face detector and head masker of prepare), source "
                      "(the concept's mask for every image: generations framed as the source) or a folder of masks "
                      "named NAME_mask.png or NAME.png")
      ->capture_default_str();
  command->add_option("--source-mask", args->source_mask, "The source's mask, for a concept trained without one");
  command->add_option("--edits", args->edits, "An editing list (JSON; e.g. data/editing_prompts/faces.json) for ESR");
  command->add_option("--prompt", args->prompt, "The prompt of images that do not record one");
  command->add_option("--cascade", args->cascade, "The face detector's cascade file (--masks auto)");
  command->add_option("--json", args->json, "Also write every figure to this file");
  command->callback([args] {
    // Everything the run reads is checked before the metric models are loaded.
    const Concept concept_ = Concept::load(args->concept_dir);
    const std::vector<fs::path> files = generation_files(args->images);
    EditingPromptList editing;
    if (!args->edits.empty()) editing = EditingPromptList::load(args->edits);
    const std::string source_mask_file = args->source_mask.empty() ? concept_.mask_file() : args->source_mask;
    if (!fs::exists(source_mask_file))
      throw Error(args->concept_dir + ": the concept has no mask.png; the region scores need one (--source-mask FILE)");
    MetricImage source{"source.png", "", read_image_rgb(concept_.source_image_file()).pixels, read_mask(source_mask_file)};
    const bool auto_masks = args->masks == "auto", source_masks = args->masks == "source";
    if (!auto_masks && !source_masks && !fs::is_directory(args->masks))
      throw Error(args->masks + ": --masks takes auto, source or a folder of masks");
    std::optional<FaceDetector> detector;
    if (auto_masks) detector.emplace(find_face_cascade(args->cascade));

    std::vector<MetricImage> images;
    for (const fs::path& file : files) {
      std::string prompt = recorded_prompt(file);
      if (prompt.empty()) prompt = args->prompt;
      if (prompt.empty())
        throw Error(file.string() + ": no prompt recorded in the file (pass --prompt for images from elsewhere)");
      MetricImage image{file.filename().string(), prompt, read_image_rgb(file.string()).pixels, {}};
      if (source_masks) {
        image.mask = source.mask;
      } else if (auto_masks) {
        const std::vector<Box> faces = detector->detect(image.pixels);
        if (!faces.empty()) image.mask = automatic_head_mask(image.pixels, faces.front());
      } else {
        const fs::path dir(args->masks);
        const std::string stem = file.stem().string();
        const fs::path named = dir / (stem + "_mask.png"), same = dir / (stem + ".png");
        if (fs::exists(named)) image.mask = read_mask(named);
        else if (fs::exists(same)) image.mask = read_mask(same);
        else throw Error(fmt::format("{}: no mask for {} ({} or {})", args->masks, file.filename().string(),
                                     named.filename().string(), same.filename().string()));
      }
      images.push_back(std::move(image));
    }
    if (!args->json.empty()) {  // an unwritable destination fails before the models run
      write_file_atomic(args->json + ".probe", "");
      fs::remove(args->json + ".probe");
    }

    ClipModel clip = ClipModel::load(args->clip);
    const ClipTokenizer tokenizer = load_clip_tokenizer(args->clip, args->clip_tokenizer);
    std::optional<LoadedVit> dino;
    std::optional<Lpips> lpips;
    if (!args->dino.empty()) dino = load_vit_model(args->dino);
    if (!args->lpips.empty()) lpips = load_lpips(args->lpips);
    const MetricModels models{&clip, &tokenizer, dino ? &*dino : nullptr, lpips ? &*lpips : nullptr};
    const ConceptScores scores =
        score_generations(models, source, images, concept_.trigger, args->edits.empty() ? nullptr : &editing);

    std::printf("image\tprompt\tCLIP-I-f\tCLIP-I-b\tDINO-f\tDINO-b\tCLIP-T\tedit\n");
    for (const ImageScores& row : scores.images)
      std::printf("%s\t%s\t%s\t%s\t%s\t%s\t%.4f\t%s\n", row.name.c_str(), row.prompt.c_str(),
                  figure(row.clip_i_f).c_str(), figure(row.clip_i_b).c_str(), figure(row.dino_f).c_str(),
                  figure(row.dino_b).c_str(), row.clip_t, row.listed ? (row.edit_success ? "yes" : "no") : "-");
    std::printf("mean\t\t%s\t%s\t%s\t%s\t%s\t\n", figure(scores.means.at("clip_i_f")).c_str(),
                figure(scores.means.at("clip_i_b")).c_str(), figure(scores.means.at("dino_f")).c_str(),
                figure(scores.means.at("dino_b")).c_str(), figure(scores.means.at("clip_t")).c_str());
    std::printf("\nCLIP-I-f\t%s\nCLIP-I-b\t%s\nDINO-f\t%s\nDINO-b\t%s\nCLIP-T\t%s\nDIV\t%s\t(%d prompts)\n"
                "ESR\t%s\t(%d images of listed prompts)\n",
                figure(scores.means.at("clip_i_f")).c_str(), figure(scores.means.at("clip_i_b")).c_str(),
                figure(scores.means.at("dino_f")).c_str(), figure(scores.means.at("dino_b")).c_str(),
                figure(scores.means.at("clip_t")).c_str(), figure(scores.div).c_str(), scores.div_prompts,
                figure(scores.esr).c_str(), scores.esr_images);
    for (const std::string& note : scores.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
    if (!args->json.empty()) {
      const nlohmann::json record = {
          {"concept", fs::absolute(args->concept_dir).lexically_normal().string()},
          {"trigger", concept_.trigger},
          {"images_dir", fs::absolute(args->images).lexically_normal().string()},
          {"masks", args->masks},
          {"models", {{"clip", args->clip}, {"dino", args->dino}, {"lpips", args->lpips}}},
          {"editing_list", args->edits},
          {"region_fill", kRegionFill},
          {"scores", to_json(scores)}};
      write_file_atomic(args->json, record.dump(2) + "\n");
    }
  });
}

}  // namespace singleinsert::cli
