// singleinsert invert (stage I) and finetune (stage II): learn a concept from one image and mask.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/interrupt.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/sha256.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/io/plots.h"
#include "singleinsert/io/png.h"
#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/pipeline/text_to_image.h"
#include "singleinsert/training/concept.h"
#include "singleinsert/training/cross_init.h"
#include "singleinsert/training/dreambooth_lora.h"
#include "singleinsert/training/image_preprocess.h"
#include "singleinsert/training/beyond_inserting.h"
#include "singleinsert/training/textual_inversion.h"
#include "singleinsert/training/trainer.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {
namespace {

// Flags shared by both stages. A flag that was given overrides the preset.
struct TrainArgs {
  ModelFlags model;
  std::string out, preset = "paper";
  std::string device = "auto";
  std::string dtype = "fp32";
  std::string log_json;
  bool overwrite = false, resume = false, preview = false;
  // Overrides (applied only when given).
  int steps = 0, batch = 0, resolution = 0, checkpoint_every = 0, lora_rank = 0;
  double lr = 0, bg_weight = 0, sm_weight = 0, attn_weight = 0;
  uint64_t seed = 0;
  std::string attn_layers, attn_reference;
  std::string sm_reference;
  CLI::App* command = nullptr;
  bool given(const std::string& flag) const { return command->count(flag) > 0; }
};

struct InvertArgs : TrainArgs {
  std::string image, mask, class_word, trigger = "*", encoder_weights, crop = "center";
  // Methods other than SingleInsert.
  std::string method = "singleinsert", init_word, init_names, init_words;
  int num_vectors = 0;
  double reg_weight = 0;
  bool fast = false, no_kv_tokens = false;
};

struct FinetuneArgs : TrainArgs {
  std::string concept;
  // DreamBooth-LoRA.
  std::string method = "singleinsert", image, class_word, trigger = "*";
  int prior_images = 0;
  bool train_text_encoder = false;
};

void add_common_flags(CLI::App* command, TrainArgs& args, int stage) {
  args.command = command;
  add_model_flags(command, args.model);
  command->add_option("--out", args.out, "Concept folder to create")->required();
  command->add_option("--preset", args.preset, "Training preset: paper, authors-code, or a JSON file")
      ->capture_default_str();
  command->add_option("--steps", args.steps, fmt::format("Stage {} steps", stage == 1 ? "I" : "II"));
  command->add_option("--batch", args.batch, "Batch size");
  command->add_option("--lr", args.lr, "Learning rate (AdamW)");
  command->add_option("--bg-weight", args.bg_weight, "Weight gamma of the background loss");
  command->add_option("--attn-weight", args.attn_weight,
                      "Weight of Beyond Inserting's face-wise attention loss (singleinsert: 0, off; beyond-inserting: "
                      "0.003)");
  command->add_option("--attn-layers", args.attn_layers,
                      "The attention loss's layers: bottom (the lowest-resolution stage) or all")
      ->check(CLI::IsMember({"bottom", "all"}));
  command->add_option("--attn-reference", args.attn_reference,
                      "The attention loss's reference word in the trigger's place (default: person)");
  command->add_option("--seed", args.seed, "Seed of every random draw");
  command->add_option("--checkpoint-every", args.checkpoint_every, "Save a resumable checkpoint every N steps");
  command->add_flag("--resume", args.resume, "Continue an interrupted run from its last checkpoint");
  command->add_flag("--overwrite", args.overwrite, "Replace an existing output folder");
  command->add_option("--log-json", args.log_json, "Append one JSON object per step to this file");
  command->add_flag("--preview", args.preview, "Render preview.png: the concept in a few prompts");
  command->add_option("--device", args.device, "auto|cpu|cuda")->capture_default_str();
  command->add_option("--dtype", args.dtype,
                      "fp32, or bf16: the frozen model in bf16 under autocast, trainable weights in fp32")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
}

void apply_overrides(const TrainArgs& args, int stage, TrainingConfig& config) {
  StageConfig& s = stage == 1 ? config.stage1 : config.stage2;
  if (args.given("--steps")) s.steps = args.steps;
  if (args.given("--batch")) s.batch = args.batch;
  if (args.given("--lr")) s.lr = args.lr;
  if (args.given("--bg-weight")) config.bg_weight = args.bg_weight;
  if (args.given("--attn-weight")) config.attn_weight = args.attn_weight;
  if (args.given("--attn-layers")) config.attn_layers = args.attn_layers;
  if (args.given("--attn-reference")) config.attn_reference = args.attn_reference;
  if (args.given("--seed")) config.seed = args.seed;
  if (args.given("--checkpoint-every")) config.checkpoint_every = args.checkpoint_every;
  if (args.command->get_option_no_throw("--resolution") && args.given("--resolution")) config.resolution = args.resolution;
  if (args.command->get_option_no_throw("--sm-weight") && args.given("--sm-weight")) config.sm_weight = args.sm_weight;
  if (args.command->get_option_no_throw("--lora-rank") && args.given("--lora-rank")) {
    config.lora_rank = args.lora_rank;
    config.lora_alpha = args.lora_rank;
  }
  if (args.command->get_option_no_throw("--sm-reference") && args.given("--sm-reference"))
    config.sm_reference = parse_sm_reference(args.sm_reference);
  config.validate();
}

// Loads an image or mask, reporting the conversions that were needed.
at::Tensor load_picture(const std::string& path, const std::string& role) {
  LoadedImage loaded = read_image_rgb(path);
  // Upsampled from fewer pixels than this, a photo holds nothing to learn a concept from.
  constexpr int64_t kMinSide = 16;
  const int64_t height = loaded.pixels.size(0), width = loaded.pixels.size(1);
  if (width < kMinSide || height < kMinSide)
    throw Error(fmt::format("{}: the {} is {}x{} pixels; at least {}x{} is needed", path, role, width, height, kMinSide,
                            kMinSide));
  for (const auto& note : loaded.notes)
    if (role != "mask" || note != "grayscale expanded to RGB")  // single-channel masks are the norm
      spdlog::warn("{} {}: {}", role, path, note);
  return loaded.pixels;
}

// One JSON object per step, flushed as it is written.
class StepLog {
 public:
  explicit StepLog(const std::string& path) {
    if (path.empty()) return;
    file_.open(path, std::ios::app);
    if (!file_) throw Error(fmt::format("{}: cannot be written", path));
  }
  void write(const StepRecord& r) {
    if (!file_.is_open()) return;
    file_ << nlohmann::json::parse(history_json({r}))[0].dump() << "\n";
    file_.flush();
  }

