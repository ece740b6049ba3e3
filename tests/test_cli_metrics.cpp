// eval images and report, run as a user runs them: the toy world's demo concept (invert, finetune,
// generate) scored with the tiny metric models of tests/data/metrics, its report page, and the
// refusals of bad input.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include <signal.h>

#include "cli_runner.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/io/png.h"
#include "singleinsert/world/clip_training.h"
#include "singleinsert/world/scene.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

const std::string kSource = SINGLEINSERT_SOURCE_DIR;
const std::string kMetrics = kSource + "/tests/data/metrics";

const std::vector<std::string> kPrompts = {"a photo of a * face wearing sunglasses", "a photo of a * face wearing a hat",
                                           "a photo of a * face"};

// The demo's steps in miniature, made once for every test here.
struct DemoRun {
  std::string dir, model, tokenizer, concept_dir, images;
};
const DemoRun& demo_run() {
  static const DemoRun run = [] {
    DemoRun r;
    r.dir = testing::fresh_temp_dir("eval_images");
    r.model = r.dir + "/model";
    fs::copy(kSource + "/assets/world/model", r.model, fs::copy_options::recursive);
    fs::remove_all(r.model + "/tokenizer");
    r.tokenizer = r.model + "/tokenizer";
    auto ok = [](const testing::CliResult& result) {
      if (result.exit_code != 0) throw std::runtime_error(result.err);
    };
    ok(testing::run_cli({"world", "--write-tokenizer", r.tokenizer}));
    ok(testing::run_cli({"world", "--out", r.dir + "/subject", "--identity", "7", "--held-out", "--source", "--size",
                         "64"}));
    ok(testing::run_cli({"invert", "--model", r.model, "--preset", "world", "--class", "face", "--image",
                         r.dir + "/subject/sample_0000.png", "--mask", r.dir + "/subject/sample_0000_mask.png",
                         "--steps", "3", "--batch", "2", "--out", r.dir + "/concept-stage1"}));
    r.concept_dir = r.dir + "/concept";
    ok(testing::run_cli({"finetune", "--model", r.model, "--concept", r.dir + "/concept-stage1", "--steps", "2",
                         "--batch", "1", "--out", r.concept_dir}));
    r.images = r.dir + "/images";
    std::vector<std::string> generate = {"generate", "--model", r.model, "--concept", r.concept_dir,
                                         "--images-per-prompt", "2", "--steps", "5", "--grid", "--out", r.images};
    for (const std::string& prompt : kPrompts) generate.insert(generate.end(), {"--prompt", prompt});
    ok(testing::run_cli(generate));
    return r;
  }();
  return run;
}

std::vector<std::string> eval_args(const DemoRun& run, const std::string& images, const std::string& json) {
  return {"eval", "images", "--concept", run.concept_dir, "--images", images, "--clip", kMetrics + "/clip_tiny",
          "--clip-tokenizer", run.tokenizer, "--dino", kMetrics + "/dino_tiny", "--lpips",
          kMetrics + "/lpips_alex.safetensors", "--masks", "source", "--edits",
          kSource + "/assets/editing_prompts/world.json", "--prompt", "a photo of a * face", "--json", json};
}

double figure_line(const std::string& out, const std::string& name) {
  std::smatch match;
  const std::regex line("\n" + name + "\t([0-9.]+)");
  if (!std::regex_search(out, match, line)) return -1;
  return std::stod(match[1]);
}

