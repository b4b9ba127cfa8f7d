// saga-reshard: copies a STOPPED orchestrator's store into a new store with
// another shard count (saga/reshard.h; the procedure is in docs/storage.md,
// "Changing the shard count").
//   saga-reshard --from DIR --to NEW_DIR --shards N [--kind orchestrator]
// Exit codes: 0 done; 1 the reshard failed (nothing left in NEW_DIR); 2 usage.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>
#include <vector>

#include "saga/reshard.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  const std::string program = "saga-reshard";
  auto command = saga::parse_reshard_command(args);
  if (!command.ok()) {
    std::fprintf(stderr, "%s: %s\n%s", program.c_str(), command.status().message().c_str(),
                 saga::reshard_usage(program).c_str());
    return 2;
  }
  if (command->help) {
    std::fputs(saga::reshard_usage(program).c_str(), stdout);
    return 0;
  }
  if (command->kind == "participant") {
    std::fprintf(stderr,
                 "%s: participant stores need the service's own key function (which command key "
                 "wrote each state key): run the service's binary with its `reshard` command "
                 "(saga-inventory reshard, saga-payment reshard), or call "
                 "saga::reshard_participant from your service\n",
                 program.c_str());
    return 2;
  }
  auto done = saga::reshard_orchestrator(command->options);
  if (!done.ok()) {
    spdlog::error("{}", done.status().to_string());
    return 1;
  }
  return 0;
}
