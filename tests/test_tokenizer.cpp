// The CLIP tokenizer against Hugging Face's slow CLIPTokenizer with ftfy, on the 36 prompts of
// golden/tokenizer/clip_tokenizer_cases.json (Unicode, HTML entities, mojibake, truncation).
#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "golden.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/models/clip_tokenizer.h"
#include "singleinsert/models/text_normalizer.h"

namespace singleinsert {
namespace {

const ClipTokenizer& sd_tokenizer() {
  static const ClipTokenizer tokenizer = ClipTokenizer::load(testing::golden_path("sd_tiny/tokenizer"));
  return tokenizer;
}

nlohmann::json cases() {
  return nlohmann::json::parse(read_file(testing::golden_path("tokenizer/clip_tokenizer_cases.json")))["cases"];
}

TEST(ClipTokenizer, MatchesReferenceIdsForEveryCase) {
  const auto all = cases();
  ASSERT_EQ(all.size(), 36u);
  int checked = 0;
  for (const auto& c : all) {
    const std::string prompt = c["prompt"].get<std::string>();
    SCOPED_TRACE("prompt: " + prompt);
    EXPECT_EQ(sd_tokenizer().encode(prompt), c["hf_ids"].get<std::vector<int64_t>>());
    EXPECT_EQ(sd_tokenizer().tokens(prompt), c["hf_tokens"].get<std::vector<std::string>>());
    const TokenizedPrompt padded = sd_tokenizer().tokenize(prompt);
    EXPECT_EQ(padded.ids, c["hf_input_ids_77"].get<std::vector<int64_t>>());
    EXPECT_EQ(padded.attention_mask, c["hf_attention_mask_77"].get<std::vector<int64_t>>());
    EXPECT_EQ(padded.untruncated_length, c["hf_untruncated_len"].get<int>());
    EXPECT_EQ(padded.truncated_text.empty(), c["hf_untruncated_len"].get<int>() <= 77);
    ++checked;
  }
  EXPECT_EQ(checked, 36);
}

TEST(ClipTokenizer, DecodesLikeHuggingFace) {
  for (const auto& c : cases()) {
    const std::string prompt = c["prompt"].get<std::string>();
    if (c["hf_untruncated_len"].get<int>() > 77) continue;  // the reference decoded the truncated ids
    SCOPED_TRACE("prompt: " + prompt);
    EXPECT_EQ(sd_tokenizer().decode(c["hf_ids"].get<std::vector<int64_t>>()), c["hf_decoded"].get<std::string>());
  }
}

TEST(ClipTokenizer, TruncationKeepsEosLast) {
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "cat ";
  const TokenizedPrompt out = sd_tokenizer().tokenize(long_prompt);
  ASSERT_EQ(out.ids.size(), 77u);
  EXPECT_EQ(out.ids.front(), sd_tokenizer().bos_id());
  EXPECT_EQ(out.ids.back(), sd_tokenizer().eos_id());
  EXPECT_EQ(out.untruncated_length, 102);
  EXPECT_EQ(out.truncated_text, "cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat");
}

TEST(ClipTokenizer, AddedTokensAreMatchedBeforeBpe) {
  ClipTokenizer tokenizer = sd_tokenizer();
  const int64_t id = tokenizer.add_token("_*_");
  EXPECT_EQ(id, 49408);  // the id train.py's placeholder gets (golden/singleinsert_losses)
  const auto ids = tokenizer.tokenize("_*_ teddy bear").ids;
  EXPECT_EQ(std::vector<int64_t>(ids.begin(), ids.begin() + 6),
            (std::vector<int64_t>{49406, 49408, 11798, 4298, 49407, 49407}));
  // Case-sensitive and longest-first, like the slow tokenizer's trie.
  tokenizer.add_token("_*_x");
  EXPECT_EQ(tokenizer.encode("_*_x")[0], 49409);
  EXPECT_NE(tokenizer.encode("_*_X")[0], 49409);
}

TEST(ClipTokenizer, CopiesShareTheVocabularyButNotTheAddedTokens) {
  const ClipTokenizer original = sd_tokenizer();
  ClipTokenizer copy = original;
  EXPECT_EQ(copy.add_token("<toy>"), 49408);
  EXPECT_TRUE(copy.is_added_token("<toy>"));
  EXPECT_FALSE(original.has_token("<toy>"));
  EXPECT_EQ(original.vocab_size(), 49408);
  EXPECT_EQ(copy.vocab_size(), 49409);
  EXPECT_EQ(copy.decode(copy.encode("a <toy> cat")), "a <toy> cat");
  const auto plain = original.encode("a <toy> cat");  // "<", "toy", ">" as ordinary tokens
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 49408), 0);
  EXPECT_EQ(plain.size(), 5u);
}

TEST(ClipTokenizer, AddedTokenIdsMustBeWholeNumbers) {
  // A float id beyond int64's range cannot be converted; the file is refused by name.
  const std::string dir = testing::fresh_temp_dir("added_tokens");
  for (const char* file : {"vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"})
    write_file_atomic(dir + "/" + file, read_file(testing::golden_path(std::string("sd_tiny/tokenizer/") + file)));
  write_file_atomic(dir + "/added_tokens.json", R"({"<toy>": 49408})");
  EXPECT_TRUE(ClipTokenizer::load(dir).is_added_token("<toy>"));
  write_file_atomic(dir + "/added_tokens.json", R"({"<toy>": 1e30})");
  try {
    ClipTokenizer::load(dir);
    ADD_FAILURE() << "a float id was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the id of '<toy>' is 1e+30, not a whole number"), std::string::npos)
        << e.what();
  }
}

TEST(TextNormalizer, AppliesFtfyFixes) {
  EXPECT_EQ(fix_text("caf\xC3\x83\xC2\xA9"), "caf\xC3\xA9");                    // mojibake
  EXPECT_EQ(fix_text("&lt;b&gt;"), "<b>");                                       // entities
  EXPECT_EQ(fix_text("<b>&amp;</b>"), "<b>&amp;</b>");                           // left alone in HTML
  EXPECT_EQ(fix_text("\xEF\xAC\x81ne"), "fine");                                 // ligature
  EXPECT_EQ(fix_text("\xE2\x80\x9Cq\xE2\x80\x9D"), "\"q\"");                      // curly quotes
  EXPECT_EQ(fix_text("a\x1B[31mred\x1B[0m"), "ared");                            // terminal escapes
  EXPECT_EQ(fix_text("e\xCC\x81"), "\xC3\xA9");                                  // NFC
  EXPECT_EQ(normalize_clip_text("  Hello \t\n World  "), "hello world");
}

}  // namespace
}  // namespace singleinsert
