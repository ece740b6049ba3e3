// singleinsert batch: one concept per photo of a `prepare` folder (invert, finetune, a fixed
// prompt list, and on the toy world its measurements), resumable, over several devices at once.
// Each stage runs as a child process of this same binary, so a stage that fails (or a device
// that runs out of memory) ends that photo, not the batch; a finished stage is never run again
// and an interrupted one resumes from its checkpoint.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_support.h"
#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace singleinsert::cli {
namespace {

struct BatchArgs {
  std::string prepared, out, model, devices = "cpu", detector, world_samples, stage1_args, stage2_args,
      generate_args, eval_args;
  std::vector<std::string> prompts;
  int checkpoint_every = 10;
  int index = -1;
  bool summary_only = false;
};

struct Photo {
  std::string name;   // output stem: the prepared NAME.png
  std::string input;  // the file prepare read
};

std::vector<std::string> split_words(const std::string& text) {
  std::istringstream stream(text);
  std::vector<std::string> words;
  for (std::string word; stream >> word;) words.push_back(word);
  return words;
}

json read_json_file(const fs::path& path) {
  std::ifstream file(path);
  if (!file) throw Error(fmt::format("{}: cannot read", path.string()));
  try {
    return json::parse(file);
  } catch (const json::exception& error) {
    throw Error(fmt::format("{}: not valid JSON ({})", path.string(), error.what()));
  }
}

std::vector<Photo> prepared_photos(const std::string& prepared, std::string& class_word) {
  const json report = read_json_file(fs::path(prepared) / "prepare.json");
  if (!report.contains("inputs") || !report["inputs"].is_array())
    throw Error(fmt::format("{}/prepare.json: no inputs list (is it a `singleinsert prepare` folder?)", prepared));
  class_word = report.value("class", "face");
  std::vector<Photo> photos;
  for (const json& input : report["inputs"]) {
    if (input.value("status", "") != "prepared") continue;
    const std::string image = input.value("image", "");
    photos.push_back({fs::path(image).stem().string(), input.value("input", image)});
  }
  if (photos.empty()) throw Error(fmt::format("{}/prepare.json: no prepared photo", prepared));
  return photos;
}

std::vector<std::string> comma_list(std::string text) {
  std::replace(text.begin(), text.end(), ',', ' ');
  return split_words(text);
}

// "cpu", or CUDA device numbers "0,1,..." among the devices this process may use: when
// CUDA_VISIBLE_DEVICES is set (as Slurm sets it for the GPUs it allocated), device i is its i-th
// entry. Each value is what a stage's CUDA_VISIBLE_DEVICES is set to.
std::vector<std::optional<std::string>> parse_devices(const std::string& text) {
  if (text == "cpu") return {std::nullopt};
  const char* visible_env = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::vector<std::string> visible = visible_env ? comma_list(visible_env) : std::vector<std::string>{};
  std::vector<std::optional<std::string>> devices;
  for (const std::string& word : comma_list(text)) {
    if (word.size() > 3 || word.find_first_not_of("0123456789") != std::string::npos)
      throw Error(fmt::format("--devices {}: expected cpu or CUDA device numbers like 0,1", text));
    const size_t index = std::stoul(word);
    if (visible_env && index >= visible.size())
      throw Error(fmt::format("--devices {}: CUDA_VISIBLE_DEVICES={} gives this process {} devices", text,
                              visible_env, visible.size()));
    devices.push_back(visible_env ? visible[index] : word);
  }
  if (devices.empty()) throw Error(fmt::format("--devices {}: expected cpu or CUDA device numbers like 0,1", text));
  return devices;
}

std::string self_executable() {
  std::error_code error;
  const fs::path self = fs::read_symlink("/proc/self/exe", error);
  if (error) throw Error("batch: cannot find this program's own path (/proc/self/exe)");
  return self.string();
}

// Runs argv with stdout and stderr appended to `log`, with CUDA_VISIBLE_DEVICES set to
// `cuda_device` when given; the child dies with this process (a killed batch leaves no stage
// running on behind it). Everything the child needs is built before fork(): other workers'
// threads may hold the allocator's locks at that moment. Returns the exit status.
int run_stage(const std::vector<std::string>& argv, const std::optional<std::string>& cuda_device, const fs::path& log) {
  std::vector<std::string> environment;
  for (char** variable = environ; *variable != nullptr; ++variable)
    if (!cuda_device || std::string(*variable).rfind("CUDA_VISIBLE_DEVICES=", 0) != 0) environment.emplace_back(*variable);
  if (cuda_device) environment.push_back("CUDA_VISIBLE_DEVICES=" + *cuda_device);
  const auto pointers = [](const std::vector<std::string>& strings) {
    std::vector<char*> list;
    for (const auto& text : strings) list.push_back(const_cast<char*>(text.c_str()));
    list.push_back(nullptr);
    return list;
  };
  std::vector<char*> args = pointers(argv), env = pointers(environment);
  const std::string log_path = log.string();
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw Error("batch: fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execve(args[0], args.data(), env.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The last "error: ..." line a failed stage printed.
std::string last_error(const fs::path& log) {
  std::ifstream file(log);
  std::string line, error = "see " + log.string();
  while (std::getline(file, line))
    if (line.rfind("error: ", 0) == 0) error = line.substr(7);
  return error;
}

class Batch {
 public:
  Batch(BatchArgs args, std::vector<Photo> photos, std::string class_word)
      : args_(std::move(args)),
        photos_(std::move(photos)),
        class_word_(std::move(class_word)),
        self_(self_executable()),
        devices_(parse_devices(args_.devices)) {
    if (args_.prompts.empty())
      args_.prompts = {fmt::format("a photo of a * {}", class_word_), fmt::format("a photo of a * {} wearing sunglasses", class_word_),
                       fmt::format("a photo of a * {} wearing a hat", class_word_)};
    if (!args_.world_samples.empty()) {
      std::ifstream file(args_.world_samples);
      if (!file) throw Error(fmt::format("--world-samples {}: cannot read", args_.world_samples));
      for (std::string line; std::getline(file, line);) {
        if (line.empty()) continue;
        const json sample = json::parse(line, nullptr, false);
        if (!sample.is_object()) throw Error(fmt::format("--world-samples {}: a line is not a JSON object", args_.world_samples));
        world_lines_[sample.value("image", "")] = line;
      }
    }
  }

  // Every photo, spread over the devices (one worker each).
  void run_all() {
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    for (const auto& device : devices_)
      workers.emplace_back([&, device] {
        for (size_t i = next++; i < photos_.size(); i = next++) {
          try {
            run_photo(photos_[i], device);
          } catch (const std::exception& error) {  // a damaged file of this photo's: the others go on
            record_failure(photos_[i], error.what());
          }
        }
      });
    for (auto& worker : workers) worker.join();
  }

  // One photo on the first device (a job array's task); throws when it fails.
  void run_one(int index) {
    if (index < 0 || index >= static_cast<int>(photos_.size()))
      throw Error(fmt::format("--index {}: the folder has {} prepared photos (0 to {})", index, photos_.size(),
                              photos_.size() - 1));
    const Photo& photo = photos_[static_cast<size_t>(index)];
    run_photo(photo, devices_.front());
    const json status = read_json_file(fs::path(args_.out) / photo.name / "status.json");
    if (status.value("status", "") != "done") throw Error(fmt::format("{}: {}", photo.name, status.value("error", "")));
  }

  // summary.json and summary.md in the output folder; the table is also printed. Returns how
  // many photos are not done.
  size_t write_summary() const {
    json rows = json::array();
    std::string table = "| photo | status | stage I s | stage II s | I+II s | loss I | loss II | esr | closeness |\n"
                        "|---|---|---|---|---|---|---|---|---|\n";
    int done = 0;
    for (const Photo& photo : photos_) {
      const fs::path status_file = fs::path(args_.out) / photo.name / "status.json";
      json row = {{"photo", photo.name}, {"status", "not run"}};
      if (fs::exists(status_file)) row = read_json_file(status_file);
      done += row["status"] == "done";
      rows.push_back(row);
      const auto number = [&](const char* key) {
        return row.contains(key) && row[key].is_number() ? std::optional<double>(row[key].get<double>()) : std::nullopt;
      };
      const auto figure = [](std::optional<double> value, const char* format) {
        return value ? fmt::format(fmt::runtime(format), *value) : std::string();
      };
      const auto stage1 = number("stage1_seconds"), stage2 = number("stage2_seconds");
      table += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", photo.name,
                           row["status"] == "failed" ? "failed: " + row.value("error", "") : row["status"].get<std::string>(),
                           figure(stage1, "{:.0f}"), figure(stage2, "{:.0f}"),
                           figure(stage1 && stage2 ? std::optional<double>(*stage1 + *stage2) : std::nullopt, "{:.0f}"),
                           figure(number("stage1_loss"), "{:.4f}"), figure(number("stage2_loss"), "{:.4f}"),
                           figure(number("esr"), "{:.2f}"), figure(number("closeness_whole"), "{:.2f}"));
    }
    write_file_atomic((fs::path(args_.out) / "summary.json").string(),
                      json{{"photos", rows}, {"done", done}, {"total", photos_.size()}}.dump(2) + "\n");
    write_file_atomic((fs::path(args_.out) / "summary.md").string(), table);
    std::printf("%s", table.c_str());
    std::fprintf(stderr, "%d of %zu photos done: %s/summary.md\n", done, photos_.size(), args_.out.c_str());
    return photos_.size() - static_cast<size_t>(done);
  }

 private:
  void run_photo(const Photo& photo, const std::optional<std::string>& device) {
    const fs::path dir = fs::path(args_.out) / photo.name;
    if (fs::exists(dir / "status.json") && read_json_file(dir / "status.json").value("status", "") == "done") {
      report(photo, "already done");
      return;
    }
    fs::create_directories(dir);
    // `singleinsert COMMAND... --model M FLAGS... --device D EXTRA...`, logged to dir/LOG; false on failure.
    const auto run = [&](std::vector<std::string> argv, const std::vector<std::string>& flags,
                         const std::string& extra, const std::string& log) {
      argv.insert(argv.begin(), self_);
      for (const auto& more : {std::vector<std::string>{"--model", args_.model}, flags,
                               std::vector<std::string>{"--device", device ? "cuda" : "cpu"}, split_words(extra)})
        argv.insert(argv.end(), more.begin(), more.end());
      return run_stage(argv, device, dir / log) == 0;
    };
    const auto fail = [&](const std::string& stage, const std::string& log) {
      record_failure(photo, fmt::format("{}: {}", stage, last_error(dir / log)));
    };
    const auto resume_if_interrupted = [&](const std::string& out) {
      return fs::exists(dir / (out + ".partial")) ? std::vector<std::string>{"--resume"} : std::vector<std::string>{};
    };
    const std::string checkpoint_every = std::to_string(args_.checkpoint_every);
    const auto started = std::chrono::steady_clock::now();
    const fs::path prepared = fs::path(args_.prepared);
    if (!fs::exists(dir / "concept-stage1")) {
      report(photo, "stage I");
      std::vector<std::string> flags = {"--image", (prepared / (photo.name + ".png")).string(), "--mask",
                                        (prepared / (photo.name + "_mask.png")).string(), "--class", class_word_,
                                        "--out", (dir / "concept-stage1").string(), "--checkpoint-every",
                                        checkpoint_every};
      for (const auto& flag : resume_if_interrupted("concept-stage1")) flags.push_back(flag);
      if (!run({"invert"}, flags, args_.stage1_args, "invert.log")) return fail("stage I", "invert.log");
    }
    if (!fs::exists(dir / "concept")) {
      report(photo, "stage II");
      std::vector<std::string> flags = {"--concept", (dir / "concept-stage1").string(), "--out",
                                        (dir / "concept").string(), "--checkpoint-every", checkpoint_every};
      for (const auto& flag : resume_if_interrupted("concept")) flags.push_back(flag);
      if (!run({"finetune"}, flags, args_.stage2_args, "finetune.log")) return fail("stage II", "finetune.log");
    }
    if (!fs::exists(dir / "images" / "done")) {
      report(photo, "generate");
      std::vector<std::string> flags = {"--concept", (dir / "concept").string(), "--out", (dir / "images").string(),
                                        "--overwrite"};
      for (const auto& prompt : args_.prompts) flags.insert(flags.end(), {"--prompt", prompt});
      if (!run({"generate"}, flags, args_.generate_args, "generate.log")) return fail("generate", "generate.log");
      write_file_atomic((dir / "images" / "done").string(), "");
    }
    json status = {{"photo", photo.name}, {"input", photo.input}};
    const json concept = read_json_file(dir / "concept" / "concept.json");
    if (!args_.detector.empty()) {
      const auto line = world_lines_.find(photo.input);
      if (line == world_lines_.end())
        return record_failure(photo, fmt::format("measure: {} is not in --world-samples", photo.input));
      if (!fs::exists(dir / "eval.json")) {
        report(photo, "measure");
        write_file_atomic((dir / "source.jsonl").string(), line->second + "\n");
        const std::vector<std::string> flags = {"--concept", (dir / "concept").string(), "--detector", args_.detector,
                                                "--source", (dir / "source.jsonl").string(), "--seeds", "2",
                                                "--without-floors", "--json", (dir / "eval.json").string()};
        if (!run({"eval", "concept"}, flags, args_.eval_args, "eval.log")) return fail("measure", "eval.log");
      }
      const json figures = read_json_file(dir / "eval.json");
      if (figures.contains("esr")) status["esr"] = figures["esr"];
      if (figures.contains("closeness") && figures["closeness"].contains("whole"))
        status["closeness_whole"] = figures["closeness"]["whole"];
    }
    const json& wall = concept["wall_time_seconds"];
    const json& losses = concept["final_losses"];
    status["status"] = "done";
    status["stage1_seconds"] = wall.value("stage1", 0.0);
    status["stage2_seconds"] = wall.value("stage2", 0.0);
    status["stage1_loss"] = losses["stage1"].value("loss", 0.0);
    status["stage2_loss"] = losses["stage2"].value("loss", 0.0);
    status["this_run_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    write_file_atomic((dir / "status.json").string(), status.dump(2) + "\n");
    report(photo, "done");
  }

  void record_failure(const Photo& photo, const std::string& error) {
    const json status = {{"photo", photo.name}, {"input", photo.input}, {"status", "failed"}, {"error", error}};
    std::error_code ignored;
    fs::create_directories(fs::path(args_.out) / photo.name, ignored);
    write_file_atomic((fs::path(args_.out) / photo.name / "status.json").string(), status.dump(2) + "\n");
    report(photo, "failed: " + error);
  }

  void report(const Photo& photo, const std::string& what) {
    const std::lock_guard<std::mutex> lock(print_mutex_);
    std::fprintf(stderr, "%s: %s\n", photo.name.c_str(), what.c_str());
  }

  BatchArgs args_;
  std::vector<Photo> photos_;
  std::string class_word_;
  std::string self_;
  std::vector<std::optional<std::string>> devices_;  // CUDA_VISIBLE_DEVICES of each worker; nullopt: the CPU
  std::map<std::string, std::string> world_lines_;  // the world's samples.jsonl, by image file name
  std::mutex print_mutex_;
};

}  // namespace

void add_batch_command(CLI::App& app) {
  auto args = std::make_shared<BatchArgs>();
  CLI::App* command = app.add_subcommand(
      "batch", "For every photo of a `prepare` folder: invert, finetune and a fixed prompt list, one concept each; "
               "resumable (finished stages are skipped, interrupted ones resume), over several devices at once");
  command->add_option("--prepared", args->prepared, "Folder written by singleinsert prepare")->required();
  command->add_option("--out", args->out, "Batch folder: one sub-folder per photo, then summary.md and summary.json")
      ->required();
  command->add_option("--model", args->model, "Diffusers folder, or a single-file .safetensors checkpoint")->required();
  command->add_option("--devices", args->devices, "cpu, or CUDA devices to spread the photos over: 0,1,...")
      ->capture_default_str();
  command->add_option("--prompt", args->prompts,
                      "Prompt to draw each concept with (repeatable; default: the class word plain, with sunglasses "
                      "and with a hat)");
  command->add_option("--stage1-args", args->stage1_args, "More flags for invert, e.g. \"--preset world\"");
  command->add_option("--stage2-args", args->stage2_args, "More flags for finetune");
  command->add_option("--generate-args", args->generate_args, "More flags for generate, e.g. \"--steps 25 --seed 1\"");
  command->add_option("--eval-args", args->eval_args, "More flags for the toy world's eval concept, e.g. \"--steps 10\"");
  command->add_option("--checkpoint-every", args->checkpoint_every, "Training steps between checkpoints")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command->add_option("--detector", args->detector,
                      "Toy world: measure each concept with this detector (with --world-samples)");
  command->add_option("--world-samples", args->world_samples,
                      "Toy world: the samples.jsonl of the renders that were prepared");
  command->add_option("--index", args->index,
                      "Run only this photo (0-based, in prepare.json's order; one task of a job array), no summary");
  command->add_flag("--summary-only", args->summary_only, "Only collect the photos' results into the summary");
  command->callback([args] {
    if (args->detector.empty() != args->world_samples.empty())
      throw Error("batch: --detector and --world-samples go together");
    if (!fs::is_directory(args->model) && !fs::is_regular_file(args->model))
      throw Error(fmt::format("{}: no such model folder or file", args->model));
    std::string class_word;
    std::vector<Photo> photos = prepared_photos(args->prepared, class_word);
    ensure_writable_directory(args->out);
    Batch batch(*args, std::move(photos), class_word);
    if (args->index >= 0) return batch.run_one(args->index);
    if (!args->summary_only) batch.run_all();
    if (const size_t unfinished = batch.write_summary(); unfinished > 0 && !args->summary_only)
      throw Error(fmt::format("batch: {} photos did not finish (their errors are in summary.md)", unfinished));
  });
}

}  // namespace singleinsert::cli
