#include "domain/participant_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <utility>

#include "domain/fields.h"
#include "saga/kafka_transport.h"
#include "saga/service/config.h"
#include "saga/service/http_server.h"
#include "saga/service/identity.h"
#include "saga/service/logging.h"
#include "saga/service/routing.h"
#include "saga/service/standard_routes.h"

namespace saga::domain {

void add_participant_standard_routes(service::Router& router, Participant& p,
                                     const std::string& name) {
  service::add_standard_routes(
      router, {.readiness =
                   [&p] {
                     return std::vector<service::ReadinessCheck>{{"participant", p.health()}};
                   },
               .metrics = [&p, name] { return participant_metrics_text(name, p.stats()); }});
}

std::string events_topic_from_env(const std::string& destination) {
  return service::env_string("EVENTS_TOPIC", destination);
}

int run_participant_service(const ParticipantService& spec) {
  using namespace saga::service;
  ShutdownSignal signals;
  if (Status s = setup_logging(spec.name); !s.ok()) spdlog::warn("{}", s.message());
  auto server_options = ServerOptions::from_env(spec.default_port);
  if (!server_options.ok()) {
    spdlog::critical("{}", server_options.status().message());
    return 2;
  }
  if (Status s = identity_required_from_env(); !s.ok()) {
    spdlog::critical("{}", s.message());
    return 2;
  }
  if (!identity_required())
    spdlog::warn("AUTH_REQUIRED is off: requests without identity headers act as an admin");
  const std::string data_dir = env_string("DATA_DIR", "./data/" + spec.name);

  KafkaOptions kafka = kafka_options_from_env(spec.name);
  if (!spec.event_destination.empty())
    kafka.topic_overrides[spec.event_destination] = events_topic_from_env(spec.event_destination);
  if (kafka.brokers.empty()) {
    spdlog::critical("KAFKA_BROKERS must be set (host:port[,host:port...])");
    return 2;
  }
  auto transport = make_kafka_transport(spec.name, kafka);
  if (!transport.ok()) {
    spdlog::critical("kafka: {}", transport.status().to_string());
    return 1;
  }
  auto engine = service::engine_settings_from_env();
  if (!engine.ok()) {
    spdlog::critical("{}", engine.status().message());
    return 2;
  }
  ParticipantOptions po;
  po.name = spec.name;
  po.data_dir = data_dir;
  po.shards = engine->shards;
  po.threads = engine->threads;
  po.changelog = engine->changelog;
  po.replicas = engine->replicas;
  po.standby = engine->standby;
  po.advertised_address = engine->advertised_url;
  po.dedup_horizon = engine->dedup_horizon;
  auto participant = Participant::open(po, std::shared_ptr<Transport>(std::move(*transport)));
  if (!participant.ok()) {
    spdlog::critical("participant: {}", participant.status().to_string());
    return 1;
  }
  Participant& p = **participant;
  if (Status s = spec.register_handlers(p); !s.ok()) {
    spdlog::critical("{}", s.to_string());
    return 1;
  }

  Router router;
  spec.add_routes(router, p);
  if (engine->replicas) {
    // Some requests wait on another replica (routing.h): keep threads for the
    // ones that do not, and for those other replicas send here.
    server_options->threads = std::max(server_options->threads, 8);
    limit_forwarding(server_options->threads / 2);
  }
  HttpServer server(*server_options, std::move(router));
  p.start_background();
  if (Status s = server.start(); !s.ok()) {
    spdlog::critical("http: {}", s.to_string());
    p.stop();
    return 1;
  }
  spdlog::info("{} listening on port {}, data in {}", spec.name, server.port(), data_dir);
  const int sig = stop_on_signal(server, signals);  // drains in-flight requests
  spdlog::info("signal {}: HTTP stopped, stopping the participant", sig);
  p.stop();
  return 0;
}

int run_participant_reshard(const std::string& name, const std::vector<std::string>& args,
                            const ShardKeyFn& shard_key) {
  const std::string program = "saga-" + name + " reshard";
  auto command = parse_reshard_command(args);
  if (!command.ok()) {
    std::fprintf(stderr, "%s: %s\n%s", program.c_str(), command.status().message().c_str(),
                 reshard_usage(program).c_str());
    return 2;
  }
  if (command->help) {
    std::fputs(reshard_usage(program).c_str(), stdout);
    return 0;
  }
  if (command->kind != "participant" && std::find(args.begin(), args.end(), "--kind") != args.end()) {
    std::fprintf(stderr, "%s: this is a participant's store; orchestrator stores go through "
                 "saga-reshard\n", program.c_str());
    return 2;
  }
  command->options.logger = name;
  auto done = reshard_participant(command->options, shard_key);
  if (!done.ok()) {
    spdlog::error("{}", done.status().to_string());
    return 1;
  }
  return 0;
}

}  // namespace saga::domain
