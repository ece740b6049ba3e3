#pragma once
// Files for other tools: exporting concepts in their layouts, and describing any file or folder
// singleinsert understands.
#include <string>
#include <utility>
#include <vector>

namespace singleinsert {

enum class ExportFormat { kA1111, kDiffusers, kKohya };
ExportFormat parse_export_format(const std::string& name);  // a1111 | diffusers | kohya

// Writes the concept in `format` into the folder `out` (created; refused if it exists):
//   a1111:     <name>.safetensors (embedding, emb_params) and <name>_lora.safetensors (kohya, stage II)
//   diffusers: learned_embeds.safetensors ({"<name>": [1, D]}) and pytorch_lora_weights.safetensors (PEFT)
//   kohya:     <name>.safetensors: the LoRA with the embedding bundled as bundle_emb.<name>.string_to_param.*
// In the exported files the trigger is `name` (A1111 names embeddings after their files).
// Returns the files written.
std::vector<std::string> export_concept(const std::string& concept_dir, ExportFormat format, const std::string& out,
                                        const std::string& name);

// What a path holds, as (field, value) rows: a diffusers folder, a single-file checkpoint, a LoRA
// (layout, rank, alpha, targets), an embedding, a concept folder.
std::vector<std::pair<std::string, std::string>> describe_path(const std::string& path);

}  // namespace singleinsert
