#include "singleinsert/models/clip_tokenizer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/models/text_normalizer.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

// CLIP caps the merge list it reads: the vocabulary is 256 bytes, their 256 word-final forms,
// the merges, and 2 special tokens, 49408 in all.
constexpr size_t kMaxMerges = 49152 - 256 - 2;

const std::vector<std::u32string>& contraction_suffixes() {
  static const std::vector<std::u32string> suffixes = {U"s", U"t", U"re", U"ve", U"m", U"ll", U"d"};
  return suffixes;
}

// Simple case folding for the contraction match (the pattern is compiled with IGNORECASE).
char32_t fold(char32_t c) {
  if (c >= U'A' && c <= U'Z') return c - U'A' + U'a';
  if (c == 0x017F) return U's';  // long s folds to s
  return c;
}

// CLIP's pre-tokenizer: <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
std::vector<std::u32string> split_words(const std::u32string& text) {
  static const std::u32string kStart = U"<|startoftext|>", kEnd = U"<|endoftext|>";
  std::vector<std::u32string> words;
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    if (text.compare(i, kStart.size(), kStart) == 0) {
      words.push_back(kStart);
      i += kStart.size();
      continue;
    }
    if (text.compare(i, kEnd.size(), kEnd) == 0) {
      words.push_back(kEnd);
      i += kEnd.size();
      continue;
    }
    if (text[i] == U'\'') {
      bool matched = false;
      for (const auto& suffix : contraction_suffixes()) {
        if (i + 1 + suffix.size() > n) continue;
        bool equal = true;
        for (size_t k = 0; k < suffix.size(); ++k) equal = equal && fold(text[i + 1 + k]) == suffix[k];
        if (equal) {
          words.push_back(text.substr(i, 1 + suffix.size()));
          i += 1 + suffix.size();
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    const size_t start = i;
    if (is_unicode_letter(text[i])) {
      while (i < n && is_unicode_letter(text[i])) ++i;
    } else if (is_unicode_number(text[i])) {
      ++i;
    } else if (!is_python_whitespace(text[i])) {
      while (i < n && !is_python_whitespace(text[i]) && !is_unicode_letter(text[i]) && !is_unicode_number(text[i]))
        ++i;
    } else {
      ++i;
      continue;
    }
    words.push_back(text.substr(start, i - start));
  }
  return words;
}

// GPT-2's reversible map from bytes to printable characters.
void build_byte_map(std::string (&byte_to_unicode)[256], std::unordered_map<std::string, uint8_t>& unicode_to_byte) {
  std::vector<int> printable;
  for (int b = '!'; b <= '~'; ++b) printable.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) printable.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) printable.push_back(b);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool is_printable = std::find(printable.begin(), printable.end(), b) != printable.end();
    const char32_t c = is_printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
    byte_to_unicode[b] = utf32_to_utf8(std::u32string(1, c));
    unicode_to_byte[byte_to_unicode[b]] = static_cast<uint8_t>(b);
  }
}

std::string special_token(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content")) return value["content"].get<std::string>();
  return {};
}

nlohmann::json read_json(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: invalid JSON ({})", path, e.what()));
  }
}

}  // namespace

std::vector<std::string> ClipTokenizer::byte_alphabet() {
  std::string bytes[256];
  std::unordered_map<std::string, uint8_t> reverse;
  build_byte_map(bytes, reverse);
  return std::vector<std::string>(bytes, bytes + 256);
}

