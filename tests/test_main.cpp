#include <gtest/gtest.h>

#include "singleinsert/core/logging.h"
#include "singleinsert/core/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  singleinsert::init_logging(singleinsert::LogLevel::kError);
  singleinsert::configure_runtime();
  return RUN_ALL_TESTS();
}
