// saga-inventory: the inventory participant behind its HTTP API.
//   PORT (8084), DATA_DIR (./data/inventory), KAFKA_BROKERS (required), KAFKA_* (see
//   kafka_transport.h), LOG_LEVEL, HTTP_* (see http_server.h).
#include "domain/participant_service.h"
#include "saga/inventory/inventory.h"
#include "saga/service/command_line.h"

int main(int argc, char** argv) {
  if (auto rc = saga::service::handle_command_line("saga-inventory", argc, argv)) return *rc;
  namespace inv = saga::inventory;
  return saga::domain::run_participant_service({
      .name = inv::kParticipantName,
      .default_port = 8084,
      .event_destination = inv::kEventDestination,
      .register_handlers = [](saga::Participant& p) { return inv::register_handlers(p); },
      .add_routes = [](saga::service::Router& r, saga::Participant& p) { inv::add_routes(r, p); },
  });
}
