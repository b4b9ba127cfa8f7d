// Validation and defaults of KafkaOptions, shared by the factory and tests.
#pragma once

#include <map>
#include <string>

#include "saga/kafka_transport.h"
#include "saga/status.h"

namespace saga::internal::kafka {

/// Checks `options` for `endpoint` and fills the defaults that depend on it
/// (client_id, group_id); reads sasl_password_file into
/// properties["sasl.password"]. InvalidArgument naming the field (and the
/// environment variable that sets it) when something is wrong.
StatusOr<KafkaOptions> resolve_options(const std::string& endpoint, KafkaOptions options);

/// librdkafka's statistics interval for both clients. Statistics drive
/// recovery of health(): a broker in state UP clears an earlier "all brokers
/// down" error.
inline constexpr const char* kStatsIntervalMs = "1000";

/// The consumer's librdkafka properties for resolved `options`, before
/// `options.properties` (applied after them, so they may override the tuning
/// but not the reserved keys, which resolve_options() refuses).
std::map<std::string, std::string> consumer_properties(const KafkaOptions& options);

}  // namespace saga::internal::kafka
