// saga-inventory: the inventory participant behind its HTTP API.
//   PORT (8084), DATA_DIR (./data/inventory), KAFKA_BROKERS (required), KAFKA_* (see
//   kafka_transport.h), LOG_LEVEL, HTTP_* (see http_server.h).
// `saga-inventory reshard --from DIR --to NEW_DIR --shards N` moves the STOPPED
// service's store to N shards instead (docs/storage.md, "Changing the shard count").
#include <string>
#include <string_view>
#include <vector>

#include "domain/participant_service.h"
#include "saga/inventory/inventory.h"
#include "saga/service/command_line.h"

int main(int argc, char** argv) {
  namespace inv = saga::inventory;
  if (argc > 1 && std::string_view(argv[1]) == "reshard")
    return saga::domain::run_participant_reshard(
        inv::kParticipantName, std::vector<std::string>(argv + 2, argv + argc), inv::shard_key);
  if (auto rc = saga::service::handle_command_line("saga-inventory", argc, argv)) return *rc;
  return saga::domain::run_participant_service({
      .name = inv::kParticipantName,
      .default_port = 8084,
      .event_destination = inv::kEventDestination,
      .register_handlers = [](saga::Participant& p) { return inv::register_handlers(p); },
      .add_routes = [](saga::service::Router& r, saga::Participant& p) { inv::add_routes(r, p); },
  });
}
