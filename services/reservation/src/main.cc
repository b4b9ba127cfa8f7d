// saga-reservation: the booking saga's orchestrator behind its HTTP API.
//   PORT (8082), DATA_DIR (./data/reservation), KAFKA_BROKERS (required), KAFKA_* (see
//   kafka_transport.h), EVENTS_TOPIC (reserveplace), INVENTORY_ADDR (127.0.0.1:8084, or
//   the replicas' host:port separated by commas; asked whether a booked place exists), LOG_LEVEL, HTTP_* (see http_server.h; at
//   least 8 threads).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "domain/participant_service.h"
#include "saga/kafka_transport.h"
#include "saga/orchestrator.h"
#include "saga/reservation/reservation.h"
#include "saga/service/command_line.h"
#include "saga/service/config.h"
#include "saga/service/http_server.h"
#include "saga/service/identity.h"
#include "saga/service/logging.h"
#include "saga/service/routing.h"

int main(int argc, char** argv) {
  if (auto rc = saga::service::handle_command_line("saga-reservation", argc, argv)) return *rc;
  using namespace saga::service;
  namespace res = saga::reservation;
  ShutdownSignal signals;
  if (saga::Status s = setup_logging(res::kServiceName); !s.ok()) spdlog::warn("{}", s.message());
  auto server_options = ServerOptions::from_env(8082);
  if (!server_options.ok()) {
    spdlog::critical("{}", server_options.status().message());
    return 2;
  }
  // Handlers block on durable starts: keep enough threads to serve meanwhile.
  server_options->threads = std::max(server_options->threads, 8);
  if (saga::Status s = identity_required_from_env(); !s.ok()) {
    spdlog::critical("{}", s.message());
    return 2;
  }
  if (!identity_required())
    spdlog::warn("AUTH_REQUIRED is off: requests without identity headers act as an admin");
  const std::string data_dir = env_string("DATA_DIR", "./data/reservation");

  saga::KafkaOptions kafka = saga::kafka_options_from_env(res::kServiceName);
  kafka.topic_overrides[res::kEventDestination] =
      saga::domain::events_topic_from_env(res::kEventDestination);
  if (kafka.brokers.empty()) {
    spdlog::critical("KAFKA_BROKERS must be set (host:port[,host:port...])");
    return 2;
  }
  auto transport = saga::make_kafka_transport(res::kServiceName, kafka);
  if (!transport.ok()) {
    spdlog::critical("kafka: {}", transport.status().to_string());
    return 1;
  }
  auto inventory = parse_host_port_list("INVENTORY_ADDR", env_string("INVENTORY_ADDR", "127.0.0.1:8084"));
  if (!inventory.ok()) {
    spdlog::critical("{}", inventory.status().message());
    return 2;
  }
  auto policy = res::cancellation_policy_from_env();
  if (!policy.ok()) {
    spdlog::critical("{}", policy.status().message());
    return 2;
  }
  res::Options options;
  options.place_lookup = res::inventory_place_lookup(std::move(*inventory));
  options.cancellation = *policy;
  auto kept = env_duration_ms("BOOKING_RETENTION", options.booking_retention,
                              std::chrono::milliseconds(0), std::chrono::hours(24 * 3660));
  if (!kept.ok()) {
    spdlog::critical("{}", kept.status().message());
    return 2;
  }
  options.booking_retention = *kept;
  auto definitions = res::definitions(options);
  if (!definitions.ok()) {
    spdlog::critical("definitions: {}", definitions.status().to_string());
    return 1;
  }
  auto engine = engine_settings_from_env();
  if (!engine.ok()) {
    spdlog::critical("{}", engine.status().message());
    return 2;
  }
  saga::Options o;
  o.name = res::kServiceName;
  o.data_dir = data_dir;
  o.breaker.enabled = true;
  o.shards = engine->shards;
  o.threads = engine->threads;
  o.changelog = engine->changelog;
  o.replicas = engine->replicas;
  o.standby = engine->standby;
  o.advertised_address = engine->advertised_url;
  o.dedup_horizon = engine->dedup_horizon;
  auto orchestrator = saga::Orchestrator::open(
      std::move(o), std::shared_ptr<saga::Transport>(std::move(*transport)), *definitions);
  if (!orchestrator.ok()) {
    spdlog::critical("orchestrator: {}", orchestrator.status().to_string());
    return 1;
  }
  saga::Orchestrator& orch = **orchestrator;

  Router router;
  res::add_routes(router, orch, options);
  if (engine->replicas) {
    // Some requests wait on another replica (routing.h): keep threads for the
    // ones that do not, and for those other replicas send here.
    server_options->threads = std::max(server_options->threads, 8);
    limit_forwarding(server_options->threads / 2);
  }
  HttpServer server(*server_options, std::move(router));
  orch.start_background();
  if (saga::Status s = server.start(); !s.ok()) {
    spdlog::critical("http: {}", s.to_string());
    orch.stop();
    return 1;
  }
  spdlog::info("reservation listening on port {}, data in {}", server.port(), data_dir);
  const int sig = stop_on_signal(server, signals);  // drains in-flight requests
  spdlog::info("signal {}: HTTP stopped, stopping the orchestrator", sig);
  orch.stop();
  return 0;
}
