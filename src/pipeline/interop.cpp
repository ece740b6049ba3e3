#include "singleinsert/pipeline/interop.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/tensor_format.h"
#include "singleinsert/formats/embeddings.h"
#include "singleinsert/formats/ldm_checkpoint.h"
#include "singleinsert/formats/lora_layouts.h"
#include "singleinsert/training/concept.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

std::map<std::string, std::string> lora_metadata(const Concept& concept) {
  return {{"format", "pt"},
          {"ss_network_module", "networks.lora"},
          {"ss_network_dim", std::to_string(concept.lora_rank)},
          {"ss_network_alpha", fmt::format("{}", concept.lora_alpha)},
          {"ss_base_model_version", "sd_v1"},
          {"singleinsert_trigger", concept.trigger},
          {"singleinsert_class", concept.class_word}};
}

std::string human_count(int64_t n) {
  if (n >= 1000000) return fmt::format("{:.1f}M", static_cast<double>(n) / 1e6);
  if (n >= 1000) return fmt::format("{:.1f}k", static_cast<double>(n) / 1e3);
  return std::to_string(n);
}

std::string dtypes_of(const SafetensorsFile& file) {
  std::set<std::string> names;
  for (const auto& key : file.keys()) names.insert(dtype_string(file.entry(key).dtype));
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

int64_t parameter_count(const SafetensorsFile& file) {
  int64_t total = 0;
  for (const auto& key : file.keys()) {
    int64_t n = 1;
    for (int64_t d : file.entry(key).shape) n *= d;
    total += n;
  }
  return total;
}

void describe_lora(const SafetensorsFile& file, std::vector<std::pair<std::string, std::string>>& rows) {
  const auto tensors = read_all_tensors(file);
  const LoraLayout layout = detect_lora_layout(tensors, file.path());
  std::set<int64_t> ranks;
  std::set<double> alphas;
  size_t unet = 0, text = 0, modules = 0, convs = 0, embedded = 0;
  for (const auto& [key, tensor] : tensors) {
    const bool down = key.find("lora_down") != std::string::npos || key.find("lora_A") != std::string::npos ||
                      key.find(".down.weight") != std::string::npos;
    if (key.find("bundle_emb.") == 0) ++embedded;
    if (key.size() > 6 && key.compare(key.size() - 6, 6, ".alpha") == 0) alphas.insert(tensor.item<double>());
    if (!down) continue;
    ++modules;
    ranks.insert(tensor.size(0));
    convs += tensor.dim() == 4;
    (key.find("unet") != std::string::npos ? unet : text) += 1;
  }
  rows.push_back({"kind", "LoRA"});
  rows.push_back({"layout", lora_layout_name(layout)});
  rows.push_back({"modules", fmt::format("{} ({} UNet, {} text encoder, {} convolutions)", modules, unet, text, convs)});
  std::string r;
  for (int64_t rank : ranks) r += (r.empty() ? "" : ", ") + std::to_string(rank);
  rows.push_back({"rank", r});
  std::string a;
  for (double alpha : alphas) a += (a.empty() ? "" : ", ") + fmt::format("{}", alpha);
  if (alphas.empty() && file.metadata().count("lora_alpha")) a = file.metadata().at("lora_alpha");
  rows.push_back({"alpha", a.empty() ? "none (factor 1)" : a});
  if (embedded) rows.push_back({"bundled embeddings", std::to_string(embedded)});
}

}  // namespace

ExportFormat parse_export_format(const std::string& name) {
  if (name == "a1111") return ExportFormat::kA1111;
  if (name == "diffusers") return ExportFormat::kDiffusers;
  if (name == "diffusers-legacy") return ExportFormat::kDiffusersLegacy;
  if (name == "kohya") return ExportFormat::kKohya;
  throw Error(fmt::format("unknown export format '{}' (a1111, diffusers, diffusers-legacy or kohya)", name));
}

