#include "singleinsert/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "singleinsert/core/error.h"

namespace singleinsert {

void init_logging(LogLevel level) {
  spdlog::drop("singleinsert");
  auto logger = spdlog::stderr_color_mt("singleinsert");
  logger->set_pattern("%^%l%$: %v");
  spdlog::set_default_logger(logger);
  switch (level) {
    case LogLevel::kDebug: spdlog::set_level(spdlog::level::debug); break;
    case LogLevel::kInfo: spdlog::set_level(spdlog::level::info); break;
    case LogLevel::kWarn: spdlog::set_level(spdlog::level::warn); break;
    case LogLevel::kError: spdlog::set_level(spdlog::level::err); break;
    case LogLevel::kOff: spdlog::set_level(spdlog::level::off); break;
  }
}

LogLevel parse_log_level(const std::string& name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn" || name == "warning") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  if (name == "off" || name == "quiet") return LogLevel::kOff;
  throw Error("unknown log level '" + name + "' (expected debug, info, warn, error or off)");
}

}  // namespace singleinsert
