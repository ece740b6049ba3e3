#pragma once
// File-system helpers shared by every writer: outputs appear whole or not at all.
#include <string>

namespace singleinsert {

// Reads a whole file; throws Error naming the path when it is missing or unreadable.
std::string read_file(const std::string& path);

// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Creates `dir` (and parents) and checks that a file can be created in it, so that a long
// job fails before it starts rather than after.
void ensure_writable_directory(const std::string& dir);

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);

}  // namespace singleinsert
