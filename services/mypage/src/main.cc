// saga-mypage: the read model of the reserveplace domain events behind its HTTP API.
//   PORT (8086), DATA_DIR (./data/mypage), KAFKA_BROKERS (required), KAFKA_* (see
//   kafka_transport.h), EVENTS_TOPIC (reserveplace), LOG_LEVEL, HTTP_* (see http_server.h).
#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <utility>

#include "domain/participant_service.h"
#include "saga/kafka_transport.h"
#include "saga/mypage/mypage.h"
#include "saga/service/command_line.h"
#include "saga/service/config.h"
#include "saga/service/http_server.h"
#include "saga/service/identity.h"
#include "saga/service/logging.h"

int main(int argc, char** argv) {
  if (auto rc = saga::service::handle_command_line("saga-mypage", argc, argv)) return *rc;
  using namespace saga::service;
  namespace mp = saga::mypage;
  ShutdownSignal signals;
  if (saga::Status s = setup_logging(mp::kServiceName); !s.ok()) spdlog::warn("{}", s.message());
  auto server_options = ServerOptions::from_env(mp::kDefaultPort);
  if (!server_options.ok()) {
    spdlog::critical("{}", server_options.status().message());
    return 2;
  }
  if (saga::Status s = identity_required_from_env(); !s.ok()) {
    spdlog::critical("{}", s.message());
    return 2;
  }
  if (!identity_required())
    spdlog::warn("AUTH_REQUIRED is off: requests without identity headers act as an admin");
  const std::string data_dir = env_string("DATA_DIR", "./data/mypage");

  saga::KafkaOptions kafka = saga::kafka_options_from_env(mp::kServiceName);
  kafka.topic_overrides[mp::kEventDestination] =
      saga::domain::events_topic_from_env(mp::kEventDestination);
  if (kafka.brokers.empty()) {
    spdlog::critical("KAFKA_BROKERS must be set (host:port[,host:port...])");
    return 2;
  }
  auto engine = engine_settings_from_env();  // SAGA_DEDUP_HORIZON: how long marks are kept
  if (!engine.ok()) {
    spdlog::critical("{}", engine.status().message());
    return 2;
  }
  mp::ReadModelOptions model_options;
  model_options.dedup_horizon = engine->dedup_horizon;
  auto model = mp::ReadModel::open(data_dir, model_options);
  if (!model.ok()) {
    spdlog::critical("store: {}", model.status().to_string());
    return 1;
  }
  if ((*model)->empty()) {  // new, or its disk was lost: the group's offsets would skip the past
    kafka.from_beginning = true;
    spdlog::info("the store in {} is empty: reading the events from the start", data_dir);
  }
  auto transport = saga::make_kafka_transport(mp::kServiceName, kafka);
  if (!transport.ok()) {
    spdlog::critical("kafka: {}", transport.status().to_string());
    return 1;
  }
  auto runner = std::make_unique<mp::EventRunner>(**model, std::move(*transport));
  if (saga::Status s = runner->start(); !s.ok()) {
    spdlog::critical("consumer: {}", s.to_string());
    return 1;
  }

  Router router;
  mp::add_routes(router, **model, [&runner] { return runner->health(); });
  HttpServer server(*server_options, std::move(router));
  if (saga::Status s = server.start(); !s.ok()) {
    spdlog::critical("http: {}", s.to_string());
    return 1;
  }
  spdlog::info("mypage listening on port {}, data in {}", server.port(), data_dir);
  const int sig = stop_on_signal(server, signals);  // drains in-flight requests
  spdlog::info("signal {}: HTTP stopped, stopping the consumer", sig);
  runner->stop();  // closes the consumer: acked offsets are committed
  model->reset();  // then the store closes
  return 0;
}
