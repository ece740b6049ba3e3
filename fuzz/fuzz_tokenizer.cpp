// The CLIP tokenizer on arbitrary bytes as a prompt (invalid UTF-8 included), with and without an
// added trigger token: it must tokenize or throw singleinsert::Error, nothing else.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "singleinsert/core/error.h"
#include "singleinsert/models/clip_tokenizer.h"

namespace {

const std::string& tokenizer_dir() {
  static const std::string dir = [] {
    const char* path = std::getenv("SINGLEINSERT_FUZZ_TOKENIZER");
    return std::string(path ? path : SINGLEINSERT_FUZZ_DEFAULT_TOKENIZER);
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const singleinsert::ClipTokenizer plain = singleinsert::ClipTokenizer::load(tokenizer_dir());
  static const singleinsert::ClipTokenizer triggered = [] {
    singleinsert::ClipTokenizer t = singleinsert::ClipTokenizer::load(tokenizer_dir());
    t.add_token("<bear>");
    t.add_token("*");
    return t;
  }();
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const singleinsert::ClipTokenizer* tokenizer : {&plain, &triggered}) {
    try {
      const auto ids = tokenizer->encode(text);
      (void)tokenizer->tokenize(text);
      (void)tokenizer->decode(ids);
    } catch (const singleinsert::Error&) {
    }
  }
  return 0;
}
