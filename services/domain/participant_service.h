// The main() of a reference participant service: logging, HTTP server
// options, Kafka transport, the participant's store, its handlers and routes,
// then serve until SIGTERM/SIGINT and stop in order (HTTP drains first).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "saga/participant.h"
#include "saga/reshard.h"
#include "saga/service/router.h"
#include "saga/status.h"

namespace saga::domain {

struct ParticipantService {
  /// Participant (and logger) name, e.g. "inventory".
  std::string name;
  /// HTTP port when PORT is unset.
  int default_port = 0;
  /// Destination of its domain events, published on the topic of the same name.
  std::string event_destination;
  /// Registers the command handlers; runs before the engine starts.
  std::function<Status(Participant&)> register_handlers;
  /// Adds the HTTP routes (including the standard ones).
  std::function<void(service::Router&, Participant&)> add_routes;
};

/// The Kafka topic of the domain event stream `destination`: EVENTS_TOPIC when
/// set (tests give each run its own), else the destination's own name.
std::string events_topic_from_env(const std::string& destination);

/// Adds /healthz, /readyz (the participant's health: store and transport) and
/// /metrics (the participant's counters) for participant `name`.
void add_participant_standard_routes(service::Router& router, Participant& p,
                                     const std::string& name);

/// Runs the service; returns the process exit code (0 after a clean stop, 2
/// for bad configuration, 1 when something could not start).
/// Environment: PORT, DATA_DIR (./data/<name>), KAFKA_BROKERS (required),
/// KAFKA_* (kafka_transport.h), EVENTS_TOPIC, LOG_LEVEL, HTTP_* (http_server.h).
int run_participant_service(const ParticipantService& spec);

/// The `reshard` command of participant service `name` (`saga-<name> reshard
/// --from DIR --to NEW_DIR --shards N`; `args` without "reshard"): moves its
/// STOPPED store to N shards with the service's `shard_key` (saga/reshard.h,
/// docs/storage.md "Changing the shard count"). Returns the exit code: 0
/// done, 1 the reshard failed (nothing left in NEW_DIR), 2 bad usage
/// (`--kind orchestrator` included).
int run_participant_reshard(const std::string& name, const std::vector<std::string>& args,
                            const ShardKeyFn& shard_key);

}  // namespace saga::domain
