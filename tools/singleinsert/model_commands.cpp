// singleinsert create-default-model: the small built-in model used when no real weights are at hand.
#include <cstdio>

#include "commands.h"
#include "singleinsert/pipeline/default_model.h"

namespace singleinsert::cli {

void add_create_default_model_command(CLI::App& app) {
  auto out = std::make_shared<std::string>();
  auto seed = std::make_shared<uint64_t>(0);
  CLI::App* command = app.add_subcommand(
      "create-default-model",
      "Write the embedded default model (small, untrained: it draws noise) as a diffusers folder");
  command->add_option("--out", *out, "Folder to create")->required();
  command->add_option("--seed", *seed, "Seed of its random weights")->capture_default_str();
  command->callback([out, seed] {
    create_default_model(*out, *seed);
    std::printf("%s\n", out->c_str());
  });
}

}  // namespace singleinsert::cli