ClipTokenizer ClipTokenizer::from_files(const std::string& vocab_json, const std::string& merges_txt) {
  ClipTokenizer tokenizer;
  auto vocabulary = std::make_shared<Vocabulary>();
  build_byte_map(vocabulary->byte_to_unicode, vocabulary->unicode_to_byte);
  tokenizer.cache_ = std::make_shared<std::unordered_map<std::string, std::vector<std::string>>>();

  const nlohmann::json vocab = read_json(vocab_json);
  if (!vocab.is_object() || vocab.empty()) throw Error(vocab_json + ": expected a JSON object of token ids");
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      throw Error(fmt::format("{}: token '{}' has an invalid id", vocab_json, token));
    vocabulary->encoder[token] = id.get<int64_t>();
    max_id = std::max(max_id, id.get<int64_t>());
  }
  vocabulary->decoder.assign(max_id + 1, std::string());
  for (const auto& [token, id] : vocabulary->encoder) vocabulary->decoder[id] = token;

  std::istringstream merges(read_file(merges_txt));
  std::string line;
  std::getline(merges, line);  // "#version: 0.2"
  int rank = 0;
  while (std::getline(merges, line) && static_cast<size_t>(rank) < kMaxMerges) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      throw Error(fmt::format("{}: malformed merge line {}: '{}'", merges_txt, rank + 2, line));
    vocabulary->merge_ranks.emplace(line, rank++);
  }
  tokenizer.vocabulary_ = vocabulary;
  // The conventional special tokens; load() refines them from the folder's configuration.
  for (const auto& [name, field] : {std::pair<const char*, int64_t*>{"<|startoftext|>", &tokenizer.bos_id_},
                                    {"<|endoftext|>", &tokenizer.eos_id_}}) {
    auto it = tokenizer.vocabulary_->encoder.find(name);
    if (it == tokenizer.vocabulary_->encoder.end())
      throw Error(fmt::format("{}: the vocabulary has no '{}' token", vocab_json, name));
    *field = it->second;
    tokenizer.added_tokens_[name] = it->second;
  }
  tokenizer.pad_id_ = tokenizer.unk_id_ = tokenizer.eos_id_;
  return tokenizer;
}

ClipTokenizer ClipTokenizer::load(const std::string& directory) {
  const fs::path dir(directory);
  for (const char* name : {"vocab.json", "merges.txt"})
    if (!fs::exists(dir / name))
      throw Error(fmt::format("{}: missing {} (a CLIP tokenizer folder needs vocab.json and merges.txt)",
                              directory, name));
  ClipTokenizer tokenizer = from_files((dir / "vocab.json").string(), (dir / "merges.txt").string());

  auto resolve = [&](const std::string& token, int64_t* field, const char* role) {
    if (token.empty()) return;
    auto it = tokenizer.vocabulary_->encoder.find(token);
    if (it == tokenizer.vocabulary_->encoder.end())
      throw Error(fmt::format("{}: {} token '{}' is not in the vocabulary", directory, role, token));
    *field = it->second;
    tokenizer.added_tokens_[token] = it->second;
  };
  const fs::path config_path = dir / "tokenizer_config.json";
  const fs::path special_path = dir / "special_tokens_map.json";
  for (const fs::path& path : {config_path, special_path}) {
    if (!fs::exists(path)) continue;
    const nlohmann::json config = read_json(path.string());
    if (config.contains("bos_token")) resolve(special_token(config["bos_token"]), &tokenizer.bos_id_, "bos");
    if (config.contains("eos_token")) resolve(special_token(config["eos_token"]), &tokenizer.eos_id_, "eos");
    if (config.contains("unk_token")) resolve(special_token(config["unk_token"]), &tokenizer.unk_id_, "unk");
    if (config.contains("pad_token")) resolve(special_token(config["pad_token"]), &tokenizer.pad_id_, "pad");
    if (config.contains("model_max_length") && config["model_max_length"].is_number_integer()) {
      const int64_t length = config["model_max_length"].get<int64_t>();
      if (length >= 2 && length <= 4096) tokenizer.max_length_ = static_cast<int>(length);
    }
  }
  // Tokens added after training (textual inversion), keyed by their id.
  if (fs::exists(dir / "added_tokens.json")) {
    const nlohmann::json added = read_json((dir / "added_tokens.json").string());
    std::vector<std::pair<int64_t, std::string>> by_id;
    for (const auto& [token, id] : added.items()) {
      if (!id.is_number_integer())  // a float beyond int64's range would not convert
        throw Error(fmt::format("{}: the id of '{}' is {}, not a whole number", (dir / "added_tokens.json").string(),
                                token, id.dump()));
      by_id.emplace_back(id.get<int64_t>(), token);
    }
    std::sort(by_id.begin(), by_id.end());
    for (const auto& [id, token] : by_id) {
      if (tokenizer.has_token(token)) continue;
      if (id != tokenizer.vocab_size())
        throw Error(fmt::format("{}: added token '{}' has id {} but the next free id is {}",
                                (dir / "added_tokens.json").string(), token, id, tokenizer.vocab_size()));
      tokenizer.add_token(token);
    }
  }
  return tokenizer;
}

