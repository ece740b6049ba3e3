#include "singleinsert/core/files.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "singleinsert/core/error.h"

namespace fs = std::filesystem;

namespace singleinsert {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!fs::exists(path)) throw Error(fmt::format("{}: no such file", path));
    throw Error(fmt::format("{}: cannot be read ({})", path, std::strerror(errno)));
  }
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

static std::string temporary_sibling(const std::string& path) {
  std::random_device device;
  return fmt::format("{}.tmp-{}-{:08x}", path, static_cast<long>(getpid()), device());
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string temporary = temporary_sibling(path);
  {
    std::FILE* file = std::fopen(temporary.c_str(), "wb");
    if (file == nullptr)
      throw Error(fmt::format("{}: cannot be written ({})", path, std::strerror(errno)));
    const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), file);
    const bool flushed = std::fflush(file) == 0 && fsync(fileno(file)) == 0;
    std::fclose(file);
    if (written != bytes.size() || !flushed) {
      std::remove(temporary.c_str());
      throw Error(fmt::format("{}: write failed ({})", path, std::strerror(errno)));
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(temporary.c_str());
    throw Error(fmt::format("{}: cannot be written ({})", path, std::strerror(error)));
  }
}

void ensure_writable_directory(const std::string& dir) {
  std::error_code error;
  if (fs::exists(dir, error) && !fs::is_directory(dir, error))
    throw Error(fmt::format("{}: exists and is not a directory", dir));
  fs::create_directories(dir, error);
  if (error) throw Error(fmt::format("{}: cannot create the directory ({})", dir, error.message()));
  const std::string probe = temporary_sibling((fs::path(dir) / ".write-test").string());
  std::FILE* file = std::fopen(probe.c_str(), "wb");
  if (file == nullptr)
    throw Error(fmt::format("{}: directory is not writable ({})", dir, std::strerror(errno)));
  std::fclose(file);
  std::remove(probe.c_str());
}

bool path_exists(const std::string& path) {
  std::error_code error;
  return fs::exists(path, error);
}

bool is_directory(const std::string& path) {
  std::error_code error;
  return fs::is_directory(path, error);
}

}  // namespace singleinsert
