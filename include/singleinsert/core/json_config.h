#pragma once
// Reading a component's config.json: typed getters with defaults, and errors that name the
// file, the key and the offending value.
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace singleinsert {

class JsonConfig {
 public:
  static JsonConfig load(const std::string& path);
  static JsonConfig parse(const std::string& text, const std::string& origin);

  JsonConfig(const JsonConfig&);
  JsonConfig& operator=(const JsonConfig&);
  ~JsonConfig();

  const std::string& origin() const { return origin_; }
  bool has(const std::string& key) const;  // present and not null
  // An Error naming the first key not in `known` (a misspelt setting is never silently ignored).
  void require_known_keys(const std::vector<std::string>& known) const;

  // A missing or null key gives `fallback`; a value of the wrong type is an Error.
  int get_int(const std::string& key, int fallback) const;
  uint64_t get_uint64(const std::string& key, uint64_t fallback) const;  // e.g. seeds
  double get_double(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  // Accepts a single integer (repeated `count` times) or a list of integers.
  std::vector<int> get_int_list(const std::string& key, const std::vector<int>& fallback) const;
  std::vector<std::string> get_string_list(const std::string& key,
                                           const std::vector<std::string>& fallback) const;
  std::optional<std::vector<double>> get_double_list(const std::string& key) const;

  const nlohmann::json& json() const;

 private:
  JsonConfig(std::unique_ptr<nlohmann::json> json, std::string origin);
  std::unique_ptr<nlohmann::json> json_;
  std::string origin_;
};

}  // namespace singleinsert