int64_t ClipTokenizer::vocab_size() const {
  return static_cast<int64_t>(vocabulary_->decoder.size() + added_decoder_.size());
}

const std::string& ClipTokenizer::token_text(int64_t id) const {
  const int64_t base = static_cast<int64_t>(vocabulary_->decoder.size());
  return id < base ? vocabulary_->decoder[id] : added_decoder_[id - base];
}

bool ClipTokenizer::has_token(const std::string& text) const {
  return added_tokens_.count(text) || vocabulary_->encoder.count(text);
}

int64_t ClipTokenizer::token_id(const std::string& text) const {
  if (auto it = added_tokens_.find(text); it != added_tokens_.end()) return it->second;
  if (auto it = vocabulary_->encoder.find(text); it != vocabulary_->encoder.end()) return it->second;
  throw Error(fmt::format("token '{}' is not in the vocabulary", text));
}

int64_t ClipTokenizer::add_token(const std::string& text) {
  if (text.empty()) throw Error("cannot add an empty token");
  if (auto it = added_tokens_.find(text); it != added_tokens_.end()) return it->second;
  const int64_t id = vocab_size();
  added_decoder_.push_back(text);
  added_tokens_[text] = id;
  return id;
}

std::vector<std::string> ClipTokenizer::bpe(const std::string& word) const {
  if (auto it = cache_->find(word); it != cache_->end()) return it->second;
  if (word == "<|startoftext|>" || word == "<|endoftext|>") return {word};
  // Symbols are the word's characters, the last one carrying the end-of-word marker.
  std::vector<std::string> symbols;
  const std::u32string chars = utf8_to_utf32(word);
  for (size_t i = 0; i < chars.size(); ++i)
    symbols.push_back(utf32_to_utf8(chars.substr(i, 1)) + (i + 1 == chars.size() ? "</w>" : ""));
  while (symbols.size() > 1) {
    int best_rank = std::numeric_limits<int>::max();
    size_t best = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = vocabulary_->merge_ranks.find(symbols[i] + " " + symbols[i + 1]);
      if (it != vocabulary_->merge_ranks.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == std::numeric_limits<int>::max()) break;
    const std::string first = symbols[best], second = symbols[best + 1];
    symbols = merge_pair(symbols, first, second);
  }
  (*cache_)[word] = symbols;
  return symbols;
}

std::vector<std::string> ClipTokenizer::merge_pair(const std::vector<std::string>& symbols, const std::string& first,
                                                   const std::string& second) {
  std::vector<std::string> merged;
  for (size_t i = 0; i < symbols.size(); ++i) {
    if (i + 1 < symbols.size() && symbols[i] == first && symbols[i + 1] == second) {
      merged.push_back(first + second);
      ++i;
    } else {
      merged.push_back(symbols[i]);
    }
  }
  return merged;
}

