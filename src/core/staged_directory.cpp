#include "singleinsert/core/staged_directory.h"

#include <fmt/format.h>

#include <random>

#include "singleinsert/core/error.h"

namespace fs = std::filesystem;

namespace singleinsert {

void write_directory_atomic(const std::string& directory, const std::function<void(const fs::path&)>& fill) {
  fs::path target = fs::path(directory).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "models/default/" -> "models/default"
  if (fs::exists(target) && !(fs::is_directory(target) && fs::is_empty(target)))
    throw Error(fmt::format("{}: already exists", directory));
  const fs::path parent = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  fs::create_directories(parent);
  std::random_device random;
  const fs::path staging = fs::path(target.string() + fmt::format(".tmp-{:08x}", random()));
  try {
    if (!fs::create_directory(staging)) throw Error(fmt::format("{}: already exists", staging.string()));
    fill(staging);
    if (fs::exists(target)) fs::remove(target);  // an empty folder
    fs::rename(staging, target);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw;
  }
}

}  // namespace singleinsert
