#pragma once
// How an image was made, in the forms other tools read: AUTOMATIC1111's "parameters" text (shown
// by PNG-info readers) and a JSON record with every resolved setting.
#include <cstdint>
#include <string>
#include <vector>

namespace singleinsert {

struct GenerationRecord {
  std::string prompt;
  std::string negative_prompt;
  int steps = 0;
  std::string sampler;  // --sampler name
  double guidance_scale = 0;
  uint64_t seed = 0;
  int width = 0, height = 0;
  int batch_size = 1;      // images drawn together from one seed
  int batch_position = 0;  // this image's index in that draw
  std::string model;       // model folder or file
  std::string model_hash;  // first 10 hex digits of the UNet weights' sha256
  std::string device, dtype;
  std::vector<std::string> concepts, loras, embeddings;
};

// "prompt\nNegative prompt: ...\nSteps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 0, Size: 512x512, ..."
std::string a1111_parameters(const GenerationRecord& record);
// The sampler's name in AUTOMATIC1111's UI ("DPM++ 2M Karras").
std::string a1111_sampler_name(const std::string& sampler);
std::string generation_record_json(const GenerationRecord& record);

}  // namespace singleinsert
