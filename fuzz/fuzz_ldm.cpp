// Single-file checkpoints (the LDM/CompVis layout AUTOMATIC1111 and ComfyUI load) of arbitrary
// names and shapes: family detection, the key tables for each component, and strict loading into
// the tiny model. The input is a tensor list (tensor_list.h); each step must succeed or throw
// singleinsert::Error.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz_support.h"
#include "singleinsert/core/error.h"
#include "singleinsert/formats/ldm_checkpoint.h"
#include "tensor_list.h"

using namespace singleinsert;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (!fuzz::seed_folder()) return 0;
  ModelBundle& bundle = fuzz::tiny_bundle();
  const NamedTensors checkpoint = to_ldm_checkpoint(*bundle.unet, *bundle.vae, *bundle.text_encoder, at::kHalf);
  fuzz::write_seed("sd_tiny_fp16.txt", fuzz::tensor_list_text(checkpoint));
  NamedTensors unet_only;
  for (const auto& [key, tensor] : checkpoint)
    if (key.rfind("model.diffusion_model.", 0) == 0) unet_only.emplace_back(key, tensor);
  fuzz::write_seed("sd_tiny_unet_only.txt", fuzz::tensor_list_text(unet_only));
  std::exit(0);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ModelBundle& bundle = fuzz::tiny_bundle();
  const fuzz::TensorList list = fuzz::parse_tensor_list(std::string(reinterpret_cast<const char*>(data), size));
  for (const auto& [name, tensor] : list.tensors) {
    try {
      (void)ldm_unet_key(name, bundle.unet->config());
    } catch (const Error&) {
    }
    try {
      (void)ldm_vae_key(name, bundle.vae->config());
    } catch (const Error&) {
    }
  }
  const std::optional<std::string> written = fuzz::write_tensor_list(list, "checkpoint");
  if (!written) return 0;
  const std::string& path = *written;
  try {
    const SafetensorsFile file = SafetensorsFile::open(path);
    const LdmCheckpointInfo info = inspect_ldm_checkpoint(file);
    try {
      load_ldm_unet(*bundle.unet, file);
    } catch (const Error&) {
    }
    try {
      load_ldm_vae(*bundle.vae, file);
    } catch (const Error&) {
    }
    try {
      load_ldm_text_encoder(*bundle.text_encoder, file, info.text_encoder);
    } catch (const Error&) {
    }
  } catch (const Error&) {
  }
  return 0;
}
