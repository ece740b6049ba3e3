#include "singleinsert/pipeline/default_model.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <map>
#include <set>

#include "singleinsert/core/files.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/runtime.h"
#include "singleinsert/core/staged_directory.h"
#include "singleinsert/models/clip_text_model.h"
#include "singleinsert/models/clip_tokenizer.h"
#include "singleinsert/models/unet.h"
#include "singleinsert/models/vae.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

UNetConfig default_unet(int64_t text_width) {
  UNetConfig c;
  c.block_out_channels = {32, 64};
  c.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  c.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  c.layers_per_block = 1;
  c.num_attention_heads = {4, 4};
  c.transformer_layers_per_block = {1, 1};
  c.norm_num_groups = 16;
  c.cross_attention_dim = text_width;
  c.sample_size = 32;
  return c;
}

VaeConfig default_vae() {
  VaeConfig c;
  c.block_out_channels = {32, 64};
  c.layers_per_block = 1;
  c.norm_num_groups = 16;
  return c;
}

ClipTextConfig default_text_encoder(int64_t vocab_size) {
  ClipTextConfig c;
  c.encoder.hidden_size = 64;
  c.encoder.intermediate_size = 256;
  c.encoder.num_hidden_layers = 2;
  c.encoder.num_attention_heads = 4;
  c.vocab_size = vocab_size;
  return c;
}

// CLIP initialises its embeddings with small normals; unit normals would saturate the encoder.
void init_clip_embeddings(ClipTextModelImpl& text_encoder, at::Generator& generator) {
  at::NoGradGuard no_grad;
  text_encoder.text_model->embeddings->token_embedding->weight.normal_(0.0, 0.02, generator);
  text_encoder.text_model->embeddings->position_embedding->weight.normal_(0.0, 0.01, generator);
}

}  // namespace

const std::vector<std::string>& default_vocabulary_words() {
  static const std::vector<std::string> words = {
      "a", "an", "the", "of", "in", "on", "with", "and", "at", "by", "photo", "picture", "painting", "drawing",
      "portrait", "close", "up", "face", "person", "man", "woman", "child", "cat", "dog", "toy", "cup", "teddy",
      "bear", "hair", "hat", "sunglasses", "glasses", "earrings", "smiling", "sad", "happy", "red", "green", "blue",
      "yellow", "black", "white", "pink", "purple", "orange", "brown", "gray", "background", "beach", "forest",
      "city", "street", "room", "snow", "night", "day", "sunset", "mountain", "garden", "wearing", "holding",
      "sitting", "standing", "next", "to", "beside", "style", "anime", "cartoon", "oil", "watercolor", "sketch",
      "high", "quality", "detailed", "blurry", "astronaut", "riding", "horse", "mars", "space", "water"};
  return words;
}

void write_small_clip_tokenizer(const std::string& directory, const std::vector<std::string>& words) {
  const std::vector<std::string> alphabet = ClipTokenizer::byte_alphabet();
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  int64_t next = 0;
  for (const auto& symbol : alphabet) vocab[symbol] = next++;
  for (const auto& symbol : alphabet) vocab[symbol + "</w>"] = next++;
  // A tiny BPE training run: merge the most frequent adjacent pair until every word is one
  // symbol. Encoding replays merges in the same order, so each word becomes a single token.
  std::vector<std::vector<std::string>> spelled;
  for (const std::string& word : std::set<std::string>(words.begin(), words.end())) {
    std::vector<std::string> symbols;
    for (size_t i = 0; i < word.size(); ++i) symbols.push_back(std::string(1, word[i]) + (i + 1 == word.size() ? "</w>" : ""));
    spelled.push_back(symbols);
  }
  std::vector<std::string> merges;
  while (true) {
    std::map<std::pair<std::string, std::string>, int> counts;
    for (const auto& symbols : spelled)
      for (size_t i = 0; i + 1 < symbols.size(); ++i) ++counts[{symbols[i], symbols[i + 1]}];
    if (counts.empty()) break;
    auto best = counts.begin();  // highest count; ties go to the first pair in lexical order
    for (auto it = counts.begin(); it != counts.end(); ++it)
      if (it->second > best->second) best = it;
    const auto [first, second] = best->first;
    merges.push_back(first + " " + second);
    if (!vocab.contains(first + second)) vocab[first + second] = next++;
    for (auto& symbols : spelled) symbols = ClipTokenizer::merge_pair(symbols, first, second);
  }
  vocab["<|startoftext|>"] = next++;
  vocab["<|endoftext|>"] = next++;
  std::string merges_text = "#version: 0.2\n";
  for (const auto& merge : merges) merges_text += merge + "\n";
  fs::create_directories(directory);
  write_file_atomic((fs::path(directory) / "vocab.json").string(), vocab.dump());
  write_file_atomic((fs::path(directory) / "merges.txt").string(), merges_text);
  const nlohmann::json special = {{"bos_token", "<|startoftext|>"}, {"eos_token", "<|endoftext|>"},
                                  {"pad_token", "<|endoftext|>"}, {"unk_token", "<|endoftext|>"}};
  write_file_atomic((fs::path(directory) / "special_tokens_map.json").string(), special.dump(2));
  nlohmann::json config = special;
  config["model_max_length"] = 77;
  config["tokenizer_class"] = "CLIPTokenizer";
  config["clean_up_tokenization_spaces"] = true;
  write_file_atomic((fs::path(directory) / "tokenizer_config.json").string(), config.dump(2));
}

