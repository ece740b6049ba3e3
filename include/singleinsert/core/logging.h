#pragma once
// The library logs through spdlog's default logger and never writes to stdout. Front ends
// call init_logging() once to send it to stderr at the level they want.
#include <string>

namespace singleinsert {

enum class LogLevel { kDebug, kInfo, kWarn, kError, kOff };

void init_logging(LogLevel level);
LogLevel parse_log_level(const std::string& name);

}  // namespace singleinsert
