// Prompts with triggers, as generate reads them: the --concept DIR[:TRIGGER], --embedding
// FILE[:TRIGGER] and --lora FILE[:SCALE] arguments, trigger validation, multi-vector trigger
// expansion and tokenization with the added tokens. The input is NUL-separated parts: an
// argument, a prompt, then triggers (each with 1 + its length % 3 vectors). Every step must succeed
// or throw singleinsert::Error; the argument parsers must split losslessly.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "singleinsert/core/error.h"
#include "singleinsert/models/clip_tokenizer.h"
#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/pipeline/prompt_encoding.h"

using namespace singleinsert;

namespace {

void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ClipTokenizer base = [] {
    const char* path = std::getenv("SINGLEINSERT_FUZZ_TOKENIZER");
    return ClipTokenizer::load(path ? path : SINGLEINSERT_FUZZ_DEFAULT_TOKENIZER);
  }();
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) parts.emplace_back();
    else parts.back().push_back(static_cast<char>(data[i]));
  }
  while (parts.size() < 2) parts.emplace_back();
  const std::string& argument = parts[0];
  const std::string& prompt = parts[1];

  const ConceptRequest concept = parse_concept_request(argument);
  require(concept.trigger.empty() ? concept.path == argument : concept.path + ":" + concept.trigger == argument,
          "--concept DIR:TRIGGER splits losslessly");
  try {
    const LoraRequest lora = parse_lora_request(argument);
    require(std::isfinite(lora.scale), "a LoRA scale is finite");
    require(lora.path == argument || argument.compare(0, lora.path.size() + 1, lora.path + ":") == 0,
            "--lora FILE:SCALE keeps FILE");
  } catch (const Error&) {
  }

  // Triggers added as insert_embedding adds them; the tokenizer is a copy, so nothing accumulates.
  ClipTokenizer tokenizer = base;
  std::map<std::string, std::string> expansions;
  std::vector<std::string> triggers;
  for (size_t i = 2; i < parts.size(); ++i) {
    const std::string& trigger = parts[i];
    try {
      validate_trigger(trigger, "fuzz");
    } catch (const Error&) {
      continue;
    }
    require(!trigger.empty() && trigger.find(' ') == std::string::npos, "a valid trigger is one word");
    std::string expansion;
    for (size_t v = 0; v < 1 + trigger.size() % 3; ++v) {
      const std::string name = v == 0 ? trigger : trigger + "_" + std::to_string(v);
      tokenizer.add_token(name);
      expansion += (expansion.empty() ? "" : " ") + name;
    }
    if (expansion != trigger) expansions[trigger] = expansion;
    triggers.push_back(trigger);
  }
  try {
    require_triggers({prompt}, triggers);
  } catch (const Error&) {
  }
  const std::string expanded = expand_prompt(prompt, expansions);
  require(!expansions.empty() || expanded == prompt, "a prompt without multi-vector triggers is left as it is");
  try {
    const TokenizedPrompt tokens = tokenizer.tokenize(expanded);
    require(static_cast<int>(tokens.ids.size()) == tokenizer.max_length(), "a tokenized prompt fills the context");
  } catch (const Error&) {
  }
  return 0;
}
