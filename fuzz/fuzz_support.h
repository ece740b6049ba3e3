#pragma once
// What the harnesses share: the tiny reference model they load once, and seed writing.
#include <cstdlib>
#include <memory>
#include <string>

#include "singleinsert/core/files.h"
#include "singleinsert/pipeline/model_bundle.h"

namespace singleinsert::fuzz {

// ../shared/golden/sd_tiny unless SINGLEINSERT_FUZZ_MODEL names another diffusers folder.
inline ModelBundle& tiny_bundle() {
  static const std::shared_ptr<ModelBundle> bundle = [] {
    const char* path = std::getenv("SINGLEINSERT_FUZZ_MODEL");
    return load_model_bundle(path ? path : SINGLEINSERT_FUZZ_DEFAULT_MODEL);
  }();
  return *bundle;
}

// Seeds are written by the harnesses themselves from the library's own writers, so that the
// committed corpus can be remade: SINGLEINSERT_FUZZ_WRITE_SEEDS=fuzz/corpus/NAME build-fuzz/fuzz/fuzz_NAME
inline const char* seed_folder() { return std::getenv("SINGLEINSERT_FUZZ_WRITE_SEEDS"); }
inline void write_seed(const std::string& name, const std::string& bytes) {
  write_file_atomic(std::string(seed_folder()) + "/" + name, bytes);
}

}  // namespace singleinsert::fuzz
