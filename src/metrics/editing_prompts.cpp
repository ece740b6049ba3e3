#include "singleinsert/metrics/editing_prompts.h"

#include <fmt/format.h>

#include <cctype>
#include <nlohmann/json.hpp>
#include <sstream>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"

namespace singleinsert {
namespace {

std::vector<std::string> words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& part : parts) out += (out.empty() ? "" : " ") + part;
  return out;
}

std::string required_string(const nlohmann::json& object, const char* key, const std::string& where) {
  if (!object.is_object() || !object.contains(key) || !object.at(key).is_string() ||
      object.at(key).get<std::string>().empty())
    throw Error(fmt::format("{}: \"{}\" must be a non-empty string", where, key));
  return object.at(key).get<std::string>();
}

}  // namespace

std::string normalise_prompt(const std::string& prompt) {
  std::string lower = prompt;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return join(words(lower));
}

std::string prompt_without_trigger(const std::string& prompt, const std::string& trigger) {
  std::vector<std::string> kept;
  for (const std::string& word : words(prompt))
    if (word != trigger) kept.push_back(word);
  return join(kept);
}

EditingPromptList EditingPromptList::load(const std::string& path) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not JSON ({})", path, e.what()));
  }
  EditingPromptList list;
  if (!json.is_object() || !json.contains("prompts") || !json.at("prompts").is_array() || json.at("prompts").empty())
    throw Error(path + ": an editing list needs a non-empty \"prompts\" array");
  if (json.contains("description") && json.at("description").is_string())
    list.description = json.at("description").get<std::string>();
  for (size_t i = 0; i < json.at("prompts").size(); ++i) {
    const nlohmann::json& entry = json.at("prompts").at(i);
    const std::string where = fmt::format("{}: prompts[{}]", path, i);
    EditingPrompt prompt;
    prompt.prompt = required_string(entry, "prompt", where);
    if (prompt.prompt.find('*') == std::string::npos)
      throw Error(where + ": the prompt has no * (the concept's place)");
    if (!entry.contains("edits") || !entry.at("edits").is_array() || entry.at("edits").empty())
      throw Error(where + ": \"edits\" must be a non-empty array");
    for (size_t k = 0; k < entry.at("edits").size(); ++k) {
      const nlohmann::json& edit = entry.at("edits").at(k);
      const std::string edit_where = fmt::format("{}.edits[{}]", where, k);
      prompt.edits.push_back({required_string(edit, "name", edit_where), required_string(edit, "present", edit_where),
                              required_string(edit, "absent", edit_where)});
    }
    for (const EditingPrompt& earlier : list.prompts)
      if (normalise_prompt(earlier.prompt) == normalise_prompt(prompt.prompt))
        throw Error(fmt::format("{}: \"{}\" is listed twice", where, prompt.prompt));
    list.prompts.push_back(std::move(prompt));
  }
  return list;
}

const EditingPrompt* EditingPromptList::find(const std::string& prompt, const std::string& trigger) const {
  std::vector<std::string> parts = words(prompt);
  for (std::string& word : parts)
    if (word == trigger) word = "*";
  const std::string wanted = normalise_prompt(join(parts));
  for (const EditingPrompt& entry : prompts)
    if (normalise_prompt(entry.prompt) == wanted) return &entry;
  return nullptr;
}

}  // namespace singleinsert
