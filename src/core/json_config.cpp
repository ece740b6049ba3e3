#include "singleinsert/core/json_config.h"

#include <fmt/format.h>

#include <algorithm>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/json_int.h"

namespace singleinsert {

JsonConfig::JsonConfig(std::unique_ptr<nlohmann::json> json, std::string origin)
    : json_(std::move(json)), origin_(std::move(origin)) {}
JsonConfig::JsonConfig(const JsonConfig& other)
    : json_(std::make_unique<nlohmann::json>(*other.json_)), origin_(other.origin_) {}
JsonConfig& JsonConfig::operator=(const JsonConfig& other) {
  json_ = std::make_unique<nlohmann::json>(*other.json_);
  origin_ = other.origin_;
  return *this;
}
JsonConfig::~JsonConfig() = default;

JsonConfig JsonConfig::load(const std::string& path) { return parse(read_file(path), path); }

JsonConfig JsonConfig::parse(const std::string& text, const std::string& origin) {
  auto json = std::make_unique<nlohmann::json>();
  try {
    // Python's json module writes bare Infinity/-Infinity/NaN (e.g. lambda_min_clipped); they
    // become strings that get_double() understands.
    std::string patched;
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if (in_string) {
        patched.push_back(c);
        if (c == '\\' && i + 1 < text.size()) patched.push_back(text[++i]);
        else if (c == '"') in_string = false;
        continue;
      }
      bool replaced = false;
      for (const char* token : {"-Infinity", "Infinity", "NaN"}) {
        const std::string t = token;
        if (text.compare(i, t.size(), t) == 0) {
          patched += "\"" + t + "\"";
          i += t.size() - 1;
          replaced = true;
          break;
        }
      }
      if (replaced) continue;
      if (c == '"') in_string = true;
      patched.push_back(c);
    }
    *json = nlohmann::json::parse(patched);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: invalid JSON ({})", origin, e.what()));
  }
  if (!json->is_object()) throw Error(fmt::format("{}: expected a JSON object", origin));
  return JsonConfig(std::move(json), origin);
}

bool JsonConfig::has(const std::string& key) const {
  auto it = json_->find(key);
  return it != json_->end() && !it->is_null();
}

const nlohmann::json& JsonConfig::json() const { return *json_; }

namespace {
[[noreturn]] void wrong_type(const std::string& origin, const std::string& key, const nlohmann::json& value,
                             const char* expected) {
  throw Error(fmt::format("{}: '{}' should be {}, got {}", origin, key, expected, value.dump()));
}
}  // namespace

std::optional<int> json_as_int(const nlohmann::json& value) {
  if (value.is_number_unsigned()) {
    const auto v = value.get<uint64_t>();
    if (v <= static_cast<uint64_t>(std::numeric_limits<int>::max())) return static_cast<int>(v);
    return std::nullopt;
  }
  if (value.is_number_integer()) {
    const auto v = value.get<int64_t>();
    if (v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max()) return static_cast<int>(v);
    return std::nullopt;
  }
  if (value.is_number_float()) {
    const double v = value.get<double>();
    if (std::isfinite(v) && v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max() &&
        v == std::floor(v))
      return static_cast<int>(v);
  }
  return std::nullopt;
}

int JsonConfig::get_int(const std::string& key, int fallback) const {
  if (!has(key)) return fallback;
  const auto& value = json_->at(key);
  if (const auto v = json_as_int(value)) return *v;
  wrong_type(origin_, key, value, "an integer (within +-2147483647)");
}

void JsonConfig::require_known_keys(const std::vector<std::string>& known) const {
  for (const auto& [key, value] : json_->items())
    if (std::find(known.begin(), known.end(), key) == known.end())
      throw Error(fmt::format("{}: unknown setting '{}'", origin_, key));
}

uint64_t JsonConfig::get_uint64(const std::string& key, uint64_t fallback) const {
  if (!has(key)) return fallback;
  const auto& value = json_->at(key);
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0) return static_cast<uint64_t>(value.get<int64_t>());
  wrong_type(origin_, key, value, "a whole number >= 0");
}

double JsonConfig::get_double(const std::string& key, double fallback) const {
  if (!has(key)) return fallback;
  const auto& value = json_->at(key);
  if (value.is_string()) {
    const std::string text = value.get<std::string>();
    if (text == "Infinity") return INFINITY;
    if (text == "-Infinity") return -INFINITY;
    if (text == "NaN") return NAN;
  }
  if (!value.is_number()) wrong_type(origin_, key, value, "a number");
  return value.get<double>();
}

bool JsonConfig::get_bool(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto& value = json_->at(key);
  if (!value.is_boolean()) wrong_type(origin_, key, value, "true or false");
  return value.get<bool>();
}

std::string JsonConfig::get_string(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  const auto& value = json_->at(key);
  if (!value.is_string()) wrong_type(origin_, key, value, "a string");
  return value.get<std::string>();
}

std::vector<int> JsonConfig::get_int_list(const std::string& key, const std::vector<int>& fallback) const {
  if (!has(key)) return fallback;
  const auto& value = json_->at(key);
  if (value.is_number_integer()) {
    if (const auto v = json_as_int(value)) return {*v};
  }
  if (!value.is_array()) wrong_type(origin_, key, value, "an integer or a list of integers");
  std::vector<int> out;
  for (const auto& item : value) {
    const auto v = item.is_number_integer() ? json_as_int(item) : std::nullopt;
    if (!v) wrong_type(origin_, key, value, "a list of integers (each within +-2147483647)");
    out.push_back(*v);
  }
  return out;
}

std::vector<std::string> JsonConfig::get_string_list(const std::string& key,
                                                     const std::vector<std::string>& fallback) const {
  if (!has(key)) return fallback;
  const auto& value = json_->at(key);
  if (!value.is_array()) wrong_type(origin_, key, value, "a list of strings");
  std::vector<std::string> out;
  for (const auto& item : value) {
    if (!item.is_string()) wrong_type(origin_, key, value, "a list of strings");
    out.push_back(item.get<std::string>());
  }
  return out;
}

std::optional<std::vector<double>> JsonConfig::get_double_list(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  const auto& value = json_->at(key);
  if (!value.is_array()) wrong_type(origin_, key, value, "a list of numbers");
  std::vector<double> out;
  for (const auto& item : value) {
    if (!item.is_number()) wrong_type(origin_, key, value, "a list of numbers");
    out.push_back(item.get<double>());
  }
  return out;
}

}  // namespace singleinsert
