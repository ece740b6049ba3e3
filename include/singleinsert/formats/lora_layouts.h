#pragma once
// LoRA file layouts, converted to and from the canonical module paths of models/lora.h.
//
// "kohya" (sd-scripts, AUTOMATIC1111, ComfyUI, stable-diffusion.cpp): module paths flattened with
// underscores under lora_unet_ / lora_te_, each with lora_down.weight, lora_up.weight and a scalar
// alpha: lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight
//
// "peft" (diffusers with PEFT): unet.<module>.lora_A.weight (down) and .lora_B.weight (up), the
// same under text_encoder.; the non-PEFT variant .lora.down.weight / .lora.up.weight is read too.
//
// "diffusers-processor": diffusers' attention-processor layout (LoraLoaderMixin.save_lora_weights
// before PEFT), which SingleInsert's train.py writes:
//   unet.<attention>.processor.to_{q,k,v,out}_lora.{down,up}.weight        (to_out -> to_out.0)
//   text_encoder.<layer>.self_attn.{q,k,v,out}_proj.lora_linear_layer.{down,up}.weight
#include <map>
#include <string>

#include "singleinsert/core/safetensors.h"
#include "singleinsert/models/lora.h"

namespace singleinsert {

NamedTensors to_diffusers_processor_layout(const LoraWeightMap& weights);
LoraWeightMap from_diffusers_processor_layout(const std::map<std::string, at::Tensor>& tensors,
                                              const std::string& origin, double alpha = 0.0);

enum class LoraLayout { kKohya, kPeft, kDiffusersProcessor };
std::string lora_layout_name(LoraLayout layout);

// Recognises a layout from its keys; throws Error for anything else.
LoraLayout detect_lora_layout(const std::map<std::string, at::Tensor>& tensors, const std::string& origin);

// Kohya names flatten dots to underscores, so they are resolved against the model's module paths.
LoraWeightMap from_kohya_layout(const std::map<std::string, at::Tensor>& tensors,
                                const std::vector<std::string>& module_paths, const std::string& origin);
NamedTensors to_kohya_layout(const LoraWeightMap& weights);
std::string kohya_name(const std::string& module_path);

LoraWeightMap from_peft_layout(const std::map<std::string, at::Tensor>& tensors, const std::string& origin);
NamedTensors to_peft_layout(const LoraWeightMap& weights);

// A number from a LoRA file's metadata ("lora_rank", "lora_alpha"), `fallback` when absent; throws
// Error for anything but a finite number >= 0.
double lora_metadata_number(const SafetensorsFile& file, const std::string& key, double fallback = 0.0);

// Any supported LoRA file, its layout detected.
LoraWeightMap read_lora_file(const SafetensorsFile& file, const std::vector<std::string>& module_paths,
                             LoraLayout* layout = nullptr);

// Reads every tensor of a file into memory.
std::map<std::string, at::Tensor> read_all_tensors(const SafetensorsFile& file);

}  // namespace singleinsert