std::vector<std::string> export_concept(const std::string& concept_dir, ExportFormat format, const std::string& out,
                                        const std::string& name, bool bundle_embedding) {
  const Concept concept = Concept::load(concept_dir);
  if (bundle_embedding && format != ExportFormat::kKohya)
    throw Error("--bundle-embedding is for --format kohya (the other layouts keep the embedding in its own file)");
  // No other tool reads per-stage key/value tokens: a single embedding would silently be another concept.
  if (concept.kv_keys.defined())
    throw Error(fmt::format("{}: holds Beyond Inserting's per-stage key/value tokens, which no other tool's format "
                            "(A1111 or diffusers embeddings, kohya) can carry; use it with singleinsert generate, or "
                            "train it with --no-kv-tokens to export a single embedding",
                            concept_dir));
  if (format == ExportFormat::kKohya && concept.stage != 2)
    throw Error(fmt::format("{}: a stage I concept has no LoRA, and the kohya format is a LoRA file (run finetune "
                            "first, or export --format a1111 for the embedding alone)",
                            concept_dir));
  if (name.empty() || name.find_first_of("/\\ ") != std::string::npos)
    throw Error(fmt::format("--name '{}' must be one word that can be a file name", name));
  if (fs::exists(out)) throw Error(fmt::format("{}: already exists", out));
  const fs::path staging = out + ".partial";
  fs::remove_all(staging);
  fs::create_directories(staging);
  std::vector<std::string> written;
  auto write = [&](const std::string& file, const NamedTensors& tensors, const std::map<std::string, std::string>& meta) {
    fs::create_directories((staging / file).parent_path());
    save_safetensors((staging / file).string(), tensors, meta);
    written.push_back((fs::path(out) / file).string());
  };
  switch (format) {
    case ExportFormat::kA1111:
      write(name + ".safetensors", to_a1111_embedding(concept.embedding), {{"format", "pt"}});
      if (concept.stage == 2) write(name + "_lora.safetensors", to_kohya_layout(concept.lora), lora_metadata(concept));
      break;
    case ExportFormat::kDiffusers:
      write("learned_embeds.safetensors", to_diffusers_embedding(name, concept.embedding), {{"format", "pt"}});
      if (concept.stage == 2) write("pytorch_lora_weights.safetensors", to_peft_layout(concept.lora), {{"format", "pt"}});
      break;
    case ExportFormat::kDiffusersLegacy: {
      write("learned_embeds.safetensors", to_diffusers_embedding(name, concept.embedding), {{"format", "pt"}});
      if (concept.stage != 2) break;
      // The processor layout has no alpha: its update is up(down(x)), so alpha / rank goes into up.
      LoraWeightMap folded = concept.lora;
      for (auto& [path, w] : folded)
        if (w.alpha > 0 && w.alpha != static_cast<double>(w.down.size(0))) {
          w.up = w.up * (w.alpha / static_cast<double>(w.down.size(0)));
          w.alpha = static_cast<double>(w.down.size(0));
        }
      write("pytorch_lora_weights.safetensors", to_diffusers_processor_layout(folded), {{"format", "pt"}});
      break;
    }
    case ExportFormat::kKohya: {
      NamedTensors tensors = to_kohya_layout(concept.lora);
      if (bundle_embedding) {
        tensors.emplace_back(fmt::format("bundle_emb.{}.string_to_param.*", name),
                             concept.embedding.detach().cpu().to(at::kFloat).contiguous());
      } else {
        write("embeddings/" + name + ".safetensors", to_a1111_embedding(concept.embedding), {{"format", "pt"}});
      }
      write(name + ".safetensors", tensors, lora_metadata(concept));
      break;
    }
  }
  fs::rename(staging, out);
  return written;
}

