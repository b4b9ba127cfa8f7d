// A two-participant saga, end to end in one process: an orchestrator and two
// participants (inventory, payment) talk over libsaga's in-memory transport,
// each with its own RocksDB store. One booking succeeds; one is declined by
// payment and compensated (the stock hold is released).
//
//   saga_two_participants [DATA_DIR]
#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

#include "saga/memory_transport.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"

namespace {

// The saga's data, as a plain struct (nlohmann/json does the serialisation).
struct Booking {
  std::string room;
  int nights = 1;
  int amount = 0;
  std::string hold_id;  // filled from inventory's reply
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Booking, room, nights, amount, hold_id)

saga::DefinitionPtr booking_saga() {
  auto def = saga::DefinitionBuilder("booking", 1)
                 .command("reserve", "inventory", "hold")
                 .payload(saga::typed_payload<Booking>([](const Booking& b) {
                   return saga::Json{{"room", b.room}, {"nights", b.nights}};
                 }))
                 .on_reply(saga::typed_merge<Booking>([](Booking& b, const saga::Json& reply) {
                   b.hold_id = reply.at("hold_id").get<std::string>();
                 }))
                 .compensate("inventory", "release")
                 .timeout(std::chrono::seconds(2))
                 .command("pay", "payment", "charge")
                 .compensate("payment", "refund")
                 .build();
  if (!def.ok()) throw std::runtime_error(def.status().to_string());
  return *def;
}

saga::Status add_inventory_handlers(saga::Participant& inventory) {
  SAGA_RETURN_IF_ERROR(inventory.on("hold", [](saga::CommandContext& c) {
    const std::string room = c.payload.at("room");
    auto taken = c.state.get("room/" + room);
    if (!taken.ok()) return saga::HandlerResult::retry(taken.status().to_string());
    if (*taken) return saga::HandlerResult::failure("room " + room + " is taken");
    c.state.put("room/" + room, c.command.saga_id);
    return saga::HandlerResult::success({{"hold_id", "hold-" + c.command.saga_id}});
  }));
  return inventory.on("release", [](saga::CommandContext& c) {
    // The action's reply tells what to undo.
    std::cout << "  inventory: releasing " << c.action_reply.value("hold_id", "?") << "\n";
    c.state.del("room/" + c.payload.at("room").get<std::string>());
    return saga::HandlerResult::success();
  });
}

saga::Status add_payment_handlers(saga::Participant& payment) {
  SAGA_RETURN_IF_ERROR(payment.on("charge", [](saga::CommandContext& c) {
    const int amount = c.payload.at("amount");
    if (amount > 1000) return saga::HandlerResult::failure("card declined");
    c.state.put("charge/" + c.command.saga_id, std::to_string(amount));
    return saga::HandlerResult::success({{"charged", amount}});
  }));
  return payment.on("refund", [](saga::CommandContext& c) {
    c.state.del("charge/" + c.command.saga_id);
    return saga::HandlerResult::success();
  });
}

template <typename T>
T must(saga::StatusOr<T> r, const char* what) {
  if (!r.ok()) {
    std::cerr << what << ": " << r.status() << "\n";
    std::exit(1);
  }
  return std::move(r).value();
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const fs::path dir =
      argc > 1 ? fs::path(argv[1]) : fs::temp_directory_path() / "saga-two-participants";
  fs::remove_all(dir);

  auto bus = saga::MemoryBus::create(std::make_shared<saga::SystemClock>(), /*seed=*/1);

  saga::ParticipantOptions inv_opts;
  inv_opts.name = "inventory";
  inv_opts.data_dir = (dir / "inventory").string();
  auto inventory = must(saga::Participant::open(
                            inv_opts, std::shared_ptr<saga::Transport>(bus->connect("inventory"))),
                        "inventory");
  saga::ParticipantOptions pay_opts;
  pay_opts.name = "payment";
  pay_opts.data_dir = (dir / "payment").string();
  auto payment = must(
      saga::Participant::open(pay_opts, std::shared_ptr<saga::Transport>(bus->connect("payment"))),
      "payment");
  if (!add_inventory_handlers(*inventory).ok() || !add_payment_handlers(*payment).ok()) return 1;

  saga::Options options;
  options.data_dir = (dir / "orchestrator").string();
  auto orchestrator =
      must(saga::Orchestrator::open(options,
                                    std::shared_ptr<saga::Transport>(bus->connect("orchestrator")),
                                    {booking_saga()}),
           "orchestrator");
  orchestrator->start_background();
  inventory->start_background();
  payment->start_background();

  const std::string ok_id =
      must(orchestrator->start("booking", saga::Json(Booking{"101", 2, 300, ""})), "start");
  const std::string declined_id =
      must(orchestrator->start("booking", saga::Json(Booking{"102", 1, 5000, ""})), "start");

  int exit_code = 0;
  for (const std::string& id : {ok_id, declined_id}) {
    saga::SagaView view;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    do {
      view = must(orchestrator->get(id), "get");
      if (saga::is_terminal(view.state)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    } while (std::chrono::steady_clock::now() < deadline);
    std::cout << "saga " << id.substr(0, 8) << "... " << saga::to_string(view.state) << "\n";
    for (const saga::StepView& s : view.steps) {
      std::cout << "  step " << s.name << ": " << saga::to_string(s.status) << " after "
                << s.attempts << " attempt(s)"
                << (s.last_error.empty() ? "" : " (" + s.last_error + ")") << "\n";
    }
    if (!saga::is_terminal(view.state)) exit_code = 1;
  }
  const bool expected = orchestrator->get(ok_id)->state == saga::SagaState::kCompleted &&
                        orchestrator->get(declined_id)->state == saga::SagaState::kCompensated;
  std::cout << (expected ? "booking confirmed, declined booking compensated" : "unexpected outcome")
            << "\n";
  orchestrator->stop();
  inventory->stop();
  payment->stop();
  return expected ? exit_code : 1;
}
