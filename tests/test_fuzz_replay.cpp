// Every fuzz harness (fuzz/) replays its committed seed corpus and every input it ever failed on
// (fuzz/regressions/NAME/) in the normal build, through the harness's own code: a finding comes
// back as an uncaught exception, a failed property (abort) or a sanitizer-free crash here.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include <unistd.h>

#include "singleinsert/core/files.h"

extern "C" {
int fuzz_safetensors_one_input(const uint8_t* data, size_t size);
int fuzz_configs_one_input(const uint8_t* data, size_t size);
int fuzz_tokenizer_one_input(const uint8_t* data, size_t size);
int fuzz_adapters_one_input(const uint8_t* data, size_t size);
int fuzz_ldm_one_input(const uint8_t* data, size_t size);
int fuzz_concept_one_input(const uint8_t* data, size_t size);
int fuzz_prompts_one_input(const uint8_t* data, size_t size);
#ifdef SINGLEINSERT_FUZZ_REPLAY_PNG
int fuzz_png_text_one_input(const uint8_t* data, size_t size);
#endif
}

namespace {

using Harness = int (*)(const uint8_t*, size_t);

// The number of inputs replayed from fuzz/corpus/NAME and fuzz/regressions/NAME.
int replay(const std::string& name, Harness harness) {
  namespace fs = std::filesystem;
  int inputs = 0;
  for (const std::string folder : {"fuzz/corpus/", "fuzz/regressions/"}) {
    const fs::path dir = fs::path(SINGLEINSERT_SOURCE_DIR) / (folder + name);
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string bytes = singleinsert::read_file(entry.path().string());
      SCOPED_TRACE(entry.path().string());
      EXPECT_NO_THROW(harness(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
      ++inputs;
    }
  }
  return inputs;
}

}  // namespace

TEST(Fuzz, EveryHarnessReplaysItsSeedsAndFindings) {
  const std::pair<const char*, Harness> harnesses[] = {
      {"safetensors", fuzz_safetensors_one_input}, {"configs", fuzz_configs_one_input},
      {"tokenizer", fuzz_tokenizer_one_input},     {"adapters", fuzz_adapters_one_input},
      {"ldm", fuzz_ldm_one_input},                 {"concept", fuzz_concept_one_input},
      {"prompts", fuzz_prompts_one_input},
#ifdef SINGLEINSERT_FUZZ_REPLAY_PNG
      {"png_text", fuzz_png_text_one_input},
#endif
  };
  for (const auto& [name, harness] : harnesses) {
    SCOPED_TRACE(name);
    EXPECT_GE(replay(name, harness), 2) << "fuzz/corpus/" << name << " holds the harness's seeds";
  }
  // The harnesses work in /dev/shm/singleinsert_fuzz_<pid>*.
  namespace fs = std::filesystem;
  const std::string mine = "singleinsert_fuzz_" + std::to_string(::getpid());
  std::error_code error;
  for (const auto& entry : fs::directory_iterator("/dev/shm", error))
    if (entry.path().filename().string().rfind(mine, 0) == 0) fs::remove_all(entry.path(), error);
}
