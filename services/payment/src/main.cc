// saga-payment: the payment participant behind its HTTP API.
//   PORT (8083), DATA_DIR (./data/payment), KAFKA_BROKERS (required), KAFKA_* (see
//   kafka_transport.h), PAYMENT_LATENCY_MS, PAYMENT_DECLINE_RATE, PAYMENT_FAILURE_RATE,
//   LOG_LEVEL, HTTP_* (see http_server.h).
// `saga-payment reshard --from DIR --to NEW_DIR --shards N` moves the STOPPED
// service's store to N shards instead (docs/storage.md, "Changing the shard count").
#include <spdlog/spdlog.h>

#include <string>
#include <string_view>
#include <vector>

#include "domain/participant_service.h"
#include "saga/payment/payment.h"
#include "saga/service/command_line.h"

int main(int argc, char** argv) {
  namespace pay = saga::payment;
  if (argc > 1 && std::string_view(argv[1]) == "reshard")
    return saga::domain::run_participant_reshard(
        pay::kParticipantName, std::vector<std::string>(argv + 2, argv + argc), pay::shard_key);
  if (auto rc = saga::service::handle_command_line("saga-payment", argc, argv)) return *rc;
  auto config = pay::Config::from_env();
  if (!config.ok()) {
    spdlog::critical("{}", config.status().message());
    return 2;
  }
  return saga::domain::run_participant_service({
      .name = pay::kParticipantName,
      .default_port = 8083,
      .event_destination = pay::kEventDestination,
      .register_handlers =
          [&](saga::Participant& p) { return pay::register_handlers(p, {.config = *config}); },
      .add_routes = [](saga::service::Router& r, saga::Participant& p) { pay::add_routes(r, p); },
  });
}
