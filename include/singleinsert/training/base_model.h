#pragma once
// The frozen model every training method inserts its concept into.
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/unet.h"
#include "singleinsert/models/vae.h"
#include "singleinsert/sampling/noise_schedule.h"

namespace singleinsert {

// The frozen base model the concept is inserted into (a model bundle's components).
struct BaseModel {
  UNet2DConditionModel unet{nullptr};
  ClipTextModel text_encoder{nullptr};
  AutoencoderKL vae{nullptr};
  NoiseScheduleConfig schedule;
  c10::Device device = c10::Device(c10::kCPU);
  // The frozen weights' dtype; bf16/fp16 runs each forward pass under autocast while the
  // trainable parameters and the optimizer state stay float32.
  at::ScalarType dtype = at::kFloat;
};

}  // namespace singleinsert
