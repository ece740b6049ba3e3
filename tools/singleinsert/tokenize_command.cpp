// singleinsert tokenize: the 77 token ids a prompt becomes, for debugging prompts.
#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/models/clip_tokenizer.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {
namespace {

struct TokenizeArgs {
  std::string model;
  std::string prompt;
  bool json = false;
};

void run_tokenize(const TokenizeArgs& args) {
  fs::path directory(args.model);
  if (!fs::exists(directory)) throw Error(fmt::format("{}: no such model folder", args.model));
  // A model folder or a tokenizer folder itself.
  if (fs::exists(directory / "tokenizer")) directory /= "tokenizer";
  const ClipTokenizer tokenizer = ClipTokenizer::load(directory.string());
  const TokenizedPrompt tokens = tokenizer.tokenize(args.prompt);
  if (args.json) {
    nlohmann::json out = {{"input_ids", tokens.ids},
                          {"attention_mask", tokens.attention_mask},
                          {"tokens", tokenizer.tokens(args.prompt)},
                          {"length", tokens.untruncated_length},
                          {"max_length", tokenizer.max_length()},
                          {"truncated", tokens.truncated_text}};
    std::printf("%s\n", out.dump().c_str());
    return;
  }
  std::string line;
  for (size_t i = 0; i < tokens.ids.size(); ++i) line += (i ? " " : "") + std::to_string(tokens.ids[i]);
  std::printf("%s\n", line.c_str());
  if (!tokens.truncated_text.empty())
    std::fprintf(stderr, "warning: %d tokens; truncated to %d, dropping \"%s\"\n", tokens.untruncated_length,
                 tokenizer.max_length(), tokens.truncated_text.c_str());
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  CLI::App* command = app.add_subcommand("tokenize", "Print the 77 token ids of a prompt");
  command->add_option("--model", args->model, "Model folder (or its tokenizer/ folder)")->required();
  command->add_option("--prompt", args->prompt, "Prompt")->required();
  command->add_flag("--json", args->json, "Print ids, tokens, length and truncation as JSON");
  command->callback([args] { run_tokenize(*args); });
}

}  // namespace singleinsert::cli