void create_default_model(const std::string& directory, uint64_t seed) {
  write_directory_atomic(directory, [&](const fs::path& staging) {
    write_small_clip_tokenizer((staging / "tokenizer").string(), default_vocabulary_words());
    const int64_t vocab_size = ClipTokenizer::load((staging / "tokenizer").string()).vocab_size();

    at::Generator generator = make_cpu_generator(seed);
    ClipTextModel text_encoder(default_text_encoder(vocab_size));
    UNet2DConditionModel unet(default_unet(text_encoder->config().encoder.hidden_size));
    AutoencoderKL vae(default_vae());
    for (torch::nn::Module* module : std::initializer_list<torch::nn::Module*>{text_encoder.get(), unet.get(), vae.get()})
      init_parameters(*module, generator);
    init_clip_embeddings(*text_encoder, generator);
    write_model_parts(staging.string(), *text_encoder, *unet, *vae, sd15_scheduler_config_json(), at::kFloat);
  });
}

std::shared_ptr<ModelBundle> random_model_bundle(Architecture architecture, const ExecutionOptions& execution,
                                                 const std::string& scratch_dir, uint64_t seed) {
  const fs::path tokenizer_dir = fs::path(scratch_dir) / "tokenizer";
  write_small_clip_tokenizer(tokenizer_dir.string(), default_vocabulary_words());
  ClipTokenizer tokenizer = ClipTokenizer::load(tokenizer_dir.string());
  const bool full = architecture == Architecture::kSd15;
  ClipTextConfig text_config = full ? ClipTextConfig() : default_text_encoder(tokenizer.vocab_size());
  if (full) {
    text_config.encoder.hidden_size = 768;
    text_config.encoder.intermediate_size = 3072;
    text_config.encoder.num_hidden_layers = 12;
    text_config.encoder.num_attention_heads = 12;
  }
  text_config.vocab_size = std::max<int64_t>(text_config.vocab_size, tokenizer.vocab_size());
  auto bundle = std::make_shared<ModelBundle>(ModelBundle{
      "random:" + std::string(full ? "sd15" : "default"), tokenizer_dir.string(), tokenizer, ClipTextModel(text_config),
      UNet2DConditionModel(full ? UNetConfig::sd15() : default_unet(text_config.encoder.hidden_size)),
      AutoencoderKL(full ? VaeConfig() : default_vae()), JsonConfig::parse(sd15_scheduler_config_json(), "sd15 scheduler"),
      execution, ""});
  // Initialised on the device itself: a GPU fills a billion parameters in a blink, where the
  // CPU would take most of a minute and then copy them over.
  at::Generator generator = make_device_generator(execution.device, seed);
  const auto modules =
      std::initializer_list<torch::nn::Module*>{bundle->text_encoder.get(), bundle->unet.get(), bundle->vae.get()};
  for (torch::nn::Module* module : modules) {
    module->to(execution.device);
    init_parameters(*module, generator);
  }
  init_clip_embeddings(*bundle->text_encoder, generator);
  for (torch::nn::Module* module : modules) {
    module->to(execution.dtype);
    module->eval();
    for (auto& parameter : module->parameters()) parameter.set_requires_grad(false);
  }
  release_free_memory();  // the float32 originals of a reduced-precision model
  return bundle;
}

}  // namespace singleinsert