 private:
  std::ofstream file_;
};

// Everything a run needs to be resumed with the same inputs.
struct RunDescription {
  std::string model, image_sha256, mask_sha256, trigger, class_word, source_image, source_mask, parent_concept;
  std::string unet_sha256, dtype;
  std::string training_json;
  std::string to_json() const {
    return nlohmann::json{{"model", model},
                          {"image_sha256", image_sha256},
                          {"mask_sha256", mask_sha256},
                          {"unet_sha256", unet_sha256},
                          {"dtype", dtype},
                          {"trigger", trigger},
                          {"class", class_word},
                          {"source_image", source_image},
                          {"source_mask", source_mask},
                          {"parent_concept", parent_concept},
                          {"training", nlohmann::json::parse(training_json)}}
        .dump();
  }
  // A resumed run must see the inputs, base model and dtype it started with, or it would not end
  // where an uninterrupted run ends. (Checkpoints written before the model and dtype were
  // recorded are checked on their inputs only.)
  void require_same_as(const std::string& saved_json) const {
    const auto saved = nlohmann::json::parse(saved_json);
    if (saved.value("image_sha256", "") != image_sha256 || saved.value("mask_sha256", "") != mask_sha256)
      throw Error("the image or mask changed since the interrupted run (their sha256 differ); start over with --overwrite");
    const std::string saved_model = saved.value("unet_sha256", "");
    if (!saved_model.empty() && saved_model != unet_sha256)
      throw Error(fmt::format("the interrupted run trained on another base model (UNet sha256 {}, this one is {}); "
                              "resume with its --model, or start over with --overwrite",
                              saved_model.substr(0, 12), unet_sha256.substr(0, 12)));
    const std::string saved_dtype = saved.value("dtype", "");
    if (!saved_dtype.empty() && saved_dtype != dtype)
      throw Error(fmt::format("the interrupted run computed in {}; resume it with --dtype {}", saved_dtype, saved_dtype));
  }
};

// concept.json's record of a run, with what the run's description and the model already say.
ConceptRecord concept_record(const RunDescription& run, const std::string& method, int stage, const ModelBundle& bundle,
                             const at::Tensor& embedding) {
  ConceptRecord record;
  record.method = method;
  record.stage = stage;
  record.trigger = run.trigger;
  record.class_word = run.class_word;
  record.model_path = run.model;
  record.unet_sha256 = run.unet_sha256;
  record.image = run.source_image;
  record.image_sha256 = run.image_sha256;
  record.mask = run.source_mask;
  record.mask_sha256 = run.mask_sha256;
  record.training_json = run.training_json;
  record.embedding_vectors = embedding.size(0);
  record.embedding_width = embedding.size(1);
  record.device = bundle.execution.device.str();
  return record;
}

std::string previous_history(const std::string& concept_json) {
  const auto json = nlohmann::json::parse(concept_json);
  return json.contains("history") ? json["history"].dump() : "[]";
}

// Renders the concept in a few prompts with the weights just trained (the bundle holds them).
at::Tensor render_preview(ModelBundle& bundle, const std::string& trigger, const std::string& class_word, int size,
                          uint64_t seed) {
  const std::string subject = trigger + " " + class_word;
  GenerateOptions options;
  options.prompts = {"a photo of " + subject, subject + " on the beach", "a painting of " + subject,
                     subject + " in the snow"};
  options.steps = 25;
  options.sampler = "ddim";
  options.seed = seed;
  options.width = options.height = size;
  const GeneratedImages images = generate(bundle, options);
  std::vector<at::Tensor> tiles;
  for (int64_t i = 0; i < images.pixels.size(0); ++i) tiles.push_back(images.pixels[i]);
  return image_grid(tiles, 4, options.prompts);
}

// preview.png: the concept in a few prompts, drawn with what was just trained (the trigger's rows
// set to the learned vectors; a LoRA being trained is still in the model).
void write_preview(ConceptBuilder& builder, ModelBundle& bundle, const std::vector<std::string>& tokens,
                   int64_t first_id, const at::Tensor& embedding, const std::string& class_word, int size, uint64_t seed) {
  at::NoGradGuard no_grad;
  if (first_id >= 0) {
    auto& table = bundle.text_encoder->text_model->embeddings->token_embedding->weight;
    table.narrow(0, first_id, embedding.size(0)).copy_(embedding.to(table.device(), table.scalar_type()));
  }
  std::string subject = tokens[0];
  for (size_t k = 1; k < tokens.size(); ++k) subject += " " + tokens[k];
  write_png(builder.staged("preview.png"), render_preview(bundle, subject, class_word, size, seed));
}

// The end every method shares: concept.json, the folder moved into place, a line on stderr and
// the folder on stdout.
void finish_concept(ConceptBuilder& builder, const ConceptRecord& record, const std::string& out,
                    const std::string& label, int steps, double seconds) {
  builder.write_json(concept_json(record));
  builder.commit();
  std::fprintf(stderr, "%s: %d steps in %s, final loss %.5g\n", label.c_str(), steps, format_duration(seconds).c_str(),
               record.history.empty() ? 0.0 : record.history.back().loss);
  std::printf("%s\n", out.c_str());
}

// Every loss term of the history as a curve; a line where a stage begins.
at::Tensor plot_history(const std::vector<StepRecord>& history, const std::string& title) {
  static const std::map<std::string, std::pair<std::string, std::array<uint8_t, 3>>> known = {
      {"fg", {"L_fg", {200, 60, 40}}}, {"bg", {"L_bg", {40, 110, 200}}}, {"sm", {"L_sm", {60, 160, 60}}},
      {"noise", {"L_noise", {200, 60, 40}}}, {"reg", {"L_reg", {40, 110, 200}}}};
  std::vector<Curve> curves = {{"loss", {}, {20, 20, 20}}};
  std::vector<std::string> names;
  for (const auto& r : history)
    for (const auto& [name, value] : r.terms)
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        names.push_back(name);
        const auto it = known.find(name);
        curves.push_back(it != known.end() ? Curve{it->second.first, {}, it->second.second}
                                           : Curve{name, {}, {150, 110, 60}});
      }
  std::vector<int> boundaries;
  for (size_t i = 0; i < history.size(); ++i) {
    const auto& r = history[i];
    if (i > 0 && r.stage != history[i - 1].stage) boundaries.push_back(static_cast<int>(i));
    curves[0].values.push_back(r.loss);
    for (size_t k = 0; k < names.size(); ++k) curves[k + 1].values.push_back(r.term(names[k]));
  }
  return plot_curves(title, curves, boundaries);
}

struct StageRun {
  std::shared_ptr<ModelBundle> bundle;
  ClipVisionModel encoder{nullptr};
  TrainingConfig config;
  PreparedSource source;
  RunDescription run;
  std::vector<StepRecord> earlier_history;  // stage I's, when finetuning
  LoraWeightMap resume_lora;
  std::string parent_json;  // the stage I concept.json, when finetuning
};

// Runs training (`train` calls the step loop with the callbacks it is given) with the progress
// line, --log-json, checkpoints into the concept's staging folder (after `earlier`, the history of
// the stages before), and one clear message when interrupted (naming the stage, for SingleInsert's
// two) or diverged. Returns the run's own
// history and the seconds spent (a resumed run counts its earlier part).
std::pair<std::vector<StepRecord>, double> run_method(
    const std::function<std::vector<StepRecord>(const TrainingCallbacks&)>& train, ConceptBuilder& builder,
    const std::string& run_json, const std::string& log_json, bool name_stages = false,
    const std::vector<StepRecord>& earlier = {}) {
  ProgressLine progress;
  StepLog log(log_json);
  TrainingCallbacks callbacks;
  callbacks.progress = std::ref(progress);
  callbacks.on_step = [&](const StepRecord& record) { log.write(record); };
  int last_checkpoint = 0;
  callbacks.on_checkpoint = [&](const TrainingState& state) {
    last_checkpoint = state.step;
    TrainingState full = state;
    full.history.insert(full.history.begin(), earlier.begin(), earlier.end());
    builder.save_checkpoint(full, run_json);
  };
  const auto started = std::chrono::steady_clock::now();
  std::vector<StepRecord> history;
  try {
    history = train(callbacks);
  } catch (const TrainingInterrupted& interrupted) {
    progress.finish();
    const std::string where = !name_stages ? "" : interrupted.stage == 1 ? "stage I " : "stage II ";
    throw Error(fmt::format("interrupted at {}step {}; the checkpoint is in {} (continue with --resume)", where,
                            interrupted.step, builder.staging()));
  } catch (const TrainingDiverged& diverged) {
    progress.finish();
    if (last_checkpoint > 0)
      throw Error(fmt::format("{} (try a lower --lr); the last good checkpoint, step {}, is kept in {}", diverged.what(),
                              last_checkpoint, builder.staging()));
    throw Error(fmt::format("{} (try a lower --lr); no checkpoint had been written yet", diverged.what()));
  }
  progress.finish();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!history.empty()) seconds = std::max(seconds, history.back().seconds);
  return {std::move(history), seconds};
}

