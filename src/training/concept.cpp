#include "singleinsert/training/concept.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <set>
#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/tensor_format.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/json_int.h"
#include "singleinsert/formats/lora_layouts.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

// A whole-number field of a file that fits an int: a fraction or a number beyond int's range is a
// clear error (converting it would be undefined behaviour).
int int_field(const nlohmann::json& json, const char* key, const char* file) {
  const nlohmann::json& value = json.at(key);
  if (const auto v = json_as_int(value)) return *v;
  throw Error(fmt::format("{}: \"{}\" should be an integer (within +-2147483647), not {}", file, key, value.dump()));
}

// The fields every history row has; any other number in a row is a loss term.
const std::set<std::string> kRecordFields = {"stage", "step", "loss", "grad_norm", "lr", "seconds"};

std::string partial_path(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.string() + ".partial";
}

std::map<std::string, at::Tensor> tensors_of(const std::string& file) {
  return read_all_tensors(SafetensorsFile::open(file));
}

}  // namespace

std::string history_json(const std::vector<StepRecord>& history) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : history) {
    nlohmann::json row = {{"stage", r.stage}, {"step", r.step}, {"loss", r.loss}};
    for (const auto& [name, value] : r.terms) row[name] = value;  // a method's loss terms, by name
    row["grad_norm"] = r.grad_norm;
    row["lr"] = r.lr;
    row["seconds"] = r.seconds;
    rows.push_back(std::move(row));
  }
  return rows.dump();
}

std::vector<StepRecord> parse_history(const std::string& json) {
  std::vector<StepRecord> out;
  try {
    for (const auto& row : nlohmann::json::parse(json)) {
      StepRecord r;
      r.stage = int_field(row, "stage", "the training history");
      r.step = int_field(row, "step", "the training history");
      r.loss = row.at("loss");
      for (const auto& [key, value] : row.items())
        if (value.is_number() && !kRecordFields.count(key)) r.terms.emplace_back(key, value.get<double>());
      r.grad_norm = row.value("grad_norm", 0.0);
      r.lr = row.value("lr", 0.0);
      r.seconds = row.value("seconds", 0.0);
      out.push_back(r);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("a malformed training history ({})", e.what()));
  }
  return out;
}

std::string concept_json(const ConceptRecord& record) {
  // The last row of a stage: its loss and terms (null when the concept has no such stage).
  auto final_losses = [&](int stage) {
    for (auto it = record.history.rbegin(); it != record.history.rend(); ++it)
      if (it->stage == stage) {
        nlohmann::json losses = {{"loss", it->loss}};
        for (const auto& [name, value] : it->terms) losses[name] = value;
        return losses;
      }
    return nlohmann::json();
  };
  nlohmann::json source = {{"image", record.image}, {"image_sha256", record.image_sha256}};
  if (!record.mask.empty()) {
    source["mask"] = record.mask;
    source["mask_sha256"] = record.mask_sha256;
  }
  if (record.foreground_fraction) source["foreground_fraction"] = *record.foreground_fraction;
  nlohmann::json json = {
      {"format_version", kConceptFormatVersion},
      {"kind", "singleinsert-concept"},
      {"method", record.method},
      {"trigger", record.trigger},
      {"class", record.class_word},
      {"stage", record.stage},
      {"base_model", {{"path", record.model_path}, {"unet_sha256", record.unet_sha256}}},
      {"source", std::move(source)},
      {"training", nlohmann::json::parse(record.training_json)},
      {"embedding",
       {{"file", "embedding.safetensors"}, {"width", record.embedding_width}, {"vectors", record.embedding_vectors}}},
      {"wall_time_seconds", {{"stage1", record.stage1_seconds}, {"stage2", record.stage2_seconds}}},
      {"final_losses", {{"stage1", final_losses(1)}, {"stage2", final_losses(2)}}},
      {"history", nlohmann::json::parse(history_json(record.history))},
      {"device", record.device},
      {"created_by", "singleinsert"}};
  if (!record.init_json.empty()) json["init"] = nlohmann::json::parse(record.init_json);
  if (record.kv_stages > 0) json["kv_tokens"] = {{"file", "kv_tokens.safetensors"}, {"stages", record.kv_stages}};
  if (record.lora)
    json["lora"] = {{"file", "lora.safetensors"},
                    {"layout", "diffusers-processor"},
                    {"rank", record.lora->rank},
                    {"alpha", record.lora->alpha},
                    {"modules", record.lora->modules},
                    {"parent_concept", record.lora->parent_concept}};
  return json.dump(2) + "\n";
}

