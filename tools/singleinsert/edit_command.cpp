// singleinsert edit: Prompt Tuning Inversion's text-driven edit of a real image.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/io/png.h"
#include "singleinsert/pipeline/device.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_tuning_inversion.h"
#include "singleinsert/pipeline/text_to_image.h"
#include "singleinsert/sampling/noise_schedule.h"
#include "singleinsert/training/image_preprocess.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {
namespace {

struct EditArgs {
  ModelFlags model;
  EditOptions options;
  std::string image, out;
  std::string device = "auto";
  std::string dtype = "fp32";
  int resolution = 0;
  double inversion_guidance = 0;
  bool overwrite = false;
};

void run_edit(EditArgs& args, const CLI::App& command) {
  if (command.count("--inversion-guidance") > 0) args.options.inversion_guidance = args.inversion_guidance;
  const ExecutionOptions execution = make_execution_options(args.device, args.dtype);
  // Everything that can be checked cheaply is checked before the model loads or a file is written.
  if (!fs::exists(args.model.model)) throw Error(fmt::format("{}: no such model folder or file", args.model.model));
  const fs::path scheduler = fs::path(args.model.model) / "scheduler" / "scheduler_config.json";
  validate_edit_options(args.options, fs::exists(scheduler)
                                          ? NoiseScheduleConfig::from_json(JsonConfig::load(scheduler.string())).num_train_timesteps
                                          : NoiseScheduleConfig().num_train_timesteps);
  if (args.resolution == 0) args.resolution = native_image_size(args.model);
  const int64_t factor = vae_factor(args.model);
  if (args.resolution < factor || args.resolution % factor != 0)
    throw Error(fmt::format("--resolution must be a positive multiple of {} (the VAE's factor), got {}", factor,
                            args.resolution));
  LoadedImage loaded = read_image_rgb(args.image);
  for (const auto& note : loaded.notes) spdlog::warn("image {}: {}", args.image, note);
  if (loaded.pixels.size(0) != loaded.pixels.size(1))
    spdlog::info("{}: {}x{}, edited as its centred square", args.image, loaded.pixels.size(1), loaded.pixels.size(0));
  const at::Tensor square = pil_resize(center_crop_square(loaded.pixels), args.resolution, args.resolution, PilFilter::kBicubic);
  OutputDirectory out(args.out, args.overwrite);

  auto bundle = load_model_bundle(args.model.model, execution, args.model.sources);
  ProgressLine progress;
  const EditResult result = prompt_tuning_edit(*bundle, to_signed_unit_tensor(square), args.options, std::ref(progress));
  progress.finish();

  const at::Tensor source = square.to(at::kFloat) / 255.0;  // [H, W, 3]
  const auto& o = args.options;
  const nlohmann::json record = {
      {"method", "prompt-tuning-inversion"},
      {"model", args.model.model},
      {"image", fs::absolute(args.image).string()},
      {"prompt", o.prompt},
      {"source_prompt", o.source_prompt},
      {"eta", o.eta},
      {"steps", o.steps},
      {"guidance", o.guidance_scale},
      {"inversion_guidance", o.inversion_guidance.value_or(o.guidance_scale)},
      {"inner_steps", o.inner_steps},
      {"lr", o.learning_rate},
      {"early_stop", o.early_stop},
      {"resolution", args.resolution},
      {"dtype", args.dtype},
      {"psnr_edit_db", psnr(result.edited[0], source)},
      {"psnr_reconstruction_db", psnr(result.reconstruction[0], source)},
      {"psnr_vae_round_trip_db", psnr(result.round_trip[0], source)},
      {"step_losses", result.step_losses},
      {"step_iterations", result.step_iterations},
      {"seconds", result.seconds}};
  const fs::path dir(args.out);
  write_png((dir / "source.png").string(), square);
  write_png((dir / "edit.png").string(), to_uint8_pixels(result.edited)[0], {{"prompt", o.prompt}});
  write_png((dir / "reconstruction.png").string(), to_uint8_pixels(result.reconstruction)[0]);
  write_png((dir / "round_trip.png").string(), to_uint8_pixels(result.round_trip)[0]);
  write_file_atomic((dir / "edit.json").string(), record.dump(2) + "\n");
  out.commit();
  fmt::print(stderr, "edit: reconstruction {:.2f} dB, VAE round trip {:.2f} dB (PSNR against the input), {}\n",
             record["psnr_reconstruction_db"].get<double>(), record["psnr_vae_round_trip_db"].get<double>(),
             format_duration(result.seconds));
  fmt::print("{}\n", (dir / "edit.png").string());
}

}  // namespace

void add_edit_command(CLI::App& app) {
  auto args = std::make_shared<EditArgs>();
  CLI::App* command = app.add_subcommand(
      "edit", "Edit a real image from text (Prompt Tuning Inversion): no mask, no description of the image needed");
  add_model_flags(command, args->model);
  command->add_option("--image", args->image, "The image to edit")->required();
  command->add_option("--prompt", args->options.prompt, "What the edited image shows")->required();
  command->add_option("--source-prompt", args->options.source_prompt,
                      "What the image shows (optional; the start of the tuned embedding)");
  command->add_option("--eta", args->options.eta, "How far towards the target (0: the reconstruction, 1: the target "
                                                  "prompt alone)")
      ->capture_default_str();
  command->add_option("--steps", args->options.steps, "DDIM steps")->capture_default_str();
  command->add_option("--guidance", args->options.guidance_scale, "Classifier-free guidance scale")->capture_default_str();
  command->add_option("--inversion-guidance", args->inversion_guidance,
                      "Guidance of the DDIM inversion (default: --guidance's; 1: unguided, null-text inversion's pivot)");
  command->add_option("--inner-steps", args->options.inner_steps, "Adam iterations per step (at most)")
      ->capture_default_str();
  command->add_option("--lr", args->options.learning_rate, "Adam's learning rate for the tuned embedding")
      ->capture_default_str();
  command->add_option("--resolution", args->resolution, "Side of the edited square (default: the model's native size)");
  command->add_option("--out", args->out, "Output folder: edit.png, reconstruction.png, round_trip.png, source.png, "
                                          "edit.json")
      ->required();
  command->add_flag("--overwrite", args->overwrite, "Replace an existing output folder");
  command->add_option("--device", args->device, "auto|cpu|cuda")->capture_default_str();
  command->add_option("--dtype", args->dtype, "fp32, or bf16 (the model under autocast)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  command->callback([args, command] { run_edit(*args, *command); });
}

}  // namespace singleinsert::cli
