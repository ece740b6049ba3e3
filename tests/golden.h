#pragma once
// Access to the reference data in ../shared/golden (made by diffusers 0.25.1 and transformers
// 4.36) and the error measures the parity tests use.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>

#include "singleinsert/core/safetensors.h"

namespace torch::nn {
class Module;
}

namespace singleinsert::testing {

// SINGLEINSERT_GOLDEN overrides the default ../shared/golden beside the repository. A missing
// folder fails the tests that need it: parity is never skipped.
std::string golden_path(const std::string& relative = "");
SafetensorsFile golden_file(const std::string& relative);

// Expects `module` to have exactly the keys and shapes of a reference state-dict listing
// (configs_full/*_state_dict_shapes.json) and its parameter count.
void expect_reference_layout(const torch::nn::Module& module, const std::string& shapes_json);

// max |actual - expected| / max |expected|: the error relative to the tensor's scale, so
// values near zero do not dominate.
double max_relative_error(const at::Tensor& actual, const at::Tensor& expected);
double max_abs_error(const at::Tensor& actual, const at::Tensor& expected);

// The device parity tests run on: SINGLEINSERT_TEST_DEVICE=cuda runs them on the GPU (float32,
// TF32 off), where the allowed error is 1e-4 relative instead of the CPU's tighter bounds.
c10::Device test_device();
double device_tolerance(double cpu_tolerance);

// Keeps the largest error measured for each (test, comparison); print_error_summary() lists
// them at the end of the run so the log records every measured figure.
void report_error(const char* measure, const char* what, double value);
void print_error_summary();

}  // namespace singleinsert::testing

// Shapes must match exactly; values within `tolerance` (relative to the reference's scale).
#define EXPECT_TENSOR_NEAR_REL(actual, expected, tolerance)                                               \
  do {                                                                                                    \
    const at::Tensor _a = (actual), _e = (expected);                                                      \
    ASSERT_EQ(_a.sizes(), _e.sizes());                                                                    \
    const double _err = ::singleinsert::testing::max_relative_error(_a, _e);                             \
    EXPECT_LE(_err, (tolerance)) << #actual " vs " #expected ": max relative error " << _err;             \
    ::singleinsert::testing::report_error("max rel error", #expected, _err);                              \
  } while (0)

#define EXPECT_TENSOR_NEAR_ABS(actual, expected, tolerance)                                               \
  do {                                                                                                    \
    const at::Tensor _a = (actual), _e = (expected);                                                      \
    ASSERT_EQ(_a.sizes(), _e.sizes());                                                                    \
    const double _err = ::singleinsert::testing::max_abs_error(_a, _e);                                  \
    EXPECT_LE(_err, (tolerance)) << #actual " vs " #expected ": max abs error " << _err;                  \
    ::singleinsert::testing::report_error("max abs error", #expected, _err);                              \
  } while (0)