// Trains one stage into the builder's staging folder and completes the concept.
// The class word's tokens, for the attention loss.
std::vector<int64_t> class_tokens(const ModelBundle& bundle, const std::string& class_word) {
  const std::vector<int64_t> ids = bundle.tokenizer.encode(class_word);
  if (ids.empty()) throw Error(fmt::format("the class word '{}' tokenizes to nothing", class_word));
  return ids;
}

// Where `tokens` first occur in the id row [L] after BOS, as the position of their last token (the
// one whose state has read the whole word under CLIP's causal mask: "bear" of "teddy bear").
int64_t first_position(const at::Tensor& ids, const std::vector<int64_t>& tokens) {
  const auto row = ids.contiguous().data_ptr<int64_t>();
  const int64_t length = ids.size(0), count = static_cast<int64_t>(tokens.size());
  for (int64_t at = 1; at + count <= length; ++at)
    if (std::equal(tokens.begin(), tokens.end(), row + at)) return at + count - 1;
  throw Error("the attention loss's reference prompt does not hold the class word");
}

void train_and_write(StageRun& r, int stage, ConceptBuilder& builder, const TrainArgs& args,
                     const std::optional<TrainingState>& checkpoint, double earlier_seconds) {
  ModelBundle& bundle = *r.bundle;
  const int64_t trigger_id = bundle.tokenizer.add_token(r.run.trigger);
  bundle.text_encoder->resize_token_embeddings(bundle.tokenizer.vocab_size());
  const at::Tensor trigger_ids = tokenize_prompts(bundle.tokenizer, {r.run.trigger + " " + r.run.class_word});
  const at::Tensor class_ids = tokenize_prompts(bundle.tokenizer, {r.run.class_word});
  if (trigger_ids[0][1].item<int64_t>() != trigger_id) throw Error("the trigger is not the first token of its prompt");

  SingleInsertTrainer trainer(base_model(bundle), r.encoder, r.config, r.source, trigger_ids, class_ids);
  if (r.config.attn_weight > 0) {
    // "<reference> <class>": the class word right after the reference word's tokens.
    const std::vector<int64_t> reference = bundle.tokenizer.encode(r.config.attn_reference);
    const std::vector<int64_t> word = class_tokens(bundle, r.run.class_word);
    const std::string subject = r.config.attn_reference.empty() ? "" : r.config.attn_reference + " ";
    const at::Tensor reference_ids = tokenize_prompts(bundle.tokenizer, {subject + r.run.class_word});
    trainer.set_attention_reference(reference_ids, static_cast<int64_t>(reference.size() + word.size()));
  }
  TrainingState resume_state;
  if (checkpoint) {
    resume_state = *checkpoint;
    // The checkpoint's history includes earlier stages; the trainer keeps only its own.
    resume_state.history.erase(std::remove_if(resume_state.history.begin(), resume_state.history.end(),
                                               [stage](const StepRecord& s) { return s.stage != stage; }),
                               resume_state.history.end());
  }
  const auto [own, seconds] = run_method(
      [&](const TrainingCallbacks& callbacks) {
        trainer.run_stage(stage, callbacks, checkpoint ? &resume_state : nullptr);
        return trainer.history();
      },
      builder, r.run.to_json(), args.log_json, /*name_stages=*/true, r.earlier_history);

  std::vector<StepRecord> history = r.earlier_history;
  history.insert(history.end(), own.begin(), own.end());
  const at::Tensor embedding = trainer.embedding();
  builder.write_embedding(r.run.trigger, embedding);
  builder.write_encoder(trainer.encoder_state());
  if (stage == 2) builder.write_lora(trainer.lora_weights(), r.config.lora_rank, r.config.lora_alpha);
  write_png(builder.staged("source.png"), r.source.image);
  write_png(builder.staged("mask.png"), r.source.mask.size(2) == 3 ? r.source.mask
                                                                       : r.source.mask.narrow(2, 0, 1).contiguous());
  if (!history.empty())
    write_png(builder.staged("loss.png"),
              plot_history(history, "SingleInsert losses (log scale; the line marks stage II)"));
  if (args.preview)
    write_preview(builder, bundle, {r.run.trigger}, trigger_id, embedding, r.run.class_word, r.config.resolution,
                  r.config.seed);

  ConceptRecord record = concept_record(r.run, "singleinsert", stage, bundle, embedding);
  record.foreground_fraction = r.source.foreground_fraction;
  record.stage1_seconds = stage == 1 ? seconds : earlier_seconds;
  record.stage2_seconds = stage == 2 ? seconds : 0.0;
  record.history = std::move(history);
  if (stage == 2)
    record.lora = ConceptRecord::Lora{r.config.lora_rank, r.config.lora_alpha, trainer.lora_weights().size(),
                                      r.run.parent_concept};
  finish_concept(builder, record, args.out, stage == 1 ? "stage I" : "stage II",
                 stage == 1 ? r.config.stage1.steps : r.config.stage2.steps, seconds);
}

ClipVisionModel make_encoder(const TrainingConfig& config, int64_t text_width) {
  ClipVisionConfig encoder_config = config.encoder;
  encoder_config.projection_dim = text_width;
  return ClipVisionModel(encoder_config);
}

// A run killed before its first checkpoint leaves a staging folder with nothing to resume from:
// --resume then starts over rather than sending the user to --overwrite.
std::optional<std::pair<TrainingState, std::string>> load_checkpoint_or_start_over(const ConceptBuilder& builder) {
  auto saved = builder.load_checkpoint();
  if (!saved) spdlog::warn("{}: no checkpoint had been written yet; starting from the beginning", builder.staging());
  return saved;
}

// A resumed run computes in the dtype it started with, unless --dtype says otherwise (which the
// run's own check then refuses).
void adopt_saved_dtype(TrainArgs& args, const std::optional<std::pair<TrainingState, std::string>>& saved) {
  if (saved && !args.given("--dtype")) args.dtype = nlohmann::json::parse(saved->second).value("dtype", args.dtype);
}

// The methods here train the noise prediction; a model that predicts v would learn the wrong target.
void require_epsilon_prediction(const ModelBundle& bundle, const std::string& method) {
  const std::string prediction = bundle.scheduler_config.get_string("prediction_type", "epsilon");
  if (prediction != "epsilon")
    throw Error(fmt::format("{} trains epsilon-prediction models; this model's scheduler predicts {}", method, prediction));
}

