// Validation and defaults of KafkaOptions, shared by the factory and tests.
#pragma once

#include <string>

#include "saga/kafka_transport.h"
#include "saga/status.h"

namespace saga::internal::kafka {

/// Checks `options` for `endpoint` and fills the defaults that depend on it
/// (client_id, group_id). InvalidArgument naming the field (and the
/// environment variable that sets it) when something is wrong.
StatusOr<KafkaOptions> resolve_options(const std::string& endpoint, KafkaOptions options);

}  // namespace saga::internal::kafka
