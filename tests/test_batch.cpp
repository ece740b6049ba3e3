// singleinsert batch: one concept per prepared photo, resumable after kill -9, failures reported.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <thread>

#include <signal.h>
#include <sys/wait.h>

#include "cli_runner.h"
#include "singleinsert/io/image_file.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

std::string slurp_bytes(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

// Three toy-world faces with their world masks, prepared at 32 px, and a preset that trains
// each in a few seconds on sd_tiny (checkpoints every 2 steps).
struct PreparedFaces {
  std::string dir, prepared, preset;
};

PreparedFaces prepare_three_faces(const std::string& name) {
  PreparedFaces faces;
  faces.dir = testing::fresh_temp_dir(name);
  const fs::path dir(faces.dir);
  const testing::CliResult world = testing::run_cli(
      {"world", "--source", "--count", "3", "--seed", "500", "--size", "64", "--out", (dir / "world").string()});
  EXPECT_EQ(world.exit_code, 0) << world.err;
  fs::create_directories(dir / "photos");
  fs::create_directories(dir / "masks");
  for (int i = 0; i < 3; ++i) {
    const std::string stem = "sample_000" + std::to_string(i);
    fs::copy_file(dir / "world" / (stem + ".png"), dir / "photos" / (stem + ".png"));
    fs::copy_file(dir / "world" / (stem + "_mask.png"), dir / "masks" / (stem + ".png"));
  }
  faces.prepared = (dir / "prepared").string();
  const testing::CliResult prepare =
      testing::run_cli({"prepare", "--images", (dir / "photos").string(), "--masks", (dir / "masks").string(),
                        "--out", faces.prepared, "--size", "32"});
  EXPECT_EQ(prepare.exit_code, 0) << prepare.err;
  faces.preset = testing::write_tiny_training_preset(faces.dir, 6, 1e-3, 2);
  return faces;
}

std::vector<std::string> batch_args(const PreparedFaces& faces, const std::string& out) {
  return {"batch", "--prepared", faces.prepared, "--out", out, "--model", SINGLEINSERT_FUZZ_DEFAULT_MODEL,
          "--stage1-args", "--preset " + faces.preset, "--stage2-args", "--preset " + faces.preset,
          "--generate-args", "--steps 2 --width 32 --height 32", "--checkpoint-every", "2"};
}

TEST(Batch, KilledHalfwayAndStartedAgainGivesTheUninterruptedConcepts) {
  const PreparedFaces faces = prepare_three_faces("batch_kill");
  const std::string whole = faces.dir + "/whole", killed = faces.dir + "/killed";
  const testing::CliResult uninterrupted = testing::run_cli(batch_args(faces, whole));
  ASSERT_EQ(uninterrupted.exit_code, 0) << uninterrupted.err;

  // kill -9 while the second photo's stage I has a checkpoint and is still training.
  const testing::CliProcess process = testing::spawn_cli(batch_args(faces, killed));
  const fs::path checkpoint = fs::path(killed) / "sample_0001" / "concept-stage1.partial" / "checkpoint";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (!fs::exists(checkpoint) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(checkpoint)) << "the second photo never reached a checkpoint";
  kill(process.pid, SIGKILL);
  int status = 0;
  waitpid(process.pid, &status, 0);
  EXPECT_FALSE(fs::exists(fs::path(killed) / "sample_0001" / "status.json"));
  EXPECT_FALSE(fs::exists(fs::path(killed) / "summary.md"));

  const testing::CliResult resumed = testing::run_cli(batch_args(faces, killed));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("sample_0000: already done"), std::string::npos) << resumed.err;
  for (const char* photo : {"sample_0000", "sample_0001", "sample_0002"}) {
    SCOPED_TRACE(photo);
    for (const char* file : {"concept-stage1/embedding.safetensors", "concept/embedding.safetensors",
                             "concept/lora.safetensors"}) {
      const std::string a = slurp_bytes(fs::path(whole) / photo / file), b = slurp_bytes(fs::path(killed) / photo / file);
      EXPECT_FALSE(a.empty()) << file;
      EXPECT_TRUE(a == b) << file << " differs after the kill";
    }
    // The images' text chunks name their concept's folder, which differs; their pixels may not.
    const at::Tensor a = read_image_rgb((fs::path(whole) / photo / "images/0000.png").string()).pixels;
    const at::Tensor b = read_image_rgb((fs::path(killed) / photo / "images/0000.png").string()).pixels;
    EXPECT_TRUE(a.equal(b)) << "the drawn image differs after the kill";
  }
  const nlohmann::json summary = nlohmann::json::parse(slurp_bytes(fs::path(killed) / "summary.json"));
  EXPECT_EQ(summary["done"], 3);
  EXPECT_NE(slurp_bytes(fs::path(killed) / "summary.md").find("| sample_0002 | done |"), std::string::npos);
}

TEST(Batch, APhotoThatFailsIsReportedAndTheOthersFinish) {
  const PreparedFaces faces = prepare_three_faces("batch_fail");
  fs::remove(fs::path(faces.prepared) / "sample_0001_mask.png");
  const std::string out = faces.dir + "/out";
  const testing::CliResult run = testing::run_cli(batch_args(faces, out));
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("error: batch: 1 photos did not finish"), std::string::npos) << run.err;
  const std::string table = slurp_bytes(fs::path(out) / "summary.md");
  EXPECT_NE(table.find("| sample_0000 | done |"), std::string::npos) << table;
  EXPECT_NE(table.find("| sample_0001 | failed: stage I: "), std::string::npos) << table;
  EXPECT_NE(table.find("sample_0001_mask.png: no such file"), std::string::npos) << table;
  EXPECT_NE(table.find("| sample_0002 | done |"), std::string::npos) << table;
  // Its report page: every photo in the summary, a section with source, mask and generations for
  // each one that finished.
  const testing::CliResult report = testing::run_cli({"report", "--batch", out, "--out", faces.dir + "/batch.html"});
  ASSERT_EQ(report.exit_code, 0) << report.err;
  const std::string html = slurp_bytes(faces.dir + "/batch.html");
  EXPECT_NE(html.find("failed: stage I: "), std::string::npos);
  EXPECT_NE(html.find("<h2 id=\"sample_0000\">"), std::string::npos);
  EXPECT_NE(html.find("<h2 id=\"sample_0002\">"), std::string::npos);
  EXPECT_EQ(html.find("<h2 id=\"sample_0001\">"), std::string::npos);
  EXPECT_EQ(html.find("missing</div>"), std::string::npos);
  size_t images = 0;
  for (size_t at = html.find("base64,"); at != std::string::npos; at = html.find("base64,", at + 1)) ++images;
  size_t shown = 0;
  for (const char* photo : {"sample_0000", "sample_0002"}) {
    size_t generations = 0;
    for (const auto& entry : fs::directory_iterator(fs::path(out) / photo / "images"))
      generations += entry.path().extension() == ".png" && entry.path().filename() != "grid.png";
    shown += 2 + std::min<size_t>(generations, 8);  // source and mask, then up to 8 generations
  }
  EXPECT_GT(shown, 4u);
  EXPECT_EQ(images, shown);
  const testing::CliResult bad_devices = testing::run_cli({"batch", "--prepared", faces.prepared, "--out", out,
                                                           "--model", SINGLEINSERT_FUZZ_DEFAULT_MODEL, "--devices", "gpu0"});
  EXPECT_EQ(bad_devices.err, "error: --devices gpu0: expected cpu or CUDA device numbers like 0,1\n");
}

}  // namespace
}  // namespace singleinsert