// The image as trained on: square, centre-cropped when allowed (a note says so).
at::Tensor square_image(const at::Tensor& pixels, CropMode crop, const std::string& path) {
  const int64_t height = pixels.size(0), width = pixels.size(1);
  if (height == width) return pixels;
  if (crop == CropMode::kNone)
    throw Error(fmt::format("{}: {}x{} is not square (pass --crop center to centre-crop it)", path, width, height));
  spdlog::warn("{}: {}x{} centre-cropped to {}x{}", path, width, height, std::min(width, height), std::min(width, height));
  return center_crop_square(pixels);
}

// The n tokens a multi-vector trigger expands to: trigger, trigger_1 ... trigger_{n-1}.
std::vector<std::string> vector_tokens(const std::string& trigger, int count) {
  std::vector<std::string> tokens = {trigger};
  for (int k = 1; k < count; ++k) tokens.push_back(fmt::format("{}_{}", trigger, k));
  return tokens;
}

// The names a Cross Initialization starts from (--init-names FILE, one per line); empty when it
// starts from --init-words instead.
std::vector<std::string> cross_init_names(const InvertArgs& args) {
  if (!args.init_names.empty() && !args.init_words.empty()) throw Error("give --init-names or --init-words, not both");
  if (args.init_names.empty() && args.init_words.empty())
    throw Error("cross-init starts from a list of names: give --init-names FILE (one per line) or --init-words");
  std::vector<std::string> names;
  if (args.init_names.empty()) return names;
  if (!fs::is_regular_file(args.init_names)) throw Error(fmt::format("--init-names {}: no such file", args.init_names));
  std::istringstream lines(read_file(args.init_names));
  for (std::string line; std::getline(lines, line);) {
    line.erase(0, line.find_first_not_of(" \t\r"));
    line.erase(line.find_last_not_of(" \t\r") + 1);
    if (!line.empty()) names.push_back(line);
  }
  if (names.empty()) throw Error(fmt::format("--init-names {}: the file holds no names", args.init_names));
  return names;
}

