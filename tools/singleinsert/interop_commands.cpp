// singleinsert convert, info and export: files for and from the rest of the ecosystem.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/formats/ldm_checkpoint.h"
#include "singleinsert/pipeline/interop.h"
#include "singleinsert/pipeline/model_bundle.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {

void add_convert_command(CLI::App& app) {
  struct Args {
    ModelFlags model;
    std::string out, dtype = "fp16";
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = app.add_subcommand(
      "convert", "Diffusers folder <-> single-file checkpoint (OUT ending in .safetensors makes a single file)");
  add_model_flags(command, args->model);
  command->add_option("--out", args->out, "A .safetensors file, or a folder to create")->required();
  command->add_option("--dtype", args->dtype, "Precision of the written weights: fp16 or fp32")
      ->check(CLI::IsMember({"fp16", "fp32"}))
      ->capture_default_str();
  command->callback([args] {
    if (fs::exists(args->out)) throw Error(fmt::format("{}: already exists", args->out));
    const at::ScalarType dtype = args->dtype == "fp16" ? at::kHalf : at::kFloat;
    const auto bundle = load_model_bundle(args->model.model, {}, args->model.sources);
    if (fs::path(args->out).extension() == ".safetensors") {
      if (!fs::is_directory(fs::path(args->out).parent_path().empty() ? "." : fs::path(args->out).parent_path()))
        throw Error(fmt::format("{}: its folder does not exist", args->out));
      save_safetensors(args->out, to_ldm_checkpoint(*bundle->unet, *bundle->vae, *bundle->text_encoder, dtype),
                       {{"format", "pt"}});
    } else {
      save_model_folder(*bundle, args->out, dtype);
    }
    std::printf("%s\n", args->out.c_str());
  });
}

void add_info_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* command = app.add_subcommand(
      "info", "Describe a model folder, single-file checkpoint, LoRA, embedding or concept folder");
  command->add_option("path", *path, "What to describe")->required();
  command->callback([path] {
    for (const auto& [field, value] : describe_path(*path)) std::printf("%-20s %s\n", (field + ":").c_str(), value.c_str());
  });
}

void add_export_command(CLI::App& app) {
  struct Args {
    std::string concept, format, out, name;
    bool bundle_embedding = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = app.add_subcommand("export", "Write a concept in AUTOMATIC1111, diffusers or kohya layout");
  command->add_option("--concept", args->concept, "A concept folder")->required();
  command->add_option("--format", args->format, "a1111 | diffusers | diffusers-legacy | kohya")->required();
  command->add_flag("--bundle-embedding", args->bundle_embedding,
                    "kohya: put the embedding inside the LoRA file (bundle_emb.*), as kohya's trainers do; diffusers "
                    "does not load such files");
  command->add_option("--out", args->out, "Folder to create")->required();
  command->add_option("--name", args->name,
                      "The trigger in the exported files (default: the concept folder's name; A1111 uses file names)");
  command->callback([args] {
    const std::string name = args->name.empty() ? fs::path(args->concept).lexically_normal().filename().string() : args->name;
    for (const auto& file : export_concept(args->concept, parse_export_format(args->format), args->out, name,
                                                 args->bundle_embedding))
      std::printf("%s\n", file.c_str());
  });
}

}  // namespace singleinsert::cli
