#include "cli_runner.h"

#include "golden.h"
#include "singleinsert/pipeline/default_model.h"
#include "singleinsert/world/scene.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace fs = std::filesystem;

namespace singleinsert::testing {
namespace {

std::string quote(const std::string& arg) {
  std::string out = "'";
  for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

std::string fresh_temp_dir(const std::string& name) {
  static int counter = 0;
  const fs::path dir = fs::temp_directory_path() / "singleinsert_tests" /
                       (name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string world_model_with_tokenizer() {
  static const std::string dir = [] {
    const fs::path folder = fresh_temp_dir("world_model");
    const fs::path source = fs::path(SINGLEINSERT_SOURCE_DIR) / "assets" / "world" / "model";
    for (const auto& entry : fs::directory_iterator(source))
      if (entry.path().filename() != "tokenizer") fs::create_symlink(entry.path(), folder / entry.path().filename());
    write_small_clip_tokenizer((folder / "tokenizer").string(), world::vocabulary_words());
    return folder.string();
  }();
  return dir;
}

std::string linked_tiny_model(const std::string& name, const std::string& parent) {
  const fs::path dir = parent.empty() ? fs::path(fresh_temp_dir(name)) : fs::path(parent) / name;
  fs::create_directories(dir);
  const fs::path source = golden_path("sd_tiny");
  fs::copy_file(source / "model_index.json", dir / "model_index.json");
  for (const char* component : {"tokenizer", "text_encoder", "unet", "vae", "scheduler"}) {
    fs::create_directories(dir / component);
    for (const auto& entry : fs::directory_iterator(source / component))
      fs::create_symlink(entry.path(), dir / component / entry.path().filename());
  }
  return dir.string();
}

std::string write_tiny_training_preset(const std::string& dir, int stage1_steps, double lr, int checkpoint_every) {
  const std::string path = dir + "/tiny_preset.json";
  const nlohmann::json preset = {
      {"resolution", 32},
      {"stage1", {{"steps", stage1_steps}, {"batch", 2}, {"lr", lr}}},
      {"stage2", {{"steps", 2}, {"batch", 2}, {"lr", 1e-3}}},
      {"checkpoint_every", checkpoint_every},
      {"encoder",
       {{"image_size", 32}, {"patch_size", 16}, {"hidden_size", 32}, {"intermediate_size", 64},
        {"num_hidden_layers", 2}, {"num_attention_heads", 4}}}};
  std::ofstream(path) << preset.dump();
  return path;
}

CliResult run_cli(const std::vector<std::string>& args, const std::string& shell_prefix) {
  const std::string dir = fresh_temp_dir("cli_io");
  const std::string out_path = dir + "/stdout", err_path = dir + "/stderr";
  std::string command = shell_prefix + quote(SINGLEINSERT_CLI);
  for (const auto& arg : args) command += " " + quote(arg);
  command += " >" + quote(out_path) + " 2>" + quote(err_path);
  const int status = std::system(command.c_str());
  CliResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = slurp(out_path);
  result.err = slurp(err_path);
  return result;
}

CliProcess spawn_cli(const std::vector<std::string>& args) {
  const std::string dir = fresh_temp_dir("cli_spawn");
  CliProcess process{-1, dir + "/stdout", dir + "/stderr"};
  process.pid = fork();
  if (process.pid == 0) {
    std::freopen(process.out_path.c_str(), "w", stdout);
    std::freopen(process.err_path.c_str(), "w", stderr);
    std::vector<char*> argv;
    std::string binary = SINGLEINSERT_CLI;
    argv.push_back(binary.data());
    std::vector<std::string> copies = args;
    for (auto& arg : copies) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    std::_Exit(127);
  }
  return process;
}

CliResult wait_cli(const CliProcess& process) {
  int status = 0;
  waitpid(process.pid, &status, 0);
  CliResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = slurp(process.out_path);
  result.err = slurp(process.err_path);
  return result;
}

}  // namespace singleinsert::testing