std::vector<std::pair<std::string, std::string>> describe_path(const std::string& path) {
  std::vector<std::pair<std::string, std::string>> rows;
  if (!fs::exists(path)) throw Error(fmt::format("{}: no such file or folder", path));
  if (fs::is_directory(path)) {
    if (fs::exists(fs::path(path) / "concept.json")) {
      const Concept concept = Concept::load(path);
      const auto json = nlohmann::json::parse(concept.json);
      rows.push_back({"kind", fmt::format("singleinsert concept (stage {})", concept.stage)});
      rows.push_back({"method", concept.method});
      rows.push_back({"trigger", concept.trigger});
      rows.push_back({"class", concept.class_word});
      rows.push_back({"embedding", shape_string(concept.embedding.sizes())});
      if (concept.stage == 2)
        rows.push_back({"lora", fmt::format("{} modules, rank {}, alpha {}", concept.lora.size(), concept.lora_rank,
                                            concept.lora_alpha)});
      rows.push_back({"base model", json["base_model"].value("path", "") + " (UNet sha256 " +
                                        concept.base_model_sha256.substr(0, 12) + ")"});
      rows.push_back({"wall time", fmt::format("stage I {:.1f} s, stage II {:.1f} s",
                                               json["wall_time_seconds"].value("stage1", 0.0),
                                               json["wall_time_seconds"].value("stage2", 0.0))});
      return rows;
    }
    if (fs::exists(fs::path(path) / "model_index.json")) {
      rows.push_back({"kind", "diffusers model folder"});
      for (const char* component : {"unet", "vae", "text_encoder"}) {
        const fs::path dir = fs::path(path) / component;
        if (!fs::is_directory(dir)) {
          rows.push_back({component, "missing"});
          continue;
        }
        std::string summary;
        for (const auto& entry : fs::directory_iterator(dir))
          if (entry.path().extension() == ".safetensors") {
            const SafetensorsFile file = SafetensorsFile::open(entry.path().string());
            summary = fmt::format("{} ({} parameters, {})", entry.path().filename().string(),
                                  human_count(parameter_count(file)), dtypes_of(file));
          }
        const JsonConfig config = JsonConfig::load((dir / "config.json").string());
        if (std::string(component) == "unet")
          summary += fmt::format("; block_out_channels {}, cross_attention_dim {}",
                                 config.json().value("block_out_channels", nlohmann::json()).dump(),
                                 config.get_int("cross_attention_dim", 0));
        rows.push_back({component, summary});
      }
      const fs::path scheduler = fs::path(path) / "scheduler" / "scheduler_config.json";
      if (fs::exists(scheduler))
        rows.push_back({"scheduler", JsonConfig::load(scheduler.string()).get_string("_class_name", "?")});
      return rows;
    }
    throw Error(fmt::format("{}: neither a diffusers model folder nor a concept folder", path));
  }
  const SafetensorsFile file = SafetensorsFile::open(path);
  const auto keys = file.keys();
  auto any = [&](const std::string& prefix) {
    for (const auto& key : keys)
      if (key.rfind(prefix, 0) == 0) return true;
    return false;
  };
  if (any("model.diffusion_model.") || any("conditioner.embedders.")) {
    const LdmCheckpointInfo info = inspect_ldm_checkpoint(file);
    rows.push_back({"kind", "single-file checkpoint (LDM layout)"});
    rows.push_back({"family", info.text_encoder == LdmTextEncoder::kClip ? "SD v1.x (CLIP text encoder)"
                                                                         : "SD v2.x (OpenCLIP text encoder)"});
    rows.push_back({"UNet input channels", std::to_string(info.unet_in_channels)});
    rows.push_back({"EMA weights", info.has_ema ? "present (the non-EMA weights are used)" : "none"});
    rows.push_back({"tensors", fmt::format("{} ({} parameters, {})", keys.size(), human_count(parameter_count(file)),
                                           dtypes_of(file))});
    return rows;
  }
  if (file.contains("emb_params") || (keys.size() == 1 && file.entry(keys[0]).shape.size() <= 2)) {
    const TextualInversion embedding = read_embedding_file(file);
    rows.push_back({"kind", "textual-inversion embedding"});
    rows.push_back({"layout", embedding.layout});
    rows.push_back({"token", embedding.token.empty() ? fs::path(path).stem().string() + " (the file name)" : embedding.token});
    rows.push_back({"vectors", fmt::format("{} x {}", embedding.vectors.size(0), embedding.vectors.size(1))});
    return rows;
  }
  describe_lora(file, rows);
  return rows;
}

}  // namespace singleinsert
