#pragma once
// Files for other tools: exporting concepts in their layouts, and describing any file or folder
// singleinsert understands.
#include <string>
#include <utility>
#include <vector>

namespace singleinsert {

enum class ExportFormat { kA1111, kDiffusers, kDiffusersLegacy, kKohya };
ExportFormat parse_export_format(const std::string& name);  // a1111 | diffusers | diffusers-legacy | kohya

// Writes the concept in `format` into the folder `out` (created; refused if it exists):
//   a1111:     <name>.safetensors (embedding, emb_params) and <name>_lora.safetensors (kohya, stage II)
//   diffusers: learned_embeds.safetensors ({"<name>": [n, D]}) and pytorch_lora_weights.safetensors (PEFT)
//   diffusers-legacy: the same names, the LoRA in the attention-processor layout that diffusers read
//              before its PEFT backend (and SingleInsert's own test_lora_emb.py), alpha / rank folded in
//   kohya:     <name>.safetensors, the LoRA in kohya's layout, and embeddings/<name>.safetensors (A1111),
//              or with `bundle_embedding` one file holding the embedding as bundle_emb.<name>.string_to_param.*
//              (kohya's bundled layout, which diffusers does not load)
// In the exported files the trigger is `name` (A1111 names embeddings after their files).
// Returns the files written.
std::vector<std::string> export_concept(const std::string& concept_dir, ExportFormat format, const std::string& out,
                                        const std::string& name, bool bundle_embedding = false);

// What a path holds, as (field, value) rows: a diffusers folder, a single-file checkpoint, a LoRA
// (layout, rank, alpha, targets), an embedding, a concept folder.
std::vector<std::pair<std::string, std::string>> describe_path(const std::string& path);

}  // namespace singleinsert
