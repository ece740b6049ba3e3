// The JSON config readers (UNet, CLIP text and vision) on arbitrary text: each must build a config
// that passes its own validation or throw singleinsert::Error, nothing else.
#include <cstdint>
#include <string>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/models/clip_config.h"
#include "singleinsert/models/unet_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const singleinsert::JsonConfig json = singleinsert::JsonConfig::parse(text, "fuzz");
    try {
      singleinsert::UNetConfig::from_json(json).validate();
    } catch (const singleinsert::Error&) {
    }
    try {
      (void)singleinsert::ClipTextConfig::from_json(json);
    } catch (const singleinsert::Error&) {
    }
    try {
      (void)singleinsert::ClipVisionConfig::from_json(json);
    } catch (const singleinsert::Error&) {
    }
  } catch (const singleinsert::Error&) {
  }
  return 0;
}
