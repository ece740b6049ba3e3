#include <gtest/gtest.h>

#include "golden.h"
#include "singleinsert/core/logging.h"
#include "singleinsert/core/runtime.h"
#include "singleinsert/core/torch_compat.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  singleinsert::init_logging(singleinsert::LogLevel::kError);
  singleinsert::configure_runtime();
  // Parity on a GPU is measured in true float32: cuDNN would otherwise run convolutions in TF32.
  if (singleinsert::testing::test_device().is_cuda()) singleinsert::compat::allow_tf32(false);
  const int status = RUN_ALL_TESTS();
  singleinsert::testing::print_error_summary();
  return status;
}
