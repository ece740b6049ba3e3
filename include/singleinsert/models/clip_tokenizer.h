#pragma once
// CLIP's byte-level BPE tokenizer, matching Hugging Face's CLIPTokenizer (slow, with ftfy):
// added tokens are split off first (case-sensitive, longest match), the rest is normalised
// (see text_normalizer.h), split with CLIP's regex, mapped to byte characters and merged by
// BPE rank with "</w>" marking word ends. Sequences are BOS + ids + EOS, truncated to
// model_max_length and padded with the pad token.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace singleinsert {

struct TokenizedPrompt {
  std::vector<int64_t> ids;          // exactly max_length ids, BOS first
  std::vector<int64_t> attention_mask;  // 1 for BOS..EOS, 0 for padding
  int untruncated_length = 0;        // BOS + tokens + EOS before truncation
  std::string truncated_text;        // what truncation dropped (decoded), empty if nothing
};

class ClipTokenizer {
 public:
  // Reads vocab.json, merges.txt and, when present, special_tokens_map.json,
  // tokenizer_config.json and added_tokens.json from a tokenizer folder.
  static ClipTokenizer load(const std::string& directory);
  static ClipTokenizer from_files(const std::string& vocab_json, const std::string& merges_txt);

  // The BPE ids of `text`, without BOS/EOS and without truncation.
  std::vector<int64_t> encode(const std::string& text) const;
  // The pipeline's call: tokenizer(text, padding="max_length", truncation=True).
  TokenizedPrompt tokenize(const std::string& text) const;
  // BPE token strings (byte characters, with "</w>") for debugging and tests.
  std::vector<std::string> tokens(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;

  // Adds a token that is matched verbatim before BPE (textual-inversion triggers) and returns
  // its new id (the next free one). A text that is already an added token keeps its id; one that
  // is an ordinary vocabulary entry is shadowed by the new id.
  int64_t add_token(const std::string& text);
  bool is_vocabulary_token(const std::string& text) const { return vocabulary_->encoder.count(text) != 0; }
  bool is_added_token(const std::string& text) const { return added_tokens_.count(text) != 0; }
  bool has_token(const std::string& text) const;
  int64_t token_id(const std::string& text) const;  // throws if unknown

  // GPT-2's reversible byte alphabet: the printable character (UTF-8) that stands for each byte.
  static std::vector<std::string> byte_alphabet();

  // One BPE merge: every adjacent (first, second) in `symbols`, left to right, becomes one symbol.
  static std::vector<std::string> merge_pair(const std::vector<std::string>& symbols, const std::string& first,
                                             const std::string& second);

  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  int64_t pad_id() const { return pad_id_; }
  int64_t unk_id() const { return unk_id_; }
  int max_length() const { return max_length_; }
  int64_t vocab_size() const;  // base vocabulary plus added tokens

 private:
  std::vector<std::string> bpe(const std::string& word) const;
  std::vector<int64_t> encode_plain(const std::string& text) const;

  // The trained vocabulary never changes, so copies of a tokenizer share it; only the tokens
  // added after training are per copy.
  struct Vocabulary {
    std::unordered_map<std::string, int64_t> encoder;
    std::vector<std::string> decoder;  // id -> token
    std::unordered_map<std::string, int> merge_ranks;  // "first second" -> rank
    std::string byte_to_unicode[256];
    std::unordered_map<std::string, uint8_t> unicode_to_byte;
  };
  const std::string& token_text(int64_t id) const;

  std::shared_ptr<const Vocabulary> vocabulary_ = std::make_shared<const Vocabulary>();
  std::vector<std::string> added_decoder_;  // ids from vocabulary_->decoder.size() on
  std::map<std::string, int64_t> added_tokens_;
  mutable std::shared_ptr<std::unordered_map<std::string, std::vector<std::string>>> cache_;
  int64_t bos_id_ = 49406, eos_id_ = 49407, pad_id_ = 49407, unk_id_ = 49407;
  int max_length_ = 77;
};

}  // namespace singleinsert