TEST(EvalImages, PrintsTheSevenFiguresForTheToyWorldDemoConcept) {
  const DemoRun& run = demo_run();
  // The generations, and the source itself under another name: a generation identical to the
  // source scores 1 on every image similarity.
  const std::string images = testing::fresh_temp_dir("eval_images_set");
  for (const auto& entry : fs::directory_iterator(run.images)) fs::copy(entry.path(), images + "/" + entry.path().filename().string());
  fs::copy(run.concept_dir + "/source.png", images + "/source_copy.png");
  const std::string work = testing::fresh_temp_dir("eval_images_out");
  const std::string json = work + "/scores.json";
  const auto result = testing::run_cli(eval_args(run, images, json));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  for (const char* name : {"CLIP-I-f", "CLIP-I-b", "DINO-f", "DINO-b", "CLIP-T", "DIV", "ESR"})
    EXPECT_GE(figure_line(result.out, name), 0.0) << name << " in\n" << result.out;

  const nlohmann::json record = nlohmann::json::parse(std::ifstream(json));
  const nlohmann::json& scores = record.at("scores");
  ASSERT_EQ(scores.at("images").size(), 7u);  // six generations (not grid.png) and the copy
  int listed = 0;
  for (const nlohmann::json& row : scores.at("images")) {
    listed += row.at("listed").get<bool>();
    for (const char* key : {"clip_i_f", "clip_i_b", "dino_f", "dino_b", "clip_t"}) {
      EXPECT_TRUE(row.at(key).is_number()) << key;
      EXPECT_LE(row.at(key).get<double>(), 1.0 + 1e-6) << key;
      EXPECT_GE(row.at(key).get<double>(), -1.0 - 1e-6) << key;
    }
    if (row.at("name") == "source_copy.png") {
      EXPECT_EQ(row.at("prompt"), "a photo of a * face");  // from --prompt: the file records none
      for (const char* key : {"clip_i_f", "clip_i_b", "dino_f", "dino_b"})
        EXPECT_NEAR(row.at(key).get<double>(), 1.0, 1e-6) << key;
    }
    for (const nlohmann::json& edit : row.at("edits")) {
      EXPECT_GE(edit.at("probability").get<double>(), 0.0);
      EXPECT_LE(edit.at("probability").get<double>(), 1.0);
    }
  }
  EXPECT_EQ(listed, 4);  // sunglasses and hat are on the world list; "a photo of a * face" is not
  EXPECT_EQ(scores.at("esr_images"), 4);
  EXPECT_EQ(scores.at("div_prompts"), 3);  // the copy shares the unlisted prompt: three pairs there
  EXPECT_GT(scores.at("div").get<double>(), 0.0);
  EXPECT_NEAR(figure_line(result.out, "ESR"), scores.at("esr").get<double>(), 1e-4);

  // Its report: one self-contained page with the source, the mask, the generations and the curves.
  const std::string page = work + "/report.html";
  const auto report = testing::run_cli({"report", "--concept", run.concept_dir, "--eval", json, "--out", page});
  ASSERT_EQ(report.exit_code, 0) << report.err;
  const std::string html = read_file(page);
  size_t embedded = 0;
  for (size_t at = html.find("data:image/png;base64,"); at != std::string::npos;
       at = html.find("data:image/png;base64,", at + 1))
    ++embedded;
  EXPECT_EQ(embedded, 2u + 7u);  // source, mask and every scored image
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);
  EXPECT_EQ(html.find("missing</div>"), std::string::npos);
  for (const std::string& text : {std::string("<svg"), std::string("CLIP-I-f"), std::string("DINO-b"),
                                  std::string("ESR"), kPrompts[0]})
    EXPECT_NE(html.find(text), std::string::npos) << text;
  const auto again = testing::run_cli({"report", "--concept", run.concept_dir, "--out", page});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;
  EXPECT_EQ(read_file(page), html);
}

std::vector<std::string> with(std::vector<std::string> args, const std::string& flag, const std::string& value) {
  const auto at = std::find(args.begin(), args.end(), flag);
  if (at != args.end()) *(at + 1) = value;
  else args.insert(args.end(), {flag, value});
  return args;
}

