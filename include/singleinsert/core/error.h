#pragma once
// One exception type for the whole library: its message is a single line that tells the user
// what was wrong and where (file, key, expected, got). The command line prints it and exits 1.
#include <stdexcept>
#include <string>

namespace singleinsert {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace singleinsert
