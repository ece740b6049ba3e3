#pragma once
// Runs the singleinsert command line as a user would and captures what it prints.
#include <string>
#include <vector>

namespace singleinsert::testing {

struct CliResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// shell_prefix runs before the command in the same shell (e.g. "ulimit -f 4;").
CliResult run_cli(const std::vector<std::string>& args, const std::string& shell_prefix = "");

// Starts the command line in the background (stdout/stderr to files) and waits for it.
struct CliProcess {
  int pid = -1;
  std::string out_path, err_path;
};
CliProcess spawn_cli(const std::vector<std::string>& args);
CliResult wait_cli(const CliProcess& process);

// A training preset with a small image encoder and few steps at 32 px, so that each training
// command takes seconds; written to dir/tiny_preset.json, whose path is returned.
std::string write_tiny_training_preset(const std::string& dir, int stage1_steps = 3, double lr = 1e-3,
                                       int checkpoint_every = 0);

// A diffusers folder whose components link to sd_tiny's, so that one of its files can be
// replaced: parent/name, or a fresh temp dir when no parent is given.
std::string linked_tiny_model(const std::string& name, const std::string& parent = "");

// The committed world model (assets/world/model) with the tokenizer the world generates (the
// repository does not store it): a folder of links to its parts plus tokenizer/, made once.
std::string world_model_with_tokenizer();

// A fresh empty folder under the system temp dir, unique per call.
std::string fresh_temp_dir(const std::string& name);

}  // namespace singleinsert::testing