TEST(EvalImages, AutomaticMasksFindTheFaceInAPhotograph) {
  // --masks auto: the face detector and head masker of prepare. The astronaut photograph
  // (python3-imageio) has a face; the cartoon generations have none the detector finds, so they
  // get no region scores and a note says so.
  const DemoRun& run = demo_run();
  const std::string astronaut = "/usr/lib/python3/dist-packages/imageio/resources/images/astronaut.png";
  ASSERT_TRUE(fs::exists(astronaut)) << "scripts/deps.sh installs python3-imageio";
  const std::string images = testing::fresh_temp_dir("eval_images_auto");
  fs::copy_file(astronaut, images + "/astronaut.png");
  fs::copy_file(run.images + "/0000.png", images + "/0000.png");
  const std::vector<std::string> args =
      with(eval_args(run, images, images + "/scores.json"), "--masks", "auto");
  const auto result = testing::run_cli(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json rows = nlohmann::json::parse(std::ifstream(images + "/scores.json")).at("scores").at("images");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].at("name"), "0000.png");
  EXPECT_TRUE(rows[0].at("clip_i_f").is_null());
  EXPECT_EQ(rows[1].at("name"), "astronaut.png");
  for (const char* key : {"clip_i_f", "clip_i_b", "dino_f", "dino_b"}) EXPECT_TRUE(rows[1].at(key).is_number()) << key;
  EXPECT_NE(result.err.find("1 image(s) without a foreground mask"), std::string::npos) << result.err;
}

// Each bad input: a non-zero exit, one line on stderr that says what is wrong, no --json written.
void expect_refused(const std::vector<std::string>& args, const std::string& json, const std::string& needle) {
  const auto result = testing::run_cli(args);
  EXPECT_NE(result.exit_code, 0) << needle;
  EXPECT_NE(result.err.find(needle), std::string::npos) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_FALSE(fs::exists(json)) << needle;
}


TEST(EvalImages, RefusesBadInputWithOneLineAndWritesNothing) {
  const DemoRun& run = demo_run();
  const std::string dir = testing::fresh_temp_dir("eval_images_bad");
  const std::string json = dir + "/scores.json";
  const std::vector<std::string> good = eval_args(run, run.images, json);

  // A metric model folder of the wrong kind.
  expect_refused(with(good, "--clip", kMetrics + "/dino_tiny"), json, "model_type 'vit' is not a CLIP model");
  expect_refused(with(good, "--dino", kMetrics + "/clip_tiny"), json, "model_type 'clip' is not a ViT");
  expect_refused(with(good, "--lpips", kMetrics + "/clip_tiny/model.safetensors"), json, "not LPIPS AlexNet weights");
  // One with a tensor missing: it is named.
  const std::string broken = dir + "/dino_broken";
  fs::copy(kMetrics + "/dino_tiny", broken, fs::copy_options::recursive);
  const SafetensorsFile file = SafetensorsFile::open(broken + "/model.safetensors");
  NamedTensors kept;
  for (const std::string& key : file.keys())
    if (key != "layernorm.weight") kept.emplace_back(key, file.tensor(key));
  save_safetensors(broken + "/model.safetensors", kept);
  expect_refused(with(good, "--dino", broken), json, "layernorm.weight");
  // Masks of another size than the images.
  const std::string masks = dir + "/masks";
  fs::create_directories(masks);
  for (const auto& entry : fs::directory_iterator(run.images))
    if (entry.path().filename() != "grid.png" && entry.path().extension() == ".png")
      write_png(masks + "/" + entry.path().stem().string() + "_mask.png", at::full({32, 32, 3}, 255, at::kByte));
  expect_refused(with(good, "--masks", masks), json, "the image is 64x64 but its mask is 32x32");
  // An image without a mask in the folder.
  fs::remove(masks + "/0003_mask.png");
  expect_refused(with(good, "--masks", masks), json, "no mask for 0003.png");
  // An empty image folder.
  const std::string empty = dir + "/empty";
  fs::create_directories(empty);
  expect_refused(with(good, "--images", empty), json, "no images");
  // An editing list that is not one.
  write_file_atomic(dir + "/edits.json", "{\"prompts\": [{\"prompt\": \"a face\", \"edits\": []}]}");
  expect_refused(with(good, "--edits", dir + "/edits.json"), json, "the prompt has no *");
  // A report of a record that is not eval images'.
  write_file_atomic(dir + "/other.json", "{\"esr\": 1}");
  expect_refused({"report", "--concept", run.concept_dir, "--eval", dir + "/other.json", "--out", dir + "/r.html"},
                 dir + "/r.html", "not a record of `eval images --json`");
}