// invert --method textual-inversion | cross-init: n word embeddings trained on the whole image.
void run_embedding_inversion(InvertArgs& args, ConceptBuilder& builder,
                             const std::optional<std::pair<TrainingState, std::string>>& saved) {
  const ExecutionOptions execution = make_execution_options(args.device, args.dtype);
  EmbeddingInversionConfig config;
  nlohmann::json init = nlohmann::json::object();
  std::optional<TrainingState> checkpoint;
  if (saved) {
    const auto run = nlohmann::json::parse(saved->second);
    config.apply_json(run.at("training").dump(), "checkpoint");
    checkpoint = saved->first;
    args.image = run.at("source_image");
    args.mask = run.at("source_mask");
    args.class_word = run.at("class");
    args.trigger = run.at("trigger");
    init = run.at("init");
    spdlog::info("resuming {} at step {} with the interrupted run's settings", config.method, checkpoint->step);
  } else {
    // The method's own preset, then a preset file's settings on top.
    const std::string builtin = args.method == "cross-init" && args.fast ? "cross-init-fast" : args.method;
    config.apply_json(method_preset_json(builtin), builtin);
    if (args.given("--preset")) config.apply_json(method_preset_json(args.preset), args.preset);
    if (config.method != args.method)
      throw Error(fmt::format("--preset {} is a {} preset, not {}", args.preset, config.method, args.method));
    if (args.given("--steps")) config.steps = args.steps;
    if (args.given("--batch")) config.batch = args.batch;
    if (args.given("--lr")) config.learning_rate = args.lr;
    if (args.given("--seed")) config.step.seed = args.seed;
    if (args.given("--checkpoint-every")) config.step.checkpoint_every = args.checkpoint_every;
    if (args.given("--resolution")) config.resolution = args.resolution;
    if (args.given("--num-vectors")) config.num_vectors = args.num_vectors;
    if (args.given("--reg-weight")) config.reg_weight = args.reg_weight;
    if (args.method == "beyond-inserting") {
      if (args.given("--attn-weight")) config.attn_weight = args.attn_weight;
      if (args.given("--attn-layers")) config.attn_layers = args.attn_layers;
      if (args.given("--attn-reference")) config.attn_reference = args.attn_reference;
      if (args.no_kv_tokens) config.kv_tokens = false;
    } else {
      for (const char* flag : {"--attn-weight", "--attn-layers", "--attn-reference", "--no-kv-tokens"})
        if (args.given(flag)) throw Error(fmt::format("{} is for singleinsert and beyond-inserting, not {}", flag, args.method));
    }
    for (const char* flag : {"--bg-weight", "--encoder-weights"})
      if (args.given(flag)) throw Error(fmt::format("{} is a SingleInsert setting; {} does not use it", flag, args.method));
    if (args.fast && args.method != "cross-init") throw Error("--fast is cross-init's fast version");
    config.validate();
    if (args.method != "cross-init") {
      if (!args.init_names.empty() || !args.init_words.empty())
        throw Error(fmt::format("--init-names and --init-words are cross-init's; {} starts from --init-word", args.method));
      init = {{"word", args.init_word.empty() ? args.class_word : args.init_word}};
    } else {
      if (!args.init_word.empty()) throw Error("--init-word is textual inversion's; cross-init starts from --init-names");
      const std::vector<std::string> names = cross_init_names(args);
      init = names.empty() ? nlohmann::json{{"words", args.init_words}} : nlohmann::json{{"names", names}};
    }
  }
  if (args.image.empty() || args.class_word.empty()) throw Error("--image and --class are required");
  validate_trigger(args.trigger, "--trigger");

  // The mask is not trained on; kept with the concept when given, for evaluation.
  const at::Tensor image = load_picture(args.image, "image");
  const at::Tensor mask = args.mask.empty() ? at::Tensor() : load_picture(args.mask, "mask");
  if (mask.defined() && !mask.sizes().slice(0, 2).equals(image.sizes().slice(0, 2)))
    throw Error(fmt::format("the mask is {}x{} but the image is {}x{}", mask.size(1), mask.size(0), image.size(1),
                            image.size(0)));
  RunDescription run;
  run.image_sha256 = sha256_of_file(args.image);
  run.mask_sha256 = args.mask.empty() ? "" : sha256_of_file(args.mask);
  auto bundle = load_model_bundle(args.model.model, execution, args.model.sources);
  require_epsilon_prediction(*bundle, config.method);
  run.unet_sha256 = base_model_sha256(*bundle);
  run.dtype = args.dtype;
  if (checkpoint) run.require_same_as(saved->second);
  auto& text_encoder = *bundle->text_encoder;
  // The start, from the model's own words (before the trigger's tokens exist).
  at::Tensor start;
  if (config.method != "cross-init") {
    const std::string word = init.at("word");
    const std::vector<int64_t> ids = bundle->tokenizer.encode(word);
    if (ids.size() != 1)
      throw Error(fmt::format("the initializer word '{}' is {} tokens; textual inversion starts from one (choose "
                              "another with --init-word)",
                              word, ids.size()));
    const at::Tensor row = text_encoder.text_model->embeddings->token_embedding->weight[ids[0]];
    start = row.detach().to(at::kFloat).cpu().unsqueeze(0).repeat({config.num_vectors, 1});
  } else if (init.contains("words")) {
    start = cross_init_from_words(text_encoder, bundle->tokenizer, init.at("words"), config.num_vectors);
  } else {
    start = cross_init_from_names(text_encoder, bundle->tokenizer, init.at("names").get<std::vector<std::string>>(),
                                  config.num_vectors, "--init-names");
  }
  const std::vector<std::string> tokens = vector_tokens(args.trigger, config.num_vectors);
  for (const auto& token : tokens)
    if (bundle->tokenizer.is_vocabulary_token(token) || bundle->tokenizer.is_vocabulary_token(token + "</w>"))
      spdlog::warn("the token '{}' is also a word of the model's vocabulary; in prompts with this concept it will "
                   "mean the concept (choose another with --trigger if that is a problem)",
                   token);
  const int64_t first_id = bundle->tokenizer.add_token(tokens[0]);
  for (int k = 1; k < config.num_vectors; ++k)
    if (bundle->tokenizer.add_token(tokens[k]) != first_id + k)
      throw Error(fmt::format("the token '{}' is already taken", tokens[k]));
  text_encoder.resize_token_embeddings(bundle->tokenizer.vocab_size());
  const int64_t factor = bundle->vae_scale_factor();
  if (config.resolution % factor != 0)
    throw Error(fmt::format("--resolution {} is not a multiple of the VAE factor {}", config.resolution, factor));
  // As the references' datasets (center_crop off): the whole image resized to a square; --crop
  // center crops it first.
  const std::string crop = saved ? nlohmann::json::parse(saved->second).value("crop", "stretch")
                                 : (args.given("--crop") ? args.crop : "stretch");
  auto to_square = [&](const at::Tensor& picture, const std::string& path) {
    return crop == "stretch" ? picture : square_image(picture, crop == "none" ? CropMode::kNone : CropMode::kCenter, path);
  };
  const at::Tensor square = to_square(image, args.image);
  const at::Tensor pixels =
      to_signed_unit_tensor(pil_resize(square, config.resolution, config.resolution, PilFilter::kBicubic));
  std::string placeholder = tokens[0];
  for (int k = 1; k < config.num_vectors; ++k) placeholder += " " + tokens[k];
  const std::vector<std::string> prompts = inversion_prompts(config, placeholder, args.class_word);
  for (const auto& prompt : prompts)
    if (!bundle->tokenizer.tokenize(prompt).truncated_text.empty())
      throw Error(fmt::format("--num-vectors {}: the prompt \"{}\" would be cut (CLIP reads {} tokens); use fewer "
                              "vectors",
                              config.num_vectors, prompt, bundle->tokenizer.max_length() - 2));
  const at::Tensor template_ids = tokenize_prompts(bundle->tokenizer, prompts);

  run.model = args.model.model;
  run.trigger = args.trigger;
  run.class_word = args.class_word;
  run.source_image = fs::absolute(args.image).string();
  run.source_mask = args.mask.empty() ? "" : fs::absolute(args.mask).string();
  run.training_json = config.to_json();
  nlohmann::json run_json = nlohmann::json::parse(run.to_json());
  run_json["init"] = init;
  run_json["crop"] = crop;

  std::unique_ptr<EmbeddingInversion> method;
  if (config.method == "beyond-inserting") {
    AttentionLossPrompts attention;
    if (config.attn_weight > 0) {
      attention.reference_ids =
          tokenize_prompts(bundle->tokenizer, inversion_prompts(config, config.attn_reference, args.class_word));
      const std::vector<int64_t> word = class_tokens(*bundle, args.class_word);
      std::vector<int64_t> identity, classes;
      for (int64_t t = 0; t < template_ids.size(0); ++t) {
        identity.push_back(first_position(template_ids[t], {first_id}));
        classes.push_back(first_position(attention.reference_ids[t], word));
      }
      attention.identity_positions = at::tensor(identity, at::kLong);
      attention.class_positions = at::tensor(classes, at::kLong);
    }
    method = std::make_unique<BeyondInserting>(base_model(*bundle), config, pixels, template_ids, first_id, start, attention);
  } else {
    method = std::make_unique<EmbeddingInversion>(base_model(*bundle), config, pixels, template_ids, first_id, start);
  }
  const auto [history, seconds] = run_method(
      [&](const TrainingCallbacks& callbacks) {
        return run_steps(*method, method->step_options(), callbacks, checkpoint ? &*checkpoint : nullptr);
      },
      builder, run_json.dump(), args.log_json);

  const at::Tensor embedding = method->embedding();
  builder.write_embedding(args.trigger, embedding);
  at::Tensor kv_tokens;
  if (auto* beyond = dynamic_cast<BeyondInserting*>(method.get())) kv_tokens = beyond->kv_tokens();
  if (kv_tokens.defined()) builder.write_kv_tokens(kv_tokens);
  write_png(builder.staged("source.png"), pil_resize(square, config.resolution, config.resolution, PilFilter::kBicubic));
  if (mask.defined()) {
    const at::Tensor resized = pil_resize(to_square(mask, args.mask), config.resolution, config.resolution, PilFilter::kBilinear);
    write_png(builder.staged("mask.png"), resized.size(2) == 3 ? resized : resized.narrow(2, 0, 1).contiguous());
  }
  if (!history.empty()) write_png(builder.staged("loss.png"), plot_history(history, config.method + " loss (log scale)"));
  if (args.preview) {
    if (kv_tokens.defined()) {  // drawn as generate draws the concept: each stage with its own tokens
      const int64_t stages = kv_tokens.size(0) / 2;
      bundle->stage_tokens.push_back({first_id, kv_tokens.narrow(0, 0, stages), kv_tokens.narrow(0, stages, stages)});
    }
    write_preview(builder, *bundle, tokens, first_id, embedding, args.class_word, config.resolution, config.step.seed);
  }

  ConceptRecord record = concept_record(run, config.method, 1, *bundle, embedding);
  record.init_json = init.dump();
  if (kv_tokens.defined()) record.kv_stages = kv_tokens.size(0) / 2;
  record.stage1_seconds = seconds;
  record.history = history;
  finish_concept(builder, record, args.out, config.method, config.steps, seconds);
}

