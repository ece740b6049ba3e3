#pragma once
// Reading a JSON number as an int without undefined behaviour: files from strangers hold floats
// beyond int's range (a cast is undefined) and integers beyond it (a cast wraps silently).
#include <nlohmann/json.hpp>
#include <optional>

namespace singleinsert {

// The value as an int if it is one: a JSON integer or a whole float within int's range.
std::optional<int> json_as_int(const nlohmann::json& value);

}  // namespace singleinsert
