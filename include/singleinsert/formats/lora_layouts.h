#pragma once
// LoRA file layouts, converted to and from the canonical module paths of models/lora.h.
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

// Reads every tensor of a file into memory.
std::map<std::string, at::Tensor> read_all_tensors(const SafetensorsFile& file);

}  // namespace singleinsert
