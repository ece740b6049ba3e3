#include <gtest/gtest.h>

#include "golden.h"
#include "singleinsert/core/logging.h"
#include "singleinsert/core/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  singleinsert::init_logging(singleinsert::LogLevel::kError);
  singleinsert::configure_runtime();
  const int status = RUN_ALL_TESTS();
  singleinsert::testing::print_error_summary();
  return status;
}
