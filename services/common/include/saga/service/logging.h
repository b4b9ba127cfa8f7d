// Logging setup shared by the services (spdlog).
#pragma once

#include <string_view>

#include "saga/status.h"

namespace saga::service {

/// Makes spdlog's default logger write one JSON object per line to stderr:
///   {"ts":"2024-02-21T10:00:00.123Z","level":"info","service":"<service>","tid":42,"msg":"..."}
/// (UTC; the message is JSON-escaped). The level comes from LOG_LEVEL:
/// trace|debug|info|warn|error (any case), default info. Warnings and errors
/// are flushed at once.
/// Returns InvalidArgument for another LOG_LEVEL value; logging is then set up
/// at info all the same, so the caller can log the error and decide.
/// Not thread-safe: call it once at the start of main().
Status setup_logging(std::string_view service);

}  // namespace saga::service