Concept Concept::load(const std::string& path) {
  if (!fs::is_directory(path)) {
    if (fs::exists(partial_path(path)))
      throw Error(fmt::format("{}: not finished: an interrupted run is in {} (resume it with --resume)", path,
                              partial_path(path)));
    throw Error(fmt::format("{}: no such concept folder", path));
  }
  const fs::path dir(path);
  if (!fs::exists(dir / "concept.json")) throw Error(fmt::format("{}: not a concept folder (no concept.json)", path));
  Concept concept;
  concept.path = path;
  concept.json = read_file((dir / "concept.json").string());
  nlohmann::json info;
  try {
    info = nlohmann::json::parse(concept.json);
    const int format = info.contains("format_version") ? int_field(info, "format_version", "concept.json") : 0;
    if (format > kConceptFormatVersion)
      throw Error(fmt::format("{}: concept format {} is newer than this singleinsert reads ({})", path, format,
                              kConceptFormatVersion));
    concept.trigger = info.at("trigger").get<std::string>();
    concept.class_word = info.at("class").get<std::string>();
    concept.method = info.value("method", "singleinsert");
    concept.stage = int_field(info, "stage", "concept.json");
    if (concept.stage != 1 && concept.stage != 2)
      throw Error(fmt::format("{}: concept.json names stage {} (a concept is stage 1 or 2)", path, concept.stage));
    concept.base_model_sha256 = info.at("base_model").value("unet_sha256", "");
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: concept.json is incomplete ({})", path, e.what()));
  }
  const auto embeddings = tensors_of((dir / "embedding.safetensors").string());
  if (embeddings.size() != 1) throw Error(fmt::format("{}: embedding.safetensors must hold one tensor", path));
  concept.embedding = embeddings.begin()->second.to(at::kFloat);
  if (concept.embedding.dim() == 1) concept.embedding = concept.embedding.unsqueeze(0);
  const fs::path kv_file = dir / "kv_tokens.safetensors";
  if (fs::exists(kv_file)) {
    const auto tokens = tensors_of(kv_file.string());
    const auto keys = tokens.find("keys"), values = tokens.find("values");
    if (tokens.size() != 2 || keys == tokens.end() || values == tokens.end())
      throw Error(fmt::format("{}: kv_tokens.safetensors must hold 'keys' and 'values'", path));
    concept.kv_keys = keys->second.to(at::kFloat);
    concept.kv_values = values->second.to(at::kFloat);
    if (concept.kv_keys.dim() != 2 || !concept.kv_keys.sizes().equals(concept.kv_values.sizes()) ||
        concept.kv_keys.size(1) != concept.embedding.size(1) || concept.embedding.size(0) != 1)
      throw Error(fmt::format("{}: kv_tokens.safetensors holds keys {} and values {} for an embedding {}", path,
                              shape_string(concept.kv_keys.sizes()), shape_string(concept.kv_values.sizes()),
                              shape_string(concept.embedding.sizes())));
  }
  if (concept.stage == 2) {
    const fs::path lora_file = dir / "lora.safetensors";
    if (!fs::exists(lora_file)) throw Error(fmt::format("{}: a stage II concept without lora.safetensors", path));
    const SafetensorsFile file = SafetensorsFile::open(lora_file.string());
    concept.lora_rank = static_cast<int64_t>(std::min(lora_metadata_number(file, "lora_rank"), 1e9));
    concept.lora_alpha = lora_metadata_number(file, "lora_alpha");
    concept.lora = from_diffusers_processor_layout(read_all_tensors(file), file.path(), concept.lora_alpha);
  }
  return concept;
}

std::string Concept::encoder_file() const { return (fs::path(path) / "encoder.safetensors").string(); }
std::string Concept::source_image_file() const { return (fs::path(path) / "source.png").string(); }
std::string Concept::mask_file() const { return (fs::path(path) / "mask.png").string(); }

ConceptBuilder::ConceptBuilder(const std::string& path, bool overwrite, bool resume)
    : path_(path), staging_(partial_path(path)), overwrite_(overwrite) {
  std::error_code error;
  if (fs::exists(path_, error) && !overwrite)
    throw Error(fmt::format("{}: already exists (pass --overwrite to replace it)", path_));
  if (fs::exists(staging_, error)) {
    if (overwrite && !resume) fs::remove_all(staging_, error);
    else if (!resume)
      throw Error(fmt::format("{}: an interrupted run left {} (pass --resume to continue it, or --overwrite to "
                              "start over)",
                              path_, staging_));
  } else if (resume) {
    // Killed before it had created anything: --resume starts the run rather than refusing.
    spdlog::warn("{}: nothing to resume (no {}); starting from the beginning", path_, staging_);
  }
  ensure_writable_directory(staging_);
}

ConceptBuilder::~ConceptBuilder() {
  std::error_code error;
  if (!committed_ && !fs::exists(fs::path(staging_) / "checkpoint", error) &&
      !fs::exists(fs::path(staging_) / "checkpoint.old", error))
    fs::remove_all(staging_, error);
}

std::string ConceptBuilder::staged(const std::string& name) const { return (fs::path(staging_) / name).string(); }

