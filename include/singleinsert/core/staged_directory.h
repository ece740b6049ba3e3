#pragma once
// Folders that appear whole or not at all: built under a temporary name beside the target, then
// renamed into place.
#include <filesystem>
#include <functional>
#include <string>

namespace singleinsert {

// Calls `fill` with an empty staging folder beside `directory`, then renames it to `directory`.
// Refuses a `directory` that exists and is not empty (an empty one is replaced); on any error the
// staging folder is removed and the error passed on.
void write_directory_atomic(const std::string& directory, const std::function<void(const std::filesystem::path&)>& fill);

}  // namespace singleinsert
