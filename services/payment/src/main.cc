// saga-payment: the payment participant behind its HTTP API.
//   PORT (8083), DATA_DIR (./data/payment), KAFKA_BROKERS (required), KAFKA_* (see
//   kafka_transport.h), PAYMENT_LATENCY_MS, PAYMENT_DECLINE_RATE, PAYMENT_FAILURE_RATE,
//   LOG_LEVEL, HTTP_* (see http_server.h).
#include <spdlog/spdlog.h>

#include "domain/participant_service.h"
#include "saga/payment/payment.h"
#include "saga/service/command_line.h"

int main(int argc, char** argv) {
  if (auto rc = saga::service::handle_command_line("saga-payment", argc, argv)) return *rc;
  namespace pay = saga::payment;
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