std::vector<int64_t> ClipTokenizer::encode_plain(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const std::u32string& word : split_words(utf8_to_utf32(normalize_clip_text(text)))) {
    std::string mapped;
    for (unsigned char byte : utf32_to_utf8(word)) mapped += vocabulary_->byte_to_unicode[byte];
    for (const std::string& token : bpe(mapped)) {
      auto it = vocabulary_->encoder.find(token);
      ids.push_back(it != vocabulary_->encoder.end() ? it->second : unk_id_);
    }
  }
  return ids;
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
  // Added tokens are cut out of the raw text first (earliest, then longest match).
  std::vector<int64_t> ids;
  size_t plain_start = 0, i = 0;
  while (i < text.size()) {
    const std::string* match = nullptr;
    for (const auto& [token, id] : added_tokens_)
      if (text.compare(i, token.size(), token) == 0 && (!match || token.size() > match->size())) match = &token;
    if (match == nullptr) {
      ++i;
      continue;
    }
    const auto plain = encode_plain(text.substr(plain_start, i - plain_start));
    ids.insert(ids.end(), plain.begin(), plain.end());
    ids.push_back(added_tokens_.at(*match));
    i += match->size();
    plain_start = i;
  }
  const auto plain = encode_plain(text.substr(plain_start));
  ids.insert(ids.end(), plain.begin(), plain.end());
  return ids;
}

std::vector<std::string> ClipTokenizer::tokens(const std::string& text) const {
  std::vector<std::string> out;
  for (int64_t id : encode(text)) out.push_back(id < vocab_size() ? token_text(id) : "<unk>");
  return out;
}

TokenizedPrompt ClipTokenizer::tokenize(const std::string& text) const {
  std::vector<int64_t> ids = encode(text);
  TokenizedPrompt out;
  out.untruncated_length = static_cast<int>(ids.size()) + 2;
  const size_t room = static_cast<size_t>(max_length_ - 2);
  if (ids.size() > room) {
    out.truncated_text = decode(std::vector<int64_t>(ids.begin() + room, ids.end()));
    ids.resize(room);
  }
  out.ids.push_back(bos_id_);
  out.ids.insert(out.ids.end(), ids.begin(), ids.end());
  out.ids.push_back(eos_id_);
  out.attention_mask.assign(out.ids.size(), 1);
  while (out.ids.size() < static_cast<size_t>(max_length_)) {
    out.ids.push_back(pad_id_);
    out.attention_mask.push_back(0);
  }
  return out;
}

std::string ClipTokenizer::decode(const std::vector<int64_t>& ids) const {
  // Runs of vocabulary tokens become text through the byte map; tokens added after training
  // stand alone, separated by spaces (Hugging Face's _decode).
  std::vector<std::string> pieces;
  std::string run;
  auto flush = [&] {
    if (run.empty()) return;
    std::string bytes;
    const std::u32string chars = utf8_to_utf32(run);
    for (size_t i = 0; i < chars.size(); ++i) {
      const std::string c = utf32_to_utf8(chars.substr(i, 1));
      auto it = vocabulary_->unicode_to_byte.find(c);
      bytes += it != vocabulary_->unicode_to_byte.end() ? std::string(1, static_cast<char>(it->second)) : c;
    }
    std::string text = utf32_to_utf8(utf8_to_utf32(bytes));
    for (size_t at = text.find("</w>"); at != std::string::npos; at = text.find("</w>", at)) text.replace(at, 4, " ");
    const size_t first = text.find_first_not_of(' '), last = text.find_last_not_of(' ');
    if (first != std::string::npos) pieces.push_back(text.substr(first, last - first + 1));
    run.clear();
  };
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (id >= static_cast<int64_t>(vocabulary_->encoder.size())) {
      flush();
      pieces.push_back(token_text(id));
    } else {
      run += token_text(id);
    }
  }
  flush();
  std::string text;
  for (size_t i = 0; i < pieces.size(); ++i) text += (i ? " " : "") + pieces[i];
  // clean_up_tokenization_spaces (true in CLIP's tokenizer_config.json).
  for (const auto& [from, to] : {std::pair<const char*, const char*>{" .", "."}, {" ?", "?"}, {" !", "!"},
                                 {" ,", ","}, {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"},
                                 {" 've", "'ve"}, {" 're", "'re"}}) {
    const std::string f = from, t = to;
    for (size_t at = text.find(f); at != std::string::npos; at = text.find(f, at + t.size())) text.replace(at, f.size(), t);
  }
  return text;
}

}  // namespace singleinsert