void ConceptBuilder::save_checkpoint(const TrainingState& state, const std::string& run_json) {
  const fs::path next = fs::path(staging_) / "checkpoint.next", current = fs::path(staging_) / "checkpoint";
  fs::remove_all(next);
  fs::create_directories(next);
  save_safetensors((next / "trainable.safetensors").string(), state.trainable);
  if (!state.lora.empty()) save_safetensors((next / "lora.safetensors").string(), to_diffusers_processor_layout(state.lora));
  save_safetensors((next / "optimizer.safetensors").string(), state.optimizer);
  const nlohmann::json json = {{"stage", state.stage},
                               {"step", state.step},
                               {"history", nlohmann::json::parse(history_json(state.history))},
                               {"run", nlohmann::json::parse(run_json)}};
  write_file_atomic((next / "state.json").string(), json.dump(1));
  // Swap in the new checkpoint: the old one stays valid until the new one is complete.
  const fs::path old = fs::path(staging_) / "checkpoint.old";
  fs::remove_all(old);
  if (fs::exists(current)) fs::rename(current, old);
  fs::rename(next, current);
  fs::remove_all(old);
}

std::optional<std::pair<TrainingState, std::string>> ConceptBuilder::load_checkpoint() const {
  fs::path dir = fs::path(staging_) / "checkpoint";
  if (!fs::exists(dir / "state.json")) {
    dir = fs::path(staging_) / "checkpoint.old";  // interrupted while swapping
    if (!fs::exists(dir / "state.json")) return std::nullopt;
  }
  const std::string state_file = (dir / "state.json").string();
  TrainingState state;
  std::string run;
  try {
    const auto json = nlohmann::json::parse(read_file(state_file));
    state.stage = int_field(json, "stage", "state.json");
    state.step = int_field(json, "step", "state.json");
    state.history = parse_history(json.at("history").dump());
    run = json.at("run").dump();
    if ((state.stage != 1 && state.stage != 2) || state.step < 0)
      throw Error(fmt::format("stage {} step {}", state.stage, state.step));
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: the interrupted run's checkpoint is damaged ({}); start over with --overwrite",
                            state_file, e.what()));
  }
  // Checkpoints written before the shared step loop named SingleInsert's encoder encoder.safetensors.
  const fs::path trainable = fs::exists(dir / "trainable.safetensors") ? dir / "trainable.safetensors"
                                                                        : dir / "encoder.safetensors";
  for (const auto& [key, tensor] : tensors_of(trainable.string())) state.trainable.emplace_back(key, tensor);
  for (const auto& [key, tensor] : tensors_of((dir / "optimizer.safetensors").string())) state.optimizer.emplace_back(key, tensor);
  if (fs::exists(dir / "lora.safetensors"))
    state.lora = from_diffusers_processor_layout(tensors_of((dir / "lora.safetensors").string()), "checkpoint");
  return std::make_pair(std::move(state), run);
}

void ConceptBuilder::write_embedding(const std::string& trigger, const at::Tensor& embedding) {
  save_safetensors(staged("embedding.safetensors"), {{trigger, embedding.detach().cpu().to(at::kFloat).contiguous()}},
                   {{"format", "pt"}});
}

void ConceptBuilder::write_lora(const LoraWeightMap& lora, int64_t rank, double alpha) {
  save_safetensors(staged("lora.safetensors"), to_diffusers_processor_layout(lora),
                   {{"format", "pt"}, {"lora_rank", std::to_string(rank)}, {"lora_alpha", fmt::format("{}", alpha)},
                    {"layout", "diffusers-processor"}});
}

void ConceptBuilder::write_encoder(const NamedTensors& encoder) {
  save_safetensors(staged("encoder.safetensors"), encoder, {{"format", "pt"}});
}

void ConceptBuilder::write_kv_tokens(const at::Tensor& tokens) {
  const at::Tensor rows = tokens.detach().cpu().to(at::kFloat);
  const int64_t stages = rows.size(0) / 2;
  save_safetensors(staged("kv_tokens.safetensors"),
                   {{"keys", rows.narrow(0, 0, stages).contiguous()}, {"values", rows.narrow(0, stages, stages).contiguous()}},
                   {{"format", "pt"}, {"stages", std::to_string(stages)}});
}

void ConceptBuilder::write_json(const std::string& json) { write_file_atomic(staged("concept.json"), json); }

void ConceptBuilder::commit() {
  std::error_code error;
  for (const char* leftover : {"checkpoint", "checkpoint.next", "checkpoint.old"})
    fs::remove_all(fs::path(staging_) / leftover, error);
  fs::path old;
  if (fs::exists(path_)) {
    if (!overwrite_) throw Error(fmt::format("{}: appeared while training (not overwritten)", path_));
    old = fs::path(staging_ + ".replaced");
    fs::remove_all(old, error);
    fs::rename(path_, old);
  }
  fs::rename(staging_, path_);
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, error);
}

}  // namespace singleinsert
