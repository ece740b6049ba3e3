#pragma once
// SHA-256 (FIPS 180-4), for identifying base models, source images and masks in concepts.
#include <cstdint>
#include <string>

namespace singleinsert {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t length);
  std::string hex_digest();  // finishes the hash

 private:
  void transform(const uint8_t* block);
  uint32_t state_[8];
  uint8_t buffer_[64];
  uint64_t length_ = 0;
  size_t buffered_ = 0;
};

std::string sha256_hex(const std::string& bytes);
std::string sha256_of_file(const std::string& path);

// sha256_of_file, remembered in $XDG_CACHE_HOME/singleinsert/sha256.json (or ~/.cache/...)
// under the file's absolute path, size and modification time, so multi-gigabyte weights are
// hashed once. Works without a cache if none can be written.
std::string cached_sha256_of_file(const std::string& path);

}  // namespace singleinsert
