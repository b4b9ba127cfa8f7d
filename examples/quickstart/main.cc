// A whole saga in one process: an orchestrator and two participants talk over
// libsaga's in-memory transport, each with its own RocksDB store. The booking
// saga holds a room, then charges the card; a charge over 1000 is declined, so
// the second booking compensates: its hold is released.
//
//   saga_quickstart [DATA_DIR]
#include <chrono>
#include <filesystem>
#include <iostream>

#include "saga/memory_transport.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"

void check(const saga::Status& s) {
  if (!s.ok()) throw std::runtime_error(s.to_string());
}
template <typename T>
T must(saga::StatusOr<T> r) {
  check(r.status());
  return std::move(r).value();
}

int main(int argc, char** argv) {
  const auto dir = argc > 1 ? std::filesystem::path(argv[1])
                            : std::filesystem::temp_directory_path() / "saga-quickstart";
  std::filesystem::remove_all(dir);
  auto bus = saga::MemoryBus::create(std::make_shared<saga::SystemClock>(), /*seed=*/1);
  auto participant = [&](const std::string& name) {
    saga::ParticipantOptions o;
    o.name = name;
    o.data_dir = (dir / name).string();
    return must(saga::Participant::open(o, bus->connect(name)));
  };

  // Participants: a handler per command; state, inbox and reply are one write.
  auto inventory = participant("inventory");
  check(inventory->on("hold", [](saga::CommandContext& c) {
    c.state.put("hold/" + c.command.saga_id, c.payload.at("room").get<std::string>());
    return saga::HandlerResult::success({{"hold", "h-" + c.command.saga_id}});
  }));
  check(inventory->on("release", [](saga::CommandContext& c) {
    c.state.del("hold/" + c.command.saga_id);
    return saga::HandlerResult::success();
  }));
  auto payment = participant("payment");
  check(payment->on("charge", [](saga::CommandContext& c) {
    if (c.payload.at("amount").get<int>() > 1000) return saga::HandlerResult::failure("declined");
    return saga::HandlerResult::success();
  }));

  // The saga: ordered steps, each with the command that undoes it.
  auto booking = must(saga::DefinitionBuilder("booking", 1)
                          .command("reserve", "inventory", "hold")
                          .compensate("inventory", "release")
                          .command("pay", "payment", "charge")
                          .build());
  saga::Options options;
  options.data_dir = (dir / "orchestrator").string();
  auto orchestrator =
      must(saga::Orchestrator::open(options, bus->connect("orchestrator"), {booking}));

  for (int amount : {300, 5000}) {
    const std::string id =
        must(orchestrator->start("booking", {{"room", "101"}, {"amount", amount}}));
    saga::SagaView view = must(orchestrator->get(id));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!saga::is_terminal(view.state) && std::chrono::steady_clock::now() < deadline) {
      orchestrator->run_once(std::chrono::milliseconds(1));  // all three on this thread
      inventory->run_once();
      payment->run_once();
      view = must(orchestrator->get(id));
    }
    std::cout << "booking of " << amount << ": " << saga::to_string(view.state) << "\n";
    for (const saga::StepView& s : view.steps)
      std::cout << "  " << s.name << ": " << saga::to_string(s.status)
                << (s.last_error.empty() ? "" : " (" + s.last_error + ")") << "\n";
    if (!saga::is_terminal(view.state)) return 1;  // still going after 10 s
  }
  return 0;
}
