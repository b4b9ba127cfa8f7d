// Typed lookups of environment variables, for service configuration.
//
//   auto port = env_int("PORT", 8082, 1, 65535);
//   if (!port.ok()) { spdlog::critical("{}", port.status().message()); return 2; }
//
// A variable that is unset or set to the empty string takes the default.
// Leading and trailing blanks are ignored. Errors are InvalidArgument with a
// message naming the variable, what it accepts and what it got, e.g.
// "PORT must be an integer in 1..65535, got 'abc'". Thread-safe as long as
// nothing calls setenv() concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "saga/status.h"

namespace saga::service {

/// The value of `name`, or `fallback`.
std::string env_string(std::string_view name, std::string_view fallback);

/// The integer value of `name` (decimal, optional sign), or `fallback`.
/// REQUIRES: min <= fallback <= max.
StatusOr<int64_t> env_int(std::string_view name, int64_t fallback, int64_t min, int64_t max);

/// A host (IPv4/IPv6 address or name) and a TCP port.
struct HostPort {
  std::string host;
  uint16_t port = 0;

  /// "host:port" ("[v6]:port" for an IPv6 address).
  std::string to_string() const;
  friend bool operator==(const HostPort&, const HostPort&) = default;
};

/// Parses "host:port" or "[ipv6]:port": a non-empty host without blanks and a
/// decimal port in 1..65535. InvalidArgument naming `variable` and the bad value.
StatusOr<HostPort> parse_host_port(std::string_view variable, std::string_view text);

/// A comma-separated list of host:port (parse_host_port), e.g. the replicas
/// of a service "127.0.0.1:8082,127.0.0.1:8182"; blanks around the commas are
/// allowed. InvalidArgument naming `variable` for an empty list or entry, a
/// bad entry, or an address listed twice.
StatusOr<std::vector<HostPort>> parse_host_port_list(std::string_view variable,
                                                     std::string_view text);

/// The address in `name` (see parse_host_port), or `fallback`.
StatusOr<HostPort> env_address(std::string_view name, std::string_view fallback);

/// The boolean value of `name` (true/false, 1/0, yes/no, on/off; any case), or `fallback`.
StatusOr<bool> env_bool(std::string_view name, bool fallback);

/// The duration in `name`, or `fallback`: a non-negative integer with an
/// optional unit ms (the default), s, m or h, e.g. "250", "250ms", "30s", "5m".
/// Must lie in min..max.
StatusOr<std::chrono::milliseconds> env_duration_ms(
    std::string_view name, std::chrono::milliseconds fallback,
    std::chrono::milliseconds min = std::chrono::milliseconds(0),
    std::chrono::milliseconds max = std::chrono::hours(24 * 365));

/// How a service's saga engine runs (docs/sharding.md), from the environment:
///   SAGA_SHARDS     shards of a new store (0 or unset: the store's, 12 for a new one)
///   SAGA_THREADS    engine threads of an orchestrator or participant (0 or unset: one)
///   SAGA_CHANGELOG  keep every shard's state in a Kafka changelog too (default off)
///   SAGA_REPLICAS   run as one of several replicas (docs/replicas.md; needs SAGA_CHANGELOG)
///   ADVERTISED_URL  with SAGA_REPLICAS: http://host:port where the other replicas reach
///                   this one (required then)
///   SAGA_STANDBY    with SAGA_REPLICAS: keep a standby copy of the shards other replicas
///                   own, so that a failover replays almost nothing (default off)
///   SAGA_DEDUP_HORIZON  how long participants' inboxes remember a command, and how old a
///                   saga may grow before its orchestrator stops sending (docs/storage.md,
///                   "Participant retention"); a duration, 0 = forever (default 720h: 30 days)
struct EngineSettings {
  uint32_t shards = 0;
  uint32_t threads = 0;
  bool changelog = false;
  bool replicas = false;
  bool standby = false;
  std::string advertised_url;
  std::chrono::milliseconds dedup_horizon{std::chrono::hours(720)};
};
StatusOr<EngineSettings> engine_settings_from_env();

}  // namespace saga::service