void run_invert(InvertArgs& args) {
  install_interrupt_handler();
  ConceptBuilder builder(args.out, args.overwrite, args.resume);
  auto saved = args.resume ? load_checkpoint_or_start_over(builder) : std::nullopt;
  // A resumed run continues with the method it was started with.
  if (saved) args.method = nlohmann::json::parse(saved->second).at("training").value("method", "singleinsert");
  adopt_saved_dtype(args, saved);
  if (args.method != "singleinsert") return run_embedding_inversion(args, builder, saved);
  for (const char* flag : {"--num-vectors", "--init-word", "--init-names", "--init-words", "--reg-weight", "--fast",
                           "--no-kv-tokens"})
    if (args.given(flag)) throw Error(fmt::format("{} is not a SingleInsert setting (see --method)", flag));
  const ExecutionOptions execution = make_execution_options(args.device, args.dtype);
  std::optional<TrainingState> checkpoint;
  StageRun r;
  r.config.apply_json(preset_json(args.preset), args.preset);
  if (saved) {
    const auto run = nlohmann::json::parse(saved->second);
    r.config = TrainingConfig();
    r.config.apply_json(run.at("training").dump(), "checkpoint");
    checkpoint = saved->first;
    if (args.image.empty()) args.image = run.at("source_image");
    if (args.mask.empty()) args.mask = run.at("source_mask");
    args.class_word = run.at("class");
    args.trigger = run.at("trigger");
    spdlog::info("resuming stage I at step {} with the interrupted run's settings", checkpoint->step);
  } else {
    apply_overrides(args, 1, r.config);
    if (args.given("--encoder-weights")) r.config.encoder_normalization = "clip";
  }
  if (args.image.empty() || args.mask.empty() || args.class_word.empty())
    throw Error("--image, --mask and --class are required");
  validate_trigger(args.trigger, "--trigger");

  SourceImages images{load_picture(args.image, "image"), load_picture(args.mask, "mask")};
  r.run.image_sha256 = sha256_of_file(args.image);
  r.run.mask_sha256 = sha256_of_file(args.mask);
  r.bundle = load_model_bundle(args.model.model, execution, args.model.sources);
  r.run.unet_sha256 = base_model_sha256(*r.bundle);
  r.run.dtype = args.dtype;
  if (checkpoint) r.run.require_same_as(saved->second);
  if (r.bundle->tokenizer.is_vocabulary_token(args.trigger) || r.bundle->tokenizer.is_vocabulary_token(args.trigger + "</w>"))
    spdlog::warn("the trigger '{}' is also a word of the model's vocabulary; in prompts with this concept it will "
                 "mean the concept (choose another with --trigger if that is a problem)",
                 args.trigger);
  if (r.bundle->tokenizer.encode(args.class_word).empty())
    throw Error(fmt::format("the class word '{}' tokenizes to nothing", args.class_word));
  const int64_t factor = r.bundle->vae_scale_factor();
  if (r.config.resolution % factor != 0)
    throw Error(fmt::format("--resolution {} is not a multiple of the VAE factor {}", r.config.resolution, factor));
  r.source = prepare_source(images, r.config.resolution, r.config.resolution / static_cast<int>(factor),
                            static_cast<int>(r.config.encoder.image_size), r.config.encoder_normalization,
                            args.crop == "none" ? CropMode::kNone : CropMode::kCenter);
  for (const auto& warning : r.source.warnings) spdlog::warn("{}", warning);

  r.encoder = make_encoder(r.config, r.bundle->text_encoder->config().encoder.hidden_size);
  at::Generator generator = make_cpu_generator(r.config.seed);
  r.encoder->init_like_openai(generator);
  if (!args.encoder_weights.empty()) {
    // A CLIP vision checkpoint in transformers' layout: the backbone only; the projection onto
    // the word-embedding space stays freshly initialised.
    LoadOptions options;
    options.prefix = "vision_model.";
    options.tolerated_extra_keys = {"embeddings.position_ids"};
    load_state_dict(*r.encoder->vision_model, SafetensorsFile::open(args.encoder_weights), options);
  }
  r.run.model = args.model.model;
  r.run.trigger = args.trigger;
  r.run.class_word = args.class_word;
  r.run.source_image = fs::absolute(args.image).string();
  r.run.source_mask = fs::absolute(args.mask).string();
  r.run.training_json = r.config.to_json();
  train_and_write(r, 1, builder, args, checkpoint, 0.0);
}

