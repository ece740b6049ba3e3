#include "golden.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <map>

#include <gtest/gtest.h>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/state_dict.h"

namespace singleinsert::testing {

std::string golden_path(const std::string& relative) {
  const char* override_dir = std::getenv("SINGLEINSERT_GOLDEN");
  const std::filesystem::path root = override_dir ? override_dir : SINGLEINSERT_DEFAULT_GOLDEN_DIR;
  if (!std::filesystem::is_directory(root))
    throw Error("golden reference data not found at " + root.string() +
                " (set SINGLEINSERT_GOLDEN to the shared/golden folder)");
  return relative.empty() ? root.string() : (root / relative).string();
}

SafetensorsFile golden_file(const std::string& relative) { return SafetensorsFile::open(golden_path(relative)); }

void expect_reference_layout(const torch::nn::Module& module, const std::string& shapes_json) {
  const auto reference = nlohmann::json::parse(read_file(golden_path(shapes_json)));
  const auto tensors = module_tensors(module);
  ASSERT_EQ(tensors.size(), reference["tensors"].size()) << shapes_json;
  int64_t parameters = 0;
  for (const auto& [key, shape] : reference["tensors"].items()) {
    ASSERT_TRUE(tensors.count(key)) << "missing " << key;
    EXPECT_EQ(tensors.at(key).sizes().vec(), shape.get<std::vector<int64_t>>()) << key;
    parameters += tensors.at(key).numel();
  }
  EXPECT_EQ(parameters, reference["num_parameters"].get<int64_t>()) << shapes_json;
}

c10::Device test_device() {
  const char* name = std::getenv("SINGLEINSERT_TEST_DEVICE");
  return name && std::string(name) == "cuda" ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
}

double device_tolerance(double cpu_tolerance) {
  return test_device().is_cuda() ? std::max(cpu_tolerance, 1e-4) : cpu_tolerance;
}

double max_abs_error(const at::Tensor& actual, const at::Tensor& expected) {
  return (actual.to(at::kDouble).cpu() - expected.to(at::kDouble).cpu()).abs().max().item<double>();
}

double max_relative_error(const at::Tensor& actual, const at::Tensor& expected) {
  const double scale = expected.to(at::kDouble).abs().max().item<double>();
  return max_abs_error(actual, expected) / (scale > 0 ? scale : 1.0);
}

namespace {
std::map<std::string, double>& worst_errors() {
  static std::map<std::string, double> errors;
  return errors;
}
}  // namespace

void report_error(const char* measure, const char* what, double value) {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string key = std::string(test ? std::string(test->test_suite_name()) + "." + test->name() : "") + "  " +
                          what + "  (" + measure + ")";
  double& worst = worst_errors()[key];
  worst = std::max(worst, value);
}

void print_error_summary() {
  std::printf("\nLargest measured error per comparison:\n");
  for (const auto& [key, value] : worst_errors()) std::printf("  %-9.3g %s\n", value, key.c_str());
}

}  // namespace singleinsert::testing