TEST(EvalImages, GenerateTakesTheEditingListsPrompts) {
  const DemoRun& run = demo_run();
  const std::string dir = testing::fresh_temp_dir("prompts_from");
  const auto listed = testing::run_cli({"generate", "--model", run.model, "--concept", run.concept_dir, "--prompts-from",
                                        kSource + "/assets/editing_prompts/world.json", "--steps", "1", "--out",
                                        dir + "/listed"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const nlohmann::json list = nlohmann::json::parse(read_file(kSource + "/assets/editing_prompts/world.json"));
  for (size_t i = 0; i < list.at("prompts").size(); ++i) {
    const auto text = read_png_text(dir + "/listed/" + std::string(4 - std::to_string(i).size(), '0') +
                                    std::to_string(i) + ".png");
    EXPECT_EQ(nlohmann::json::parse(text.at("singleinsert")).at("prompt"), list.at("prompts").at(i).at("prompt"));
  }
  write_file_atomic(dir + "/prompts.txt", "a photo of a * face\r\n\n  \na photo of a * face wearing a hat\n");
  const auto lines = testing::run_cli({"generate", "--model", run.model, "--concept", run.concept_dir, "--prompt",
                                       "a photo of a smiling * face", "--prompts-from", dir + "/prompts.txt", "--steps",
                                       "1", "--out", dir + "/lines"});
  ASSERT_EQ(lines.exit_code, 0) << lines.err;
  EXPECT_EQ(nlohmann::json::parse(read_png_text(dir + "/lines/0001.png").at("singleinsert")).at("prompt"),
            "a photo of a * face");
  EXPECT_EQ(nlohmann::json::parse(read_png_text(dir + "/lines/0002.png").at("singleinsert")).at("prompt"),
            "a photo of a * face wearing a hat");
  EXPECT_FALSE(fs::exists(dir + "/lines/0003.png"));
  const auto none = testing::run_cli({"generate", "--model", run.model, "--out", dir + "/none"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("needs --prompt or --prompts-from"), std::string::npos) << none.err;
}

TEST(WorldJudge, EditsReadFromTheTruthOfRenders) {
  // Each edit of the world's editing list is shown by the scene it is applied to and not by the
  // plain source, and the truth is read from the labels the detector trains on.
  const std::string list = read_file(kSource + "/assets/editing_prompts/world.json");
  const nlohmann::json json = nlohmann::json::parse(list);
  int checked = 0;
  for (const nlohmann::json& prompt : json.at("prompts"))
    for (const nlohmann::json& edit : prompt.at("edits")) {
      const std::string name = edit.at("name");
      world::Scene source = world::source_scene(world::sample_identity(world::kHeldOutIdentitySeed + 1), 0);
      world::Scene edited = source;
      world::apply_edit(edited, name);
      EXPECT_TRUE(world::edit_shown(world::attribute_map(edited), name)) << name;
      EXPECT_FALSE(world::edit_shown(world::attribute_map(source), name)) << name;
      ++checked;
    }
  EXPECT_EQ(checked, 14);
}

TEST(WorldJudge, TrainsAClipThatEvalImagesAndJudgeRead) {
  const DemoRun& run = demo_run();
  const std::string dir = testing::fresh_temp_dir("world_clip");
  const auto trained = testing::run_cli({"eval", "train-clip", "--tokenizer", run.tokenizer, "--out", dir + "/clip",
                                         "--steps", "2", "--batch-size", "4", "--width", "16", "--layers", "1"});
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  EXPECT_NE(trained.out.find("final_loss\t"), std::string::npos) << trained.out;
  // A folder without a tokenizer is told where to find one; the world's is given.
  std::vector<std::string> score = {"eval", "images", "--concept", run.concept_dir, "--images", run.images, "--clip",
                                    dir + "/clip", "--masks", "source", "--edits",
                                    kSource + "/assets/editing_prompts/world.json"};
  const auto untokenized = testing::run_cli(score);
  EXPECT_NE(untokenized.exit_code, 0);
  EXPECT_NE(untokenized.err.find("pass --clip-tokenizer DIR"), std::string::npos) << untokenized.err;
  score.insert(score.end(), {"--clip-tokenizer", run.tokenizer});
  const auto scored = testing::run_cli(score);
  ASSERT_EQ(scored.exit_code, 0) << scored.err;
  EXPECT_GE(figure_line(scored.out, "ESR"), 0.0) << scored.out;
  const auto judged = testing::run_cli({"eval", "judge", "--clip", dir + "/clip", "--clip-tokenizer", run.tokenizer,
                                        "--detector",
                                        kSource + "/assets/world/world_detector.safetensors", "--edits",
                                        kSource + "/assets/editing_prompts/world.json", "--renders", "2", "--images",
                                        run.images, "--json", dir + "/judge.json"});
  ASSERT_EQ(judged.exit_code, 0) << judged.err;
  const nlohmann::json record = nlohmann::json::parse(std::ifstream(dir + "/judge.json"));
  EXPECT_EQ(record.at("renders").at("judge_vs_truth").at("n"), 2 * 11);  // eleven distinct edits, two renders each
  EXPECT_EQ(record.at("generations").at("images"), 4);  // the sunglasses and hat prompts, two images each
  // The detector reads renders it was trained on.
  EXPECT_GE(record.at("renders").at("detector_vs_truth").at("agreement").get<double>(), 0.9);
}

TEST(WorldJudge, TrainClipStoppedByCtrlCResumesToTheSameWeights) {
  const DemoRun& run = demo_run();
  const std::string dir = testing::fresh_temp_dir("world_clip_resume");
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{"eval", "train-clip", "--tokenizer", run.tokenizer, "--out", out, "--steps", "100",
                                    "--batch-size", "4", "--width", "16", "--layers", "1", "--vae", run.model,
                                    "--checkpoint-every", "20"};
  };
  const auto whole = testing::run_cli(args(dir + "/whole"));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;

  // Ctrl-C once the first checkpoint is there: a checkpoint of that moment, and an error.
  const testing::CliProcess process = testing::spawn_cli(args(dir + "/stopped"));
  const fs::path checkpoint = dir + "/stopped.partial/checkpoint.safetensors";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (!fs::exists(checkpoint) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(fs::exists(checkpoint));
  kill(process.pid, SIGINT);
  const testing::CliResult stopped = testing::wait_cli(process);
  EXPECT_NE(stopped.exit_code, 0);
  EXPECT_NE(stopped.err.find("--resume continues"), std::string::npos) << stopped.err;
  EXPECT_FALSE(fs::exists(dir + "/stopped"));

  const auto again = testing::run_cli(args(dir + "/stopped"));
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("an interrupted run is there"), std::string::npos) << again.err;
  std::vector<std::string> other = args(dir + "/stopped");
  other.insert(other.end(), {"--resume", "--seed", "1"});
  const auto changed = testing::run_cli(other);
  EXPECT_NE(changed.exit_code, 0);
  EXPECT_NE(changed.err.find("had other settings"), std::string::npos) << changed.err;
  std::vector<std::string> resume = args(dir + "/stopped");
  resume.push_back("--resume");
  const auto resumed = testing::run_cli(resume);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_FALSE(fs::exists(dir + "/stopped.partial"));
  EXPECT_EQ(read_file(dir + "/stopped/model.safetensors"), read_file(dir + "/whole/model.safetensors"));
}

}  // namespace
}  // namespace singleinsert