// finetune --method dreambooth-lora: LoRA on the image under "a photo of <trigger> <class>", from a
// stage I concept of any method (its embedding fixed) or from a plain word (--image, --class).
void run_dreambooth(FinetuneArgs& args, ConceptBuilder& builder,
                    const std::optional<std::pair<TrainingState, std::string>>& saved) {
  const ExecutionOptions execution = make_execution_options(args.device, args.dtype);
  DreamBoothLoraConfig config;
  config.apply_json(method_preset_json("dreambooth-lora"), "dreambooth-lora");
  std::optional<TrainingState> checkpoint;
  if (saved) {
    const auto run = nlohmann::json::parse(saved->second);
    config = DreamBoothLoraConfig();
    config.apply_json(run.at("training").dump(), "checkpoint");
    checkpoint = saved->first;
    args.concept = run.at("parent_concept");
    args.image = run.at("source_image");
    args.class_word = run.at("class");
    args.trigger = run.at("trigger");
    spdlog::info("resuming dreambooth-lora at step {} with the interrupted run's settings", checkpoint->step);
  } else {
    if (args.given("--preset")) config.apply_json(method_preset_json(args.preset), args.preset);
    if (args.given("--steps")) config.steps = args.steps;
    if (args.given("--batch")) config.batch = args.batch;
    if (args.given("--lr")) config.learning_rate = args.lr;
    if (args.given("--seed")) config.step.seed = args.seed;
    if (args.given("--checkpoint-every")) config.step.checkpoint_every = args.checkpoint_every;
    if (args.given("--lora-rank")) config.lora_rank = args.lora_rank;
    if (args.given("--prior-images")) config.prior_images = args.prior_images;
    if (args.train_text_encoder) config.train_text_encoder = true;
    for (const char* flag : {"--bg-weight", "--sm-weight", "--sm-reference", "--attn-weight", "--attn-layers", "--attn-reference"})
      if (args.given(flag)) throw Error(fmt::format("{} is a SingleInsert setting; dreambooth-lora does not use it", flag));
    config.validate();
  }
  // The fixed embedding: a resumed run's own copy, else the stage I concept's.
  at::Tensor vectors;
  if (checkpoint)
    for (const auto& [name, tensor] : checkpoint->trainable)
      if (name == "vectors") vectors = tensor;
  std::optional<Concept> parent;
  if (!args.concept.empty() && !vectors.defined()) {
    parent = Concept::load(args.concept);
    if (parent->stage != 1)
      throw Error(fmt::format("{}: already finetuned (stage {}); dreambooth-lora starts from a stage I concept",
                              args.concept, parent->stage));
    if (parent->kv_keys.defined())
      throw Error(fmt::format("{}: holds per-stage tokens (beyond-inserting), which dreambooth-lora cannot carry; "
                              "train it with --no-kv-tokens to continue it",
                              args.concept));
    if (!args.image.empty() && !saved) throw Error("give --concept or --image, not both (a concept brings its image)");
    args.image = parent->source_image_file();
    args.class_word = parent->class_word;
    args.trigger = parent->trigger;
    vectors = parent->embedding;
  }
  if (args.image.empty() || args.class_word.empty())
    throw Error("dreambooth-lora needs --concept (a stage I concept) or --image and --class");
  validate_trigger(args.trigger, "--trigger");
  const at::Tensor image = load_picture(args.image, "image");
  const std::string image_sha256 = sha256_of_file(args.image);
  auto bundle = load_model_bundle(args.model.model, execution, args.model.sources);
  require_epsilon_prediction(*bundle, "dreambooth-lora");
  const std::string model_hash = base_model_sha256(*bundle);
  if (parent && !parent->base_model_sha256.empty() && parent->base_model_sha256 != model_hash)
    throw Error(fmt::format("{}: trained on another base model (its UNet sha256 {} differs from {}'s {})", args.concept,
                            parent->base_model_sha256.substr(0, 12), args.model.model, model_hash.substr(0, 12)));
  RunDescription run;
  run.model = args.model.model;
  run.trigger = args.trigger;
  run.class_word = args.class_word;
  run.source_image = fs::absolute(args.image).string();
  run.image_sha256 = image_sha256;
  run.unet_sha256 = model_hash;
  run.dtype = args.dtype;
  run.parent_concept = args.concept.empty() ? "" : fs::absolute(args.concept).string();
  run.training_json = config.to_json();
  if (saved) run.require_same_as(saved->second);
  const std::string run_json = run.to_json();
  if (bundle->tokenizer.encode(args.class_word).empty())
    throw Error(fmt::format("the class word '{}' tokenizes to nothing", args.class_word));
  const int64_t factor = bundle->vae_scale_factor();
  if (config.resolution % factor != 0)
    throw Error(fmt::format("--resolution {} is not a multiple of the VAE factor {}", config.resolution, factor));

  // The trigger: the concept's tokens with their fixed vectors, or a word of the vocabulary.
  std::vector<std::string> tokens = {args.trigger};
  int64_t first_id = -1;
  at::Tensor embedding;
  if (vectors.defined()) {
    tokens = vector_tokens(args.trigger, static_cast<int>(vectors.size(0)));
    first_id = bundle->tokenizer.add_token(tokens[0]);
    for (size_t k = 1; k < tokens.size(); ++k)
      if (bundle->tokenizer.add_token(tokens[k]) != first_id + static_cast<int64_t>(k))
        throw Error(fmt::format("the token '{}' is already taken", tokens[k]));
    bundle->text_encoder->resize_token_embeddings(bundle->tokenizer.vocab_size());
    embedding = vectors;
  } else {
    // A plain word's embedding is the word's own: generate then adds the trigger unchanged.
    const std::vector<int64_t> ids = bundle->tokenizer.encode(args.trigger);
    if (ids.size() != 1)
      throw Error(fmt::format("the trigger '{}' is {} tokens; without --concept it must be one word of the vocabulary",
                              args.trigger, ids.size()));
    embedding = bundle->text_encoder->text_model->embeddings->token_embedding->weight[ids[0]]
                    .detach()
                    .to(at::kFloat)
                    .cpu()
                    .unsqueeze(0);
  }

  // Prior preservation: the base model's own images of the class, drawn once and kept with the
  // run (redrawn when the class, seed, size or model differ from the ones they were drawn for).
  at::Tensor class_pixels;
  if (config.prior_images > 0) {
    const fs::path folder = fs::path(builder.staging()) / "class_images";
    const std::string drawn_for = nlohmann::json{{"class", args.class_word},
                                                 {"seed", config.step.seed},
                                                 {"resolution", config.resolution},
                                                 {"unet_sha256", model_hash}}
                                      .dump();
    const fs::path settings = folder / "settings.json";
    if (fs::exists(folder) && (!fs::exists(settings) || read_file(settings.string()) != drawn_for)) fs::remove_all(folder);
    fs::create_directories(folder);
    write_file_atomic(settings.string(), drawn_for);
    std::vector<at::Tensor> images;
    for (int i = 0; i < config.prior_images; ++i) {
      const fs::path file = folder / fmt::format("{:04}.png", i);
      if (!fs::exists(file)) {
        if (interrupt_requested()) throw Error("interrupted while drawing the class images");
        GenerateOptions options;
        options.prompts = {"a photo of " + args.class_word};
        options.seed = config.step.seed + static_cast<uint64_t>(i);
        options.width = options.height = config.resolution;
        const GeneratedImages generated = generate(*bundle, options);
        write_png(file.string() + ".tmp.png", generated.pixels[0]);
        fs::rename(file.string() + ".tmp.png", file);
        spdlog::info("class image {}/{} for prior preservation", i + 1, config.prior_images);
      }
      images.push_back(to_signed_unit_tensor(read_image_rgb(file.string()).pixels));
    }
    class_pixels = at::cat(images);
  }

  std::string subject;
  for (const auto& token : tokens) subject += token + " ";
  const at::Tensor instance_ids = tokenize_prompts(bundle->tokenizer, {"a photo of " + subject + args.class_word});
  const at::Tensor class_ids = tokenize_prompts(bundle->tokenizer, {"a photo of " + args.class_word});
  const at::Tensor square = square_image(image, CropMode::kCenter, args.image);
  const at::Tensor pixels = to_signed_unit_tensor(pil_resize_bilinear(square, config.resolution, config.resolution));


  DreamBoothLora method(base_model(*bundle), config, pixels, class_pixels, instance_ids, class_ids, first_id, vectors,
                        checkpoint ? &checkpoint->lora : nullptr);
  const auto [history, seconds] = run_method(
      [&](const TrainingCallbacks& callbacks) {
        return run_steps(method, method.step_options(), callbacks, checkpoint ? &*checkpoint : nullptr);
      },
      builder, run_json, args.log_json);

  const LoraWeightMap lora = method.lora_weights();
  builder.write_embedding(args.trigger, embedding);
  builder.write_lora(lora, config.lora_rank, config.lora_rank);
  write_png(builder.staged("source.png"), square);
  if (parent && fs::exists(parent->mask_file())) fs::copy_file(parent->mask_file(), builder.staged("mask.png"));
  if (!history.empty()) write_png(builder.staged("loss.png"), plot_history(history, "dreambooth-lora loss (log scale)"));
  fs::remove_all(fs::path(builder.staging()) / "class_images");
  if (args.preview)
    write_preview(builder, *bundle, tokens, first_id, embedding, args.class_word, config.resolution, config.step.seed);

  ConceptRecord record = concept_record(run, "dreambooth-lora", 2, *bundle, embedding);
  if (parent) {
    const auto parent_json = nlohmann::json::parse(parent->json);
    if (parent_json.contains("wall_time_seconds") && parent_json["wall_time_seconds"].is_object())
      record.stage1_seconds = parent_json["wall_time_seconds"].value("stage1", 0.0);
  }
  record.stage2_seconds = seconds;
  record.history = history;
  record.lora = ConceptRecord::Lora{config.lora_rank, static_cast<double>(config.lora_rank), lora.size(),
                                    run.parent_concept};
  finish_concept(builder, record, args.out, "dreambooth-lora", config.steps, seconds);
}

