// singleinsert-bench runs every scenario on a tiny configuration and reports sane numbers (a
// scenario that fails, or reports nothing, fails the test suite).
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace {

std::string run(const std::string& command, int* status) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  char buffer[4096];
  while (pipe && fgets(buffer, sizeof buffer, pipe)) output += buffer;
  *status = pipe ? pclose(pipe) : -1;
  return output;
}

TEST(Bench, EveryScenarioRunsOnATinyModel) {
  const std::string scenarios[] = {"text_encode", "unet_forward", "vae_encode", "vae_decode", "sample",
                                   "stage1_step", "stage2_step"};
  std::string command = std::string(SINGLEINSERT_BENCH) + " --arch default --resolution 32 --steps 3 --batch 1 "
                        "--warmup 1 --repeats 2 --json";
  for (const auto& name : scenarios) command += " --scenario " + name;
  int status = 0;
  const std::string output = run(command + " 2>&1", &status);
  ASSERT_EQ(status, 0) << output;
  const auto report = nlohmann::json::parse(output);
  EXPECT_EQ(report["device"], "cpu");
  std::set<std::string> seen;
  for (const auto& row : report["scenarios"]) {
    const std::string name = row["scenario"];
    seen.insert(name);
    EXPECT_GT(row["median_ms"].get<double>(), 0.0) << name;
    EXPECT_LE(row["min_ms"].get<double>(), row["median_ms"].get<double>()) << name;
    EXPECT_LE(row["median_ms"].get<double>(), row["max_ms"].get<double>()) << name;
    EXPECT_GT(row["peak_memory_mb"].get<double>(), 10.0) << name;
    EXPECT_GT(row["gflop"].get<double>(), 0.0) << name;
    EXPECT_GT(row["tflop_per_s"].get<double>(), 0.0) << name;
  }
  EXPECT_EQ(seen.size(), std::size(scenarios));
  int bad_status = 0;
  run(std::string(SINGLEINSERT_BENCH) + " --scenario nope 2>&1", &bad_status);
  EXPECT_NE(bad_status, 0);
}

}  // namespace