void run_finetune(FinetuneArgs& args) {
  install_interrupt_handler();
  {
    std::optional<ConceptBuilder> builder;
    std::optional<std::pair<TrainingState, std::string>> saved;
    if (args.resume) {  // a resumed run continues with the method it was started with
      builder.emplace(args.out, args.overwrite, args.resume);
      saved = load_checkpoint_or_start_over(*builder);
      if (saved) args.method = nlohmann::json::parse(saved->second).at("training").value("method", "singleinsert");
      adopt_saved_dtype(args, saved);
    }
    if (args.method == "dreambooth-lora") {
      if (!builder) builder.emplace(args.out, args.overwrite, args.resume);
      return run_dreambooth(args, *builder, saved);
    }
  }
  for (const char* flag : {"--image", "--class", "--trigger", "--prior-images", "--train-text-encoder"})
    if (args.given(flag)) throw Error(fmt::format("{} is a dreambooth-lora setting (see --method)", flag));
  if (args.concept.empty()) throw Error("--concept is required (the stage I concept to finetune)");
  const Concept parent = Concept::load(args.concept);
  if (parent.method != "singleinsert")
    throw Error(fmt::format("{}: trained with {}; finetune --method singleinsert continues a SingleInsert stage I "
                            "concept (it starts from its image encoder); --method dreambooth-lora continues any",
                            args.concept, parent.method));
  if (parent.stage != 1)
    throw Error(fmt::format("{}: already finetuned (stage {}); finetune starts from a stage I concept made by invert",
                            args.concept, parent.stage));
  ConceptBuilder builder(args.out, args.overwrite, args.resume);
  StageRun r;
  const auto parent_json = nlohmann::json::parse(parent.json);
  r.config.apply_json(parent_json.at("training").dump(), args.concept + "/concept.json");
  std::optional<TrainingState> checkpoint;
  auto saved = args.resume ? load_checkpoint_or_start_over(builder) : std::nullopt;
  adopt_saved_dtype(args, saved);
  const ExecutionOptions execution = make_execution_options(args.device, args.dtype);
  if (saved) {
    r.config = TrainingConfig();
    r.config.apply_json(nlohmann::json::parse(saved->second).at("training").dump(), "checkpoint");
    checkpoint = saved->first;
  } else {
    if (args.given("--preset")) {
      TrainingConfig preset;
      preset.apply_json(preset_json(args.preset), args.preset);
      r.config.stage2 = preset.stage2;
      r.config.sm_weight = preset.sm_weight;
      r.config.sm_reference = preset.sm_reference;
      r.config.lora_rank = preset.lora_rank;
      r.config.lora_alpha = preset.lora_alpha;
    }
    apply_overrides(args, 2, r.config);
  }
  SourceImages images{load_picture(parent.source_image_file(), "image"), load_picture(parent.mask_file(), "mask")};
  r.bundle = load_model_bundle(args.model.model, execution, args.model.sources);
  const std::string model_hash = base_model_sha256(*r.bundle);
  if (!parent.base_model_sha256.empty() && parent.base_model_sha256 != model_hash)
    throw Error(fmt::format("{}: trained on another base model (its UNet sha256 {} differs from {}'s {})", args.concept,
                            parent.base_model_sha256.substr(0, 12), args.model.model, model_hash.substr(0, 12)));
  const int64_t factor = r.bundle->vae_scale_factor();
  r.source = prepare_source(images, r.config.resolution, r.config.resolution / static_cast<int>(factor),
                            static_cast<int>(r.config.encoder.image_size), r.config.encoder_normalization, CropMode::kCenter);
  r.encoder = make_encoder(r.config, r.bundle->text_encoder->config().encoder.hidden_size);
  load_state_dict(*r.encoder, SafetensorsFile::open(parent.encoder_file()));
  r.earlier_history = parse_history(previous_history(parent.json));
  r.run.model = args.model.model;
  r.run.trigger = parent.trigger;
  r.run.class_word = parent.class_word;
  r.run.parent_concept = fs::absolute(args.concept).string();
  r.run.image_sha256 = parent_json.at("source").value("image_sha256", "");
  r.run.mask_sha256 = parent_json.at("source").value("mask_sha256", "");
  r.run.source_image = parent_json.at("source").value("image", "");
  r.run.source_mask = parent_json.at("source").value("mask", "");
  r.run.training_json = r.config.to_json();
  r.run.unet_sha256 = model_hash;
  r.run.dtype = args.dtype;
  if (checkpoint) r.run.require_same_as(saved->second);
  const double stage1_seconds = parent_json.at("wall_time_seconds").value("stage1", 0.0);
  train_and_write(r, 2, builder, args, checkpoint, stage1_seconds);
}

}  // namespace

void add_invert_command(CLI::App& app) {
  auto args = std::make_shared<InvertArgs>();
  CLI::App* command = app.add_subcommand("invert", "Stage I: learn a concept's word embedding from one image and mask");
  add_common_flags(command, *args, 1);
  command->add_option("--image", args->image, "The concept's photo");
  command->add_option("--mask", args->mask, "Its foreground mask (white = the concept), same size");
  command->add_option("--class", args->class_word, "The class word, e.g. face, hair, toy");
  command->add_option("--trigger", args->trigger, "The word that stands for the concept in prompts")
      ->capture_default_str();
  command->add_option("--resolution", args->resolution, "Training resolution (preset: 512)");
  command->add_option("--encoder-weights", args->encoder_weights,
                      "Start the image encoder from a CLIP ViT-B/32 vision checkpoint (transformers layout)");
  command->add_option("--crop", args->crop,
                      "center: centre-crop non-square images; none: refuse them (textual-inversion and cross-init "
                      "stretch the whole image to a square unless --crop is given, as their references do)")
      ->check(CLI::IsMember({"center", "none"}))
      ->capture_default_str();
  command->add_option("--method", args->method,
                      "singleinsert (image encoder, masked losses), textual-inversion (diffusers' script), "
                      "cross-init (Cross Initialization) or beyond-inserting (identity embedding with the face-wise "
                      "attention loss and per-stage tokens); the mask is optional for the last three")
      ->check(CLI::IsMember({"singleinsert", "textual-inversion", "cross-init", "beyond-inserting"}))
      ->capture_default_str();
  command->add_option("--num-vectors", args->num_vectors, "textual-inversion, cross-init: vectors the trigger stands for");
  command->add_option("--init-word", args->init_word,
                      "textual-inversion, beyond-inserting: the one-token word to start from (default: --class)");
  command->add_option("--init-names", args->init_names, "cross-init: a file of names, one per line, to start from");
  command->add_option("--init-words", args->init_words, "cross-init: words to start from instead of a names file");
  command->add_option("--reg-weight", args->reg_weight, "cross-init: weight of the pull towards the start");
  command->add_flag("--fast", args->fast, "cross-init: the fast version's preset (fewer steps)");
  command->add_flag("--no-kv-tokens", args->no_kv_tokens,
                    "beyond-inserting: one token everywhere instead of per-stage key/value tokens");
  command->callback([args] { run_invert(*args); });
}

void add_finetune_command(CLI::App& app) {
  auto args = std::make_shared<FinetuneArgs>();
  CLI::App* command =
      app.add_subcommand("finetune", "Stage II: refine a stage I concept with LoRA on the UNet and text encoder");
  add_common_flags(command, *args, 2);
  command->add_option("--concept", args->concept, "The stage I concept folder (from invert)");
  command->add_option("--method", args->method,
                      "singleinsert (stage II of a SingleInsert concept) or dreambooth-lora (LoRA under \"a photo of "
                      "* <class>\", from a stage I concept of any method or from --image and --class)")
      ->check(CLI::IsMember({"singleinsert", "dreambooth-lora"}))
      ->capture_default_str();
  command->add_option("--image", args->image, "dreambooth-lora without --concept: the photo");
  command->add_option("--class", args->class_word, "dreambooth-lora without --concept: the class word");
  command->add_option("--trigger", args->trigger, "dreambooth-lora without --concept: the word for the subject")
      ->capture_default_str();
  command->add_option("--prior-images", args->prior_images,
                      "dreambooth-lora: class images the base model draws first, for prior preservation (0: none)");
  command->add_flag("--train-text-encoder", args->train_text_encoder, "dreambooth-lora: LoRA on the text encoder too");
  command->add_option("--sm-weight", args->sm_weight, "Weight eta of the semantic loss");
  command->add_option("--lora-rank", args->lora_rank, "LoRA rank (preset: 4)");
  command->add_option("--sm-reference", args->sm_reference,
                      "frozen: the paper's fully frozen reference (default); lora-text-encoder: the authors' code");
  command->callback([args] { run_finetune(*args); });
}

}  // namespace singleinsert::cli
