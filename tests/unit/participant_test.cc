// The participant SDK driven by hand over a MemoryBus: the test plays the
// orchestrator with a raw endpoint, sends commands, runs the participant's
// engine with run_once() and polls for replies with a deadline. Nothing
// sleeps; time the engine reads comes from a ManualClock.
#include "saga/participant.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <algorithm>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <string>
#include <utility>
#include <vector>

#include "saga/clock.h"
#include "saga/memory_transport.h"
#include "saga/message.h"
#include "saga/shard.h"
#include "saga/status.h"
#include "support/doctest_vectors.h"
#include "support/temp_dir.h"
#include "changelog.h"
#include "store/store.h"

namespace saga {
namespace {

using std::chrono::steady_clock;

constexpr char kParticipant[] = "inventory";
constexpr char kReplyTo[] = "orch.replies";
constexpr char kEvents[] = "inventory.events";
constexpr char kSaga[] = "saga-1";
constexpr char kTrace[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
// Upper bound on any wait for something that should happen at once.
constexpr std::chrono::seconds kPatience{10};

using testing::TempDir;

// A command as the orchestrator would send it for saga kSaga.
Message command(std::string id, std::string type, const Json& payload = Json::object(),
                uint32_t attempt = 1) {
  Message m;
  m.id = std::move(id);
  m.kind = MessageKind::kCommand;
  m.type = std::move(type);
  m.destination = kParticipant;
  m.key = kSaga;
  m.saga_id = kSaga;
  m.reply_to = kReplyTo;
  m.attempt = attempt;
  m.traceparent = kTrace;
  m.payload = payload.dump();
  m.created_ms = 1'700'000'000'000;
  return m;
}

// The compensation `id` of the action command `action_id`.
Message compensation(std::string id, std::string type, std::string action_id,
                     const Json& payload = Json::object()) {
  Message m = command(std::move(id), std::move(type), payload);
  m.compensates = std::move(action_id);
  return m;
}

// A domain event of `type` for the kEvents stream.
Message event(std::string type, std::string payload = {}) {
  Message e;
  e.type = std::move(type);
  e.destination = kEvents;
  e.payload = std::move(payload);
  return e;
}

Json error_of(const Message& reply) {
  Json j = Json::parse(reply.payload, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"] : Json();
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// One participant named kParticipant over a temp folder, and the test's own
// orchestrator endpoint subscribed to the reply and event destinations.
// Handlers registered with on() are registered again on every (re)open.
class Harness {
 public:
  Harness() {
    REQUIRE(orch_
                ->subscribe(kReplyTo,
                            [this](Message m, Transport::Ack ack) {
                              replies.push_back(std::move(m));
                              ack();
                            })
                .ok());
    REQUIRE(orch_
                ->subscribe(kEvents,
                            [this](Message m, Transport::Ack ack) {
                              events.push_back(std::move(m));
                              ack();
                            })
                .ok());
  }
  ~Harness() { close(); }

  // Registers `handler` for `type` now (if open) and on every later open, and
  // counts its calls in calls[type] (engine threads call it at once).
  void on(const std::string& type, CommandHandler handler) {
    handlers_[type] = [this, type, handler = std::move(handler)](CommandContext& ctx) {
      {
        std::lock_guard lock(calls_mu);
        ++calls[type];
      }
      return handler(ctx);
    };
    if (p) REQUIRE(p->on(type, handlers_[type]).ok());
  }

  Status open(uint32_t shards = 0) {
    ParticipantOptions o;
    o.name = kParticipant;
    o.data_dir = dir_.path().string();
    o.sync = false;
    o.clock = clock;
    o.shards = shards;
    o.threads = threads;
    o.changelog = changelog;
    o.dedup_horizon = dedup_horizon;
    std::shared_ptr<Transport> endpoint(bus->connect(kParticipant));
    if (wrap_endpoint) endpoint = wrap_endpoint(std::move(endpoint));
    auto opened = Participant::open(o, std::move(endpoint));
    if (!opened.ok()) return opened.status();
    p = std::move(*opened);
    for (const auto& [type, handler] : handlers_) REQUIRE(p->on(type, handler).ok());
    return ok_status();
  }

  void close() {
    if (!p) return;
    p->stop();
    p.reset();
  }

  void reopen() {
    close();
    REQUIRE(open().ok());
  }

  void send(Message m) { orch_->send(std::move(m), nullptr); }

  // Runs the participant and the orchestrator endpoint until `done` holds or
  // kPatience passes; returns whether it held. With `drive_engine` false only
  // the orchestrator endpoint is polled (the engine runs in the background).
  bool run_until(const std::function<bool()>& done, bool drive_engine = true) {
    const auto deadline = steady_clock::now() + kPatience;
    for (;;) {
      if (done()) return true;
      if (steady_clock::now() >= deadline) return false;
      if (p && drive_engine) {
        p->run_once(Duration{1});
        orch_->poll(Duration{0});
      } else {
        orch_->poll(Duration{1});
      }
    }
  }

  // Lets whatever is already on the bus be delivered, without waiting for
  // anything in particular: the MemoryBus hands over everything queued at once.
  void settle() {
    for (int i = 0; i < 3; ++i) {
      if (p) p->run_once(Duration{0});
      orch_->poll(Duration{0});
    }
  }

  // Sends `cmd` and returns the reply to it that arrives next.
  Message roundtrip(Message cmd) {
    const size_t before = replies.size();
    const std::string id = cmd.id;
    send(std::move(cmd));
    REQUIRE_MESSAGE(run_until([&] { return replies.size() > before; }), "no reply to " << id);
    const Message& r = replies.back();
    CHECK(r.in_reply_to == id);
    return r;
  }

  std::optional<std::string> state(std::string_view key) {
    auto v = p->get(key);
    REQUIRE(v.ok());
    return *v;
  }

  int count(const std::string& type) const {
    std::lock_guard lock(calls_mu);
    auto it = calls.find(type);
    return it == calls.end() ? 0 : it->second;
  }

  /// The store's folder.
  const std::filesystem::path& dir() const { return dir_.path(); }

  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<MemoryBus> bus = MemoryBus::create(clock, 1);
  bool changelog = false;  // ParticipantOptions::changelog of every open()
  uint32_t threads = 0;    // ParticipantOptions::threads of every open()
  // Wraps the participant's endpoint on every open(), when set.
  std::function<std::shared_ptr<Transport>(std::shared_ptr<Transport>)> wrap_endpoint;
  Duration dedup_horizon = ParticipantOptions{}.dedup_horizon;
  std::unique_ptr<Participant> p;
  std::vector<Message> replies;
  std::vector<Message> events;
  mutable std::mutex calls_mu;
  std::map<std::string, int> calls;  // GUARDED_BY(calls_mu)

 private:
  TempDir dir_;
  std::unique_ptr<Transport> orch_ = bus->connect("orch");
  std::map<std::string, CommandHandler> handlers_;
};

// A reserve handler: holds `qty` of the payload's sku and replies with a hold id.
HandlerResult reserve(CommandContext& ctx) {
  const std::string sku = ctx.payload.at("sku").get<std::string>();
  ctx.state.put("hold/" + ctx.command.id, sku);
  ctx.state.put("stock/" + sku, std::to_string(ctx.payload.value("qty", 1)));
  return HandlerResult::success({{"hold", "h-" + sku}});
}

TEST_CASE("a successful command applies its state and replies success with the handler's payload") {
  Harness h;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());

  const Message r =
      h.roundtrip(command("saga-1/reserve/a", "reserve", {{"sku", "a"}, {"qty", 2}}, 3));
  CHECK(r.kind == MessageKind::kReply);
  CHECK(r.type == "reply");
  CHECK(r.id == "saga-1/reserve/a/r");
  CHECK(r.in_reply_to == "saga-1/reserve/a");
  CHECK(r.destination == kReplyTo);
  CHECK(r.attempt == 3);
  CHECK(r.outcome == ReplyOutcome::kSuccess);
  CHECK(r.key == kSaga);
  CHECK(r.saga_id == kSaga);
  CHECK(r.traceparent == kTrace);
  CHECK(Json::parse(r.payload) == Json{{"hold", "h-a"}});

  CHECK(h.count("reserve") == 1);
  CHECK(h.state("stock/a") == "2");
  CHECK(h.state("hold/saga-1/reserve/a") == "a");
  CHECK(h.state("stock/b") == std::nullopt);

  const ParticipantStats s = h.p->stats();
  CHECK(s.applied == 1);
  CHECK(s.refused == 0);
  CHECK(s.duplicates == 0);
  CHECK(s.writes >= 1);
  CHECK(s.store_keys >= 3);  // the inbox record, stock/a, the hold
  CHECK(s.store_bytes > 0);
}

TEST_CASE("the reply key is the saga id even when the command has its own partition key") {
  Harness h;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  Message cmd = command("saga-1/reserve/a", "reserve", {{"sku", "a"}});
  cmd.key = "sku-a";
  const Message r = h.roundtrip(cmd);
  CHECK(r.key == kSaga);
}

TEST_CASE("a handler that returns a null reply answers with an empty object") {
  Harness h;
  h.on("touch", [](CommandContext&) { return HandlerResult::success(Json()); });
  REQUIRE(h.open().ok());
  const Message r = h.roundtrip(command("saga-1/touch/a", "touch"));
  CHECK(r.outcome == ReplyOutcome::kSuccess);
  CHECK(Json::parse(r.payload) == Json::object());
}

TEST_CASE("scan visits committed keys with the prefix in order and stops when told") {
  Harness h;
  h.on("stock", [](CommandContext& ctx) {
    ctx.state.put("stock/b", "2");
    ctx.state.put("stock/a", "1");
    ctx.state.put("stock/c", "3");
    ctx.state.put("price/a", "10");
    return HandlerResult::success();
  });
  REQUIRE(h.open().ok());
  REQUIRE(h.roundtrip(command("saga-1/stock/a", "stock")).outcome == ReplyOutcome::kSuccess);

  std::vector<std::string> seen;
  REQUIRE(h.p->scan("stock/",
                    [&](std::string_view k, std::string_view v) {
                      seen.push_back(std::string(k) + "=" + std::string(v));
                      return true;
                    })
              .ok());
  CHECK(seen == std::vector<std::string>{"stock/a=1", "stock/b=2", "stock/c=3"});

  seen.clear();
  REQUIRE(h.p->scan("stock/",
                    [&](std::string_view k, std::string_view) {
                      seen.emplace_back(k);
                      return seen.size() < 2;
                    })
              .ok());
  CHECK(seen == std::vector<std::string>{"stock/a", "stock/b"});
}

TEST_CASE(
    "a duplicate command is answered with the stored reply and its handler is not called again") {
  Harness h;
  int n = 0;
  h.on("reserve", [&](CommandContext& ctx) {
    ++n;
    ctx.state.put("counter", std::to_string(n));
    return HandlerResult::success({{"call", n}});
  });
  REQUIRE(h.open().ok());

  const Message first = h.roundtrip(command("saga-1/reserve/a", "reserve"));
  REQUIRE(first.outcome == ReplyOutcome::kSuccess);

  SUBCASE("while running") {
    const Message again = h.roundtrip(command("saga-1/reserve/a", "reserve", Json::object(), 2));
    CHECK(again.outcome == ReplyOutcome::kSuccess);
    CHECK(again.id == first.id);
    CHECK(again.payload == first.payload);
    CHECK(Json::parse(again.payload) == Json{{"call", 1}});
    CHECK(again.attempt == 2);  // the duplicate's own attempt is echoed
    CHECK(h.count("reserve") == 1);
    CHECK(h.p->stats().duplicates == 1);
    CHECK(h.p->stats().applied == 1);
  }
  SUBCASE("after the participant was closed and reopened on the same folder") {
    h.reopen();
    CHECK(h.state("counter") == "1");  // the state survived
    const Message again = h.roundtrip(command("saga-1/reserve/a", "reserve"));
    CHECK(again.outcome == ReplyOutcome::kSuccess);
    CHECK(again.payload == first.payload);
    CHECK(h.count("reserve") == 1);
    CHECK(h.p->stats().duplicates == 1);
    CHECK(h.p->stats().applied == 0);
    CHECK(h.state("counter") == "1");
  }
}

TEST_CASE("two copies of one command in the same batch run the handler once") {
  Harness h;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  h.send(command("saga-1/reserve/a", "reserve", {{"sku", "a"}}));
  h.send(command("saga-1/reserve/a", "reserve", {{"sku", "a"}}));
  REQUIRE(h.p->run_once(Duration{1'000}) == 2);
  REQUIRE(h.run_until([&] { return h.replies.size() == 2; }));
  CHECK(h.count("reserve") == 1);
  CHECK(h.replies[0].payload == h.replies[1].payload);
  CHECK(h.replies[1].outcome == ReplyOutcome::kSuccess);
  CHECK(h.p->stats().duplicates == 1);
}

TEST_CASE("the inbox answers a redelivery until the de-duplication horizon, then forgets it") {
  Harness h;
  h.dedup_horizon = Duration{3'600'000};  // 1 h; a sweep starts every 60 s
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  const Message cmd = command("saga-1/reserve/a", "reserve", {{"sku", "a"}});
  REQUIRE(h.roundtrip(cmd).outcome == ReplyOutcome::kSuccess);
  h.roundtrip(command("saga-2/reserve/a", "reserve", {{"sku", "b"}}));

  h.clock->advance(Duration{3'540'000});  // 59 min: remembered
  h.settle();
  CHECK(h.roundtrip(cmd).outcome == ReplyOutcome::kSuccess);
  CHECK(h.count("reserve") == 2);
  CHECK(h.p->stats().duplicates == 1);
  CHECK(h.p->stats().expired == 0);

  h.clock->advance(Duration{120'000});  // 61 min: the next sweep forgets both
  h.settle();
  CHECK(h.p->stats().expired == 2);
  h.roundtrip(cmd);  // now handled as new: the horizon must outlast any redelivery
  CHECK(h.count("reserve") == 3);
  CHECK(h.p->stats().duplicates == 1);
  h.reopen();  // gone from the store, not only from memory
  h.clock->advance(Duration{60'000});
  h.settle();
  CHECK(h.p->stats().expired == 0);  // nothing more expired: the new record is 1 min old
}

TEST_CASE("a state key put with an expiry goes at its expiry, unless a later put gave it a later one") {
  Harness h;
  h.on("hold", [&h](CommandContext& ctx) {
    const int64_t ttl = ctx.payload.value("ttl", int64_t{0});
    const std::string key = ctx.payload.at("key");
    if (ttl > 0) {
      ctx.state.put(key, "held", to_millis(h.clock->now()) + ttl);
    } else {
      ctx.state.put(key, "plain");
    }
    return HandlerResult::success();
  });
  REQUIRE(h.open().ok());
  int n = 0;
  auto hold = [&](const std::string& key, int64_t ttl) {
    const std::string id = "saga-" + std::to_string(++n) + "/hold";
    REQUIRE(h.roundtrip(command(id, "hold", {{"key", key}, {"ttl", ttl}})).outcome ==
            ReplyOutcome::kSuccess);
  };
  constexpr int64_t kMinute = 60'000;
  hold("a", 10 * kMinute);
  hold("b", 10 * kMinute);
  hold("b", 30 * kMinute);  // later: decides
  hold("c", 10 * kMinute);
  hold("c", 0);  // without an expiry: the earlier one still holds
  hold("d", 0);

  h.clock->advance(Duration{11 * kMinute});
  h.settle();
  CHECK(h.state("a") == std::nullopt);
  CHECK(h.state("b") == "held");
  CHECK(h.state("c") == std::nullopt);
  CHECK(h.state("d") == "plain");
  CHECK(h.p->stats().state_expired == 2);

  h.reopen();
  CHECK(h.state("a") == std::nullopt);  // gone from the store, not only from memory
  h.clock->advance(Duration{20 * kMinute});
  h.settle();
  CHECK(h.state("b") == std::nullopt);
  CHECK(h.state("d") == "plain");
}

TEST_CASE("with a de-duplication horizon of 0 the inbox remembers forever") {
  Harness h;
  h.dedup_horizon = Duration{0};
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  const Message cmd = command("saga-1/reserve/a", "reserve", {{"sku", "a"}});
  h.roundtrip(cmd);
  h.clock->advance(Duration{100LL * 24 * 3'600'000});
  h.settle();
  h.roundtrip(cmd);
  CHECK(h.count("reserve") == 1);
  CHECK(h.p->stats().duplicates == 1);
  CHECK(h.p->stats().expired == 0);
}

TEST_CASE("a refused command discards its state changes and the refusal is remembered") {
  Harness h;
  h.on("reserve", [](CommandContext& ctx) {
    ctx.state.put("stock/a", "0");
    ctx.state.emit(event("Reserved"));
    return HandlerResult::failure("sold out");
  });
  REQUIRE(h.open().ok());

  const Message r = h.roundtrip(command("saga-1/reserve/a", "reserve", Json::object(), 1));
  CHECK(r.outcome == ReplyOutcome::kFailure);
  CHECK(r.id == "saga-1/reserve/a/r");
  CHECK(error_of(r) == "sold out");
  CHECK(h.state("stock/a") == std::nullopt);
  CHECK(h.p->stats().refused == 1);
  CHECK(h.p->stats().applied == 0);

  const Message again = h.roundtrip(command("saga-1/reserve/a", "reserve", Json::object(), 2));
  CHECK(again.outcome == ReplyOutcome::kFailure);
  CHECK(again.id == r.id);
  CHECK(again.payload == r.payload);
  CHECK(h.count("reserve") == 1);
  CHECK(h.p->stats().duplicates == 1);

  h.settle();
  CHECK(h.events.empty());  // the refused handler's event never went out
}

TEST_CASE("a retried command discards its state changes and is not remembered") {
  Harness h;
  h.on("reserve", [&](CommandContext& ctx) {
    ctx.state.put("stock/a", "attempt " + std::to_string(ctx.command.attempt));
    ctx.state.emit(event("Reserved"));
    if (ctx.command.attempt < 3) return HandlerResult::retry("store busy");
    return HandlerResult::success();
  });
  REQUIRE(h.open().ok());

  const Message r1 = h.roundtrip(command("saga-1/reserve/a", "reserve", Json::object(), 1));
  CHECK(r1.outcome == ReplyOutcome::kRetry);
  CHECK(r1.id == "saga-1/reserve/a/retry1");
  CHECK(r1.attempt == 1);
  CHECK(error_of(r1) == "store busy");
  CHECK(h.state("stock/a") == std::nullopt);

  const Message r2 = h.roundtrip(command("saga-1/reserve/a", "reserve", Json::object(), 2));
  CHECK(r2.outcome == ReplyOutcome::kRetry);
  CHECK(r2.id == "saga-1/reserve/a/retry2");  // a distinct id per attempt
  CHECK(h.count("reserve") == 2);             // the handler ran again
  CHECK(h.p->stats().retried == 2);
  CHECK(h.p->stats().duplicates == 0);
  h.settle();
  CHECK(h.events.empty());

  const Message r3 = h.roundtrip(command("saga-1/reserve/a", "reserve", Json::object(), 3));
  CHECK(r3.outcome == ReplyOutcome::kSuccess);
  CHECK(r3.id == "saga-1/reserve/a/r");
  CHECK(h.state("stock/a") == "attempt 3");
  CHECK(h.count("reserve") == 3);
  CHECK(h.run_until([&] { return h.events.size() == 1; }));
}

TEST_CASE("a compensation that overtakes its action voids the action") {
  Harness h;
  h.on("reserve", reserve);
  h.on("release", [](CommandContext&) { return HandlerResult::success({{"released", true}}); });
  REQUIRE(h.open().ok());

  const Message undo = h.roundtrip(compensation("saga-1/reserve/c", "release", "saga-1/reserve/a"));
  CHECK(undo.outcome == ReplyOutcome::kSuccess);
  CHECK(undo.id == "saga-1/reserve/c/r");
  CHECK(Json::parse(undo.payload) == Json::object());
  CHECK(h.count("release") == 0);
  CHECK(h.p->stats().voided == 1);

  // The action arrives late: refused without running its handler.
  const Message late = h.roundtrip(command("saga-1/reserve/a", "reserve", {{"sku", "a"}}));
  CHECK(late.outcome == ReplyOutcome::kFailure);
  CHECK(contains(error_of(late).dump(), "cancelled by compensation saga-1/reserve/c"));
  CHECK(h.count("reserve") == 0);
  CHECK(h.state("stock/a") == std::nullopt);

  // Both stay as they are after a restart.
  h.reopen();
  CHECK(h.roundtrip(command("saga-1/reserve/a", "reserve", {{"sku", "a"}})).outcome ==
        ReplyOutcome::kFailure);
  CHECK(h.roundtrip(compensation("saga-1/reserve/c", "release", "saga-1/reserve/a")).outcome ==
        ReplyOutcome::kSuccess);
  CHECK(h.count("reserve") == 0);
  CHECK(h.count("release") == 0);
}

TEST_CASE("a compensation and its action in the same batch, compensation first, void the action") {
  Harness h;
  h.on("reserve", reserve);
  h.on("release", [](CommandContext&) { return HandlerResult::success(); });
  REQUIRE(h.open().ok());
  h.send(compensation("saga-1/reserve/c", "release", "saga-1/reserve/a"));
  h.send(command("saga-1/reserve/a", "reserve", {{"sku", "a"}}));
  REQUIRE(h.p->run_once(Duration{1'000}) == 2);
  REQUIRE(h.run_until([&] { return h.replies.size() == 2; }));
  CHECK(h.replies[0].outcome == ReplyOutcome::kSuccess);
  CHECK(h.replies[1].outcome == ReplyOutcome::kFailure);
  CHECK(h.count("reserve") == 0);
  CHECK(h.count("release") == 0);
}

TEST_CASE("a compensation after a retry-only action voids it, since nothing was applied") {
  Harness h;
  h.on("reserve", [](CommandContext&) { return HandlerResult::retry("busy"); });
  h.on("release", [](CommandContext&) { return HandlerResult::success(); });
  REQUIRE(h.open().ok());
  REQUIRE(h.roundtrip(command("saga-1/reserve/a", "reserve")).outcome == ReplyOutcome::kRetry);
  CHECK(h.roundtrip(compensation("saga-1/reserve/c", "release", "saga-1/reserve/a")).outcome ==
        ReplyOutcome::kSuccess);
  CHECK(h.count("release") == 0);
  CHECK(h.p->stats().voided == 1);
  CHECK(h.roundtrip(command("saga-1/reserve/a", "reserve", Json::object(), 2)).outcome ==
        ReplyOutcome::kFailure);
  CHECK(h.count("reserve") == 1);
}

TEST_CASE("the compensation of a refused action succeeds without calling its handler") {
  Harness h;
  h.on("reserve", [](CommandContext&) { return HandlerResult::failure("sold out"); });
  h.on("release", [](CommandContext&) { return HandlerResult::failure("must not run"); });
  REQUIRE(h.open().ok());
  REQUIRE(h.roundtrip(command("saga-1/reserve/a", "reserve")).outcome == ReplyOutcome::kFailure);

  const Message undo = h.roundtrip(compensation("saga-1/reserve/c", "release", "saga-1/reserve/a"));
  CHECK(undo.outcome == ReplyOutcome::kSuccess);
  CHECK(Json::parse(undo.payload) == Json::object());
  CHECK(h.count("release") == 0);
  CHECK(h.p->stats().voided == 0);

  // Remembered: a duplicate gets the same answer.
  CHECK(h.roundtrip(compensation("saga-1/reserve/c", "release", "saga-1/reserve/a")).outcome ==
        ReplyOutcome::kSuccess);
  CHECK(h.count("release") == 0);
}

TEST_CASE("the compensation of a succeeded action runs its handler with the action's reply") {
  Harness h;
  h.on("reserve", reserve);
  Json seen_action_reply;
  Json seen_payload;
  h.on("release", [&](CommandContext& ctx) {
    seen_action_reply = ctx.action_reply;
    seen_payload = ctx.payload;
    const std::string sku = ctx.payload.at("sku").get<std::string>();
    ctx.state.del("stock/" + sku);
    return HandlerResult::success({{"released", ctx.action_reply.at("hold")}});
  });
  REQUIRE(h.open().ok());
  REQUIRE(h.roundtrip(command("saga-1/reserve/a", "reserve", {{"sku", "a"}})).outcome ==
          ReplyOutcome::kSuccess);
  REQUIRE(h.state("stock/a") == "1");

  const Message undo =
      h.roundtrip(compensation("saga-1/reserve/c", "release", "saga-1/reserve/a", {{"sku", "a"}}));
  CHECK(undo.outcome == ReplyOutcome::kSuccess);
  CHECK(h.count("release") == 1);
  CHECK(seen_action_reply == Json{{"hold", "h-a"}});
  CHECK(seen_payload == Json{{"sku", "a"}});
  CHECK(Json::parse(undo.payload) == Json{{"released", "h-a"}});
  CHECK(h.state("stock/a") == std::nullopt);  // del committed
}

TEST_CASE("an ordinary command sees a null action_reply and its parsed payload") {
  Harness h;
  bool null_action_reply = false;
  Json payload;
  h.on("reserve", [&](CommandContext& ctx) {
    null_action_reply = ctx.action_reply.is_null();
    payload = ctx.payload;
    return HandlerResult::success();
  });
  REQUIRE(h.open().ok());
  Message cmd = command("saga-1/reserve/a", "reserve");
  SUBCASE("an object payload") {
    cmd.payload = R"({"sku":"a","qty":3})";
    REQUIRE(h.roundtrip(cmd).outcome == ReplyOutcome::kSuccess);
    CHECK(payload == Json{{"sku", "a"}, {"qty", 3}});
  }
  SUBCASE("an empty payload is null") {
    cmd.payload.clear();
    REQUIRE(h.roundtrip(cmd).outcome == ReplyOutcome::kSuccess);
    CHECK(payload.is_null());
  }
  CHECK(null_action_reply);
}

TEST_CASE("a command of an unknown type is refused with an error naming the type") {
  Harness h;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  const Message r = h.roundtrip(command("saga-1/teleport/a", "teleport"));
  CHECK(r.outcome == ReplyOutcome::kFailure);
  const std::string err = error_of(r).get<std::string>();
  CHECK_MESSAGE(contains(err, "no handler"), err);
  CHECK_MESSAGE(contains(err, "'teleport'"), err);
  CHECK_MESSAGE(contains(err, "'inventory'"), err);
  CHECK(h.p->stats().refused == 1);
  CHECK(h.count("reserve") == 0);
}

TEST_CASE("a command whose payload is not JSON is refused") {
  Harness h;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  Message cmd = command("saga-1/reserve/a", "reserve");
  cmd.payload = "{not json";
  const Message r = h.roundtrip(cmd);
  CHECK(r.outcome == ReplyOutcome::kFailure);
  const std::string err = error_of(r).get<std::string>();
  CHECK_MESSAGE(contains(err, "not JSON"), err);
  CHECK(h.count("reserve") == 0);
  CHECK(h.p->stats().refused == 1);
}

TEST_CASE("a command whose payload nests 100,000 deep is refused like one that is not JSON") {
  Harness h;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  Message cmd = command("saga-1/reserve/a", "reserve");
  cmd.payload = std::string(100'000, '[') + std::string(100'000, ']');
  const Message r = h.roundtrip(cmd);
  CHECK(r.outcome == ReplyOutcome::kFailure);
  const std::string err = error_of(r).get<std::string>();
  CHECK_MESSAGE(contains(err, "not JSON"), err);
  CHECK(h.count("reserve") == 0);
  CHECK(h.p->stats().refused == 1);
}

TEST_CASE("a handler that throws gets a retry reply and nothing it did is applied") {
  Harness h;
  int n = 0;
  h.on("reserve", [&](CommandContext& ctx) -> HandlerResult {
    ctx.state.put("stock/a", "0");
    ctx.state.emit(event("Reserved"));
    if (++n == 1) throw std::runtime_error("boom");
    return HandlerResult::success();
  });
  REQUIRE(h.open().ok());

  const Message r = h.roundtrip(command("saga-1/reserve/a", "reserve", Json::object(), 1));
  CHECK(r.outcome == ReplyOutcome::kRetry);
  CHECK(r.id == "saga-1/reserve/a/retry1");
  const std::string err = error_of(r).get<std::string>();
  CHECK_MESSAGE(contains(err, "boom"), err);
  CHECK(h.state("stock/a") == std::nullopt);
  CHECK(h.p->stats().retried == 1);
  h.settle();
  CHECK(h.events.empty());

  // Not remembered: the retry runs the handler again.
  CHECK(h.roundtrip(command("saga-1/reserve/a", "reserve", Json::object(), 2)).outcome ==
        ReplyOutcome::kSuccess);
  CHECK(h.state("stock/a") == "0");
}

TEST_CASE("a handler that throws something other than std::exception gets a retry reply") {
  Harness h;
  h.on("reserve", [](CommandContext& ctx) -> HandlerResult {
    ctx.state.put("stock/a", "0");
    throw 42;  // NOLINT: what a careless handler (or a C library callback) may throw
  });
  h.on("ping", [](CommandContext&) { return HandlerResult::success(); });
  REQUIRE(h.open().ok());

  h.send(command("saga-1/reserve/a", "reserve"));
  bool escaped = false;
  try {
    h.run_until([&] { return !h.replies.empty(); });
  } catch (...) {
    escaped = true;
  }
  CHECK_MESSAGE(!escaped, "the exception escaped run_once()");
  REQUIRE(h.replies.size() == 1);
  CHECK(h.replies[0].outcome == ReplyOutcome::kRetry);
  CHECK(h.state("stock/a") == std::nullopt);
  // The engine is still usable.
  CHECK(h.roundtrip(command("saga-1/ping/a", "ping")).outcome == ReplyOutcome::kSuccess);
}

// nlohmann's dump() throws on strings that are not valid UTF-8; text from the
// wire (a command type) or from a handler (an error from a Latin-1 C library)
// may well be such a string.
TEST_CASE("text that is not valid UTF-8 still gets a reply and does not stop the engine") {
  Harness h;
  h.on("reserve",
       [](CommandContext&) { return HandlerResult::failure("Zahlung f\xfcr Kunde abgelehnt"); });
  h.on("hold", [](CommandContext& ctx) {
    ctx.state.put("stock/a", "0");
    return HandlerResult::success({{"note", "caf\xe9"}});
  });
  h.on("ping", [](CommandContext&) { return HandlerResult::success(); });
  REQUIRE(h.open().ok());

  Message cmd;
  ReplyOutcome expected = ReplyOutcome::kFailure;
  SUBCASE("a command type from the wire") { cmd = command("saga-1/x/a", "re\xffserve"); }
  SUBCASE("a handler's refusal") { cmd = command("saga-1/reserve/a", "reserve"); }
  SUBCASE("a handler's success reply") {
    cmd = command("saga-1/hold/a", "hold");
    expected = ReplyOutcome::kSuccess;  // or any outcome, as long as one is sent (see below)
  }
  h.send(cmd);
  bool escaped = false;
  std::string what;
  try {
    h.run_until([&] { return !h.replies.empty(); });
  } catch (const std::exception& e) {
    escaped = true;
    what = e.what();
  }
  CHECK_MESSAGE(!escaped, "an exception escaped run_once(): " << what);
  REQUIRE(h.replies.size() == 1);
  if (expected == ReplyOutcome::kFailure) {
    CHECK(h.replies[0].outcome == ReplyOutcome::kFailure);
  } else if (h.replies[0].outcome == ReplyOutcome::kSuccess) {
    // Sent with the bad bytes replaced, the state committed with it.
    CHECK(h.state("stock/a") == "0");
  } else {
    // Refused or retried like a throwing handler: then nothing is applied.
    CHECK(h.state("stock/a") == std::nullopt);
  }
  CHECK(h.roundtrip(command("saga-1/ping/a", "ping")).outcome == ReplyOutcome::kSuccess);
}

TEST_CASE("reads in a command's transaction see the writes of earlier commands of the same batch") {
  Harness h;
  std::vector<std::string> seen;
  h.on("increment", [&](CommandContext& ctx) {
    auto v = ctx.state.get("counter");
    if (!v.ok()) return HandlerResult::retry(v.status().to_string());
    const int n = *v ? std::stoi(**v) : 0;
    seen.push_back(*v ? **v : "absent");
    ctx.state.put("counter", std::to_string(n + 1));
    // Its own write is visible too.
    auto mine = ctx.state.get("counter");
    if (!mine.ok() || *mine != std::to_string(n + 1))
      return HandlerResult::failure("own write not visible");
    return HandlerResult::success({{"counter", n + 1}});
  });
  REQUIRE(h.open().ok());

  h.send(command("saga-1/increment/a", "increment"));
  h.send(command("saga-2/increment/a", "increment"));
  REQUIRE(h.p->run_once(Duration{1'000}) == 2);  // both in one batch
  CHECK(seen == std::vector<std::string>{"absent", "1"});
  CHECK(h.state("counter") == "2");
  REQUIRE(h.run_until([&] { return h.replies.size() == 2; }));
  CHECK(Json::parse(h.replies[1].payload) == Json{{"counter", 2}});

  SUBCASE("a refused command in between does not leak its writes to the next") {
    h.on("bad", [](CommandContext& ctx) {
      ctx.state.put("counter", "100");
      return HandlerResult::failure("no");
    });
    h.send(command("saga-3/increment/a", "increment"));
    h.send(command("saga-3/bad/a", "bad"));
    h.send(command("saga-4/increment/a", "increment"));
    REQUIRE(h.p->run_once(Duration{1'000}) == 3);
    CHECK(seen == std::vector<std::string>{"absent", "1", "2", "3"});
    CHECK(h.state("counter") == "4");
  }
  SUBCASE("a deletion is seen by a later command of the batch") {
    h.on("reset", [](CommandContext& ctx) {
      ctx.state.del("counter");
      return HandlerResult::success();
    });
    h.send(command("saga-3/reset/a", "reset"));
    h.send(command("saga-3/increment/a", "increment"));
    REQUIRE(h.p->run_once(Duration{1'000}) == 2);
    CHECK(seen.back() == "absent");
    CHECK(h.state("counter") == "1");
  }
}

TEST_CASE("events emitted by a successful handler go out through the outbox") {
  Harness h;
  h.on("reserve", [](CommandContext& ctx) {
    ctx.state.put("stock/a", "1");
    ctx.state.emit(event("StockReserved", R"({"sku":"a"})"));
    Message explicit_fields = event("HoldPlaced");
    explicit_fields.id = "custom-id";
    explicit_fields.kind = MessageKind::kCommand;  // forced to kEvent
    explicit_fields.saga_id = "other-saga";
    explicit_fields.traceparent = "00-explicit-01";
    ctx.state.emit(std::move(explicit_fields));
    return HandlerResult::success();
  });
  REQUIRE(h.open().ok());
  REQUIRE(h.roundtrip(command("saga-1/reserve/a", "reserve")).outcome == ReplyOutcome::kSuccess);
  REQUIRE(h.run_until([&] { return h.events.size() == 2; }));

  const Message& e0 = h.events[0];
  CHECK(e0.kind == MessageKind::kEvent);
  CHECK(e0.type == "StockReserved");
  CHECK(e0.destination == kEvents);
  CHECK(e0.saga_id == kSaga);
  CHECK(e0.traceparent == kTrace);
  CHECK_FALSE(e0.key.empty());
  CHECK_FALSE(e0.id.empty());
  CHECK(Json::parse(e0.payload) == Json{{"sku", "a"}});

  const Message& e1 = h.events[1];
  CHECK(e1.kind == MessageKind::kEvent);
  CHECK(e1.id == "custom-id");
  CHECK(e1.saga_id == "other-saga");  // the caller's fields are kept
  CHECK(e1.traceparent == "00-explicit-01");
  CHECK(e0.id != e1.id);

  h.settle();
  CHECK(h.events.size() == 2);
  CHECK(h.p->stats().outbox_depth == 0);  // every record confirmed
}

TEST_CASE("a local write commits when it returns OK and not when it fails") {
  Harness h;
  REQUIRE(h.open().ok());

  SUBCASE("OK: visible to get(), events sent") {
    Status s = h.p->write(kSaga, [](StateTxn& txn) {
      txn.put("price/a", "10");
      auto v = txn.get("price/a");
      if (!v.ok() || *v != "10") return Status::internal("own write not visible");
      Message e = event("PriceChanged");
      e.key = "a";
      txn.emit(std::move(e));
      return ok_status();
    });
    REQUIRE_MESSAGE(s.ok(), s.to_string());
    CHECK(h.state("price/a") == "10");
    REQUIRE(h.run_until([&] { return h.events.size() == 1; }));
    CHECK(h.events[0].kind == MessageKind::kEvent);
    CHECK(h.events[0].type == "PriceChanged");
    CHECK_FALSE(h.events[0].id.empty());
  }
  SUBCASE("an error: nothing committed, nothing sent, the error comes back") {
    Status s = h.p->write(kSaga, [](StateTxn& txn) {
      txn.put("price/a", "10");
      txn.emit(event("PriceChanged"));
      return Status::failed_precondition("price frozen");
    });
    CHECK(s.code() == StatusCode::kFailedPrecondition);
    CHECK(s.message() == "price frozen");
    CHECK(h.state("price/a") == std::nullopt);
    h.settle();
    CHECK(h.events.empty());
  }
  SUBCASE("a command handler sees what a local write committed") {
    REQUIRE(h.p->write(kSaga, [](StateTxn& txn) {
                 txn.put("stock/a", "5");
                 return ok_status();
               })
                .ok());
    std::optional<std::string> seen;
    h.on("check", [&](CommandContext& ctx) {
      auto v = ctx.state.get("stock/a");
      if (v.ok()) seen = *v;
      return HandlerResult::success();
    });
    REQUIRE(h.roundtrip(command("saga-1/check/a", "check")).outcome == ReplyOutcome::kSuccess);
    CHECK(seen == "5");
  }
}

TEST_CASE("shards: commands run in the shard of their key, reads and scans see every shard") {
  Harness h;
  REQUIRE(h.open().ok());
  REQUIRE(h.p->shards() == kDefaultShards);
  h.on("stock", [](CommandContext& ctx) {
    ctx.state.put("stock/" + ctx.command.key, ctx.payload.value("n", std::string()));
    return HandlerResult::success();
  });
  // Keys chosen to spread over several shards.
  std::vector<std::string> keys;
  std::set<uint32_t> shards;
  for (int i = 0; shards.size() < 4; ++i) {
    keys.push_back("place-" + std::to_string(i));
    shards.insert(shard_of(keys.back(), kDefaultShards));
  }
  for (const std::string& key : keys) {
    Message m = command("saga-1/stock/" + key, "stock", Json{{"n", key}});
    m.key = key;
    REQUIRE(h.roundtrip(m).outcome == ReplyOutcome::kSuccess);
  }
  std::vector<std::string> scanned;
  REQUIRE(h.p->scan("stock/",
                    [&](std::string_view k, std::string_view v) {
                      CHECK(k.substr(6) == v);
                      scanned.emplace_back(k);
                      return true;
                    })
              .ok());
  std::vector<std::string> expected;
  for (const std::string& key : keys) expected.push_back("stock/" + key);
  std::sort(expected.begin(), expected.end());
  CHECK(scanned == expected);  // merged in key order across the shards
  for (const std::string& key : keys) CHECK(h.state("stock/" + key) == key);

  SUBCASE("a local write lands in the shard its key names: a command of that key sees it") {
    REQUIRE(h.p->write(keys[1], [](StateTxn& txn) {
                 txn.put("note", "from the write");
                 return ok_status();
               })
                .ok());
    std::map<std::string, std::optional<std::string>> seen;
    h.on("read", [&](CommandContext& ctx) {
      auto v = ctx.state.get("note");
      if (v.ok()) seen[ctx.command.key] = *v;
      return HandlerResult::success();
    });
    for (const std::string& key : {keys[0], keys[1]}) {
      Message m = command("saga-1/read/" + key, "read");
      m.key = key;
      REQUIRE(h.roundtrip(m).outcome == ReplyOutcome::kSuccess);
    }
    if (shard_of(keys[0], kDefaultShards) != shard_of(keys[1], kDefaultShards))
      CHECK(seen[keys[0]] == std::nullopt);  // another shard's state is not visible
    CHECK(seen[keys[1]] == "from the write");
  }
  SUBCASE("write() without a key needs a store of one shard") {
    Status s = h.p->write([](StateTxn&) { return ok_status(); });
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(contains(s.message(), "12 shards"), s.message());
  }
  SUBCASE("the count is kept on reopen; another one is refused") {
    h.close();
    Status other = h.open(4);
    CHECK(other.code() == StatusCode::kFailedPrecondition);
    REQUIRE(h.open(kDefaultShards).ok());
    for (const std::string& key : keys) CHECK(h.state("stock/" + key) == key);
    h.close();
    REQUIRE(h.open().ok());
    CHECK(h.p->shards() == kDefaultShards);
  }
}

TEST_CASE("a participant of one shard takes write() without a key") {
  Harness h;
  REQUIRE(h.open(1).ok());
  REQUIRE(h.p->shards() == 1);
  REQUIRE(h.p->write([](StateTxn& txn) {
               txn.put("k", "v");
               return ok_status();
             })
              .ok());
  CHECK(h.state("k") == "v");
}

TEST_CASE("with the changelog, a lost store is restored: state, and duplicates still answered") {
  Harness h;
  h.changelog = true;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  Message a = command("saga-1/reserve/a", "reserve", {{"sku", "a"}, {"qty", 2}});
  Message b = command("saga-2/reserve/a", "reserve", {{"sku", "b"}, {"qty", 3}});
  b.key = b.saga_id = "saga-2";
  REQUIRE(h.roundtrip(a).outcome == ReplyOutcome::kSuccess);
  REQUIRE(h.roundtrip(b).outcome == ReplyOutcome::kSuccess);
  REQUIRE(h.p->write("saga-3", [](StateTxn& txn) {
               txn.put("price/c", "7");
               return ok_status();
             })
              .ok());
  uint64_t records = 0;
  for (uint32_t k = 0; k < kDefaultShards; ++k) records += h.bus->log_end("inventory.changelog", k);
  CHECK(records > 0);

  h.close();
  std::filesystem::remove_all(h.dir());  // the disk is gone
  REQUIRE(h.open().ok());
  CHECK(h.state("stock/a") == "2");
  CHECK(h.state("stock/b") == "3");
  CHECK(h.state("price/c") == "7");
  // The inbox came back too: the same command is a duplicate, not a second hold.
  const Message again = h.roundtrip(a);
  CHECK(again.outcome == ReplyOutcome::kSuccess);
  CHECK(Json::parse(again.payload) == Json{{"hold", "h-a"}});
  CHECK(h.count("reserve") == 2);
  CHECK(h.p->stats().duplicates == 1);
}

TEST_CASE("with the changelog, a checkpoint older than the tombstone horizon restores from 0") {
  for (const bool old : {false, true}) {
    CAPTURE(old);
    Harness h;
    h.changelog = true;
    REQUIRE(h.open().ok());
    REQUIRE(h.p->write("k", [](StateTxn& txn) {
                 txn.put("kept", "1");
                 return ok_status();
               })
                .ok());
    h.close();
    {
      // Behind the changelog's back: a key it holds no record of, as when
      // compaction removed the tombstone that deleted it; and, when `old`,
      // a checkpoint written 7 days ago.
      auto store = internal::Store::open(h.dir().string(), {"state", "inbox", "outbox"}, false,
                                         {.wanted = kDefaultShards, .for_new_store = kDefaultShards});
      REQUIRE_MESSAGE(store.ok(), store.status().to_string());
      const internal::Keyspace ks(**store, shard_of("k", kDefaultShards));
      auto checkpoint = ks.get((*store)->meta(), internal::kCheckpointKey);
      REQUIRE(checkpoint.ok());
      REQUIRE(*checkpoint);
      REQUIRE((*checkpoint)->size() == 16);
      internal::Batch b;
      ks.put(b, (*store)->cf(0), "ghost", "stale");
      if (old) {
        std::string v = (*checkpoint)->substr(0, 8);
        const auto week_ago = std::chrono::system_clock::now() - std::chrono::hours(24 * 7);
        internal::append_be64(v, static_cast<uint64_t>(
                                     std::chrono::duration_cast<std::chrono::milliseconds>(
                                         week_ago.time_since_epoch())
                                         .count()));
        ks.put(b, (*store)->meta(), internal::kCheckpointKey, v);
      }
      REQUIRE((*store)->write(b).ok());
    }
    REQUIRE(h.open().ok());
    CHECK(h.state("kept") == "1");
    // A fresh checkpoint is trusted (the replay starts there); an old one is
    // not: the shard is emptied and rebuilt from the whole changelog.
    CHECK(h.state("ghost") == (old ? std::nullopt : std::optional<std::string>("stale")));
  }
}

TEST_CASE("with the changelog, a failed commit puts the commands back; they apply once later") {
  Harness h;
  h.changelog = true;
  bool first = true;
  h.on("reserve", [&](CommandContext& ctx) {
    if (first) h.bus->set_available(false);  // the fabric goes away while the command runs
    first = false;
    return reserve(ctx);
  });
  REQUIRE(h.open().ok());
  h.send(command("saga-1/reserve/a", "reserve", {{"sku", "a"}, {"qty", 2}}));

  h.p->run_once();  // handled, but the commit fails: nothing written, sent or acked
  CHECK(h.count("reserve") == 1);
  CHECK(h.state("stock/a") == std::nullopt);
  CHECK(h.p->stats().applied == 0);
  Status w = h.p->write(kSaga, [](StateTxn& txn) {
    txn.put("x", "1");
    return ok_status();
  });
  CHECK(w.code() == StatusCode::kUnavailable);
  CHECK(h.state("x") == std::nullopt);
  h.p->run_once();  // resting: the command waits
  CHECK(h.count("reserve") == 1);

  h.bus->set_available(true);
  h.clock->advance(Duration{150});
  REQUIRE(h.run_until([&] { return !h.replies.empty(); }));
  CHECK(h.replies.back().outcome == ReplyOutcome::kSuccess);
  CHECK(h.count("reserve") == 2);  // run again: the first run left nothing behind
  CHECK(h.state("stock/a") == "2");
  CHECK(h.p->stats().applied == 1);
  CHECK(h.p->stats().duplicates == 0);
  CHECK(h.p->health().ok());
}

TEST_CASE("with the changelog, a fenced participant handles nothing more for the shard it lost") {
  Harness h;
  h.changelog = true;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());

  // A fresh owner on another disk claims every shard (and restores them).
  TempDir other;
  ParticipantOptions o;
  o.name = kParticipant;
  o.data_dir = other.path().string();
  o.sync = false;
  o.clock = h.clock;
  o.changelog = true;
  auto fresh = Participant::open(o, std::shared_ptr<Transport>(h.bus->connect("fresh")));
  REQUIRE_MESSAGE(fresh.ok(), fresh.status().to_string());
  int fresh_calls = 0;
  REQUIRE((*fresh)
              ->on("reserve",
                   [&](CommandContext& ctx) {
                     ++fresh_calls;
                     return reserve(ctx);
                   })
              .ok());

  // The old owner runs the handler, but its commit is fenced: no reply, no state, no ack.
  h.send(command("saga-1/reserve/a", "reserve", {{"sku", "a"}}));
  h.settle();
  CHECK(h.count("reserve") == 1);
  CHECK(h.replies.empty());
  CHECK(h.state("stock/a") == std::nullopt);
  Status w = h.p->write(kSaga, [](StateTxn& txn) {
    txn.put("x", "1");
    return ok_status();
  });
  CHECK(w.code() == StatusCode::kAborted);

  // Closed, it gives the unacked command back; the new owner applies it once.
  h.close();
  REQUIRE(h.run_until(
      [&] {
        (*fresh)->run_once(Duration{0});
        return !h.replies.empty();
      },
      false));
  CHECK(h.replies.back().outcome == ReplyOutcome::kSuccess);
  CHECK(fresh_calls == 1);
  CHECK((*fresh)->get("stock/a")->value_or("") == "1");
}

TEST_CASE("events of local writes get distinct ids across a restart") {
  // The ManualClock does not move across the restart, as a wall clock stepped
  // back by NTP (or a fast restart within one millisecond) would not.
  Harness h;
  REQUIRE(h.open().ok());
  auto emit_one = [&] {
    REQUIRE(h.p->write(kSaga, [](StateTxn& txn) {
                 txn.emit(event("PriceChanged"));
                 return ok_status();
               })
                .ok());
  };
  emit_one();
  REQUIRE(h.run_until([&] { return h.events.size() == 1; }));
  h.reopen();
  emit_one();
  REQUIRE(h.run_until([&] { return h.events.size() == 2; }));
  CHECK_MESSAGE(h.events[0].id != h.events[1].id, "both events have id " << h.events[0].id);
}

TEST_CASE("on() refuses a repeated command type and an empty handler") {
  Harness h;
  REQUIRE(h.open().ok());
  auto ok_handler = [](CommandContext&) { return HandlerResult::success(); };
  REQUIRE(h.p->on("reserve", ok_handler).ok());

  Status repeated = h.p->on("reserve", ok_handler);
  CHECK(repeated.code() == StatusCode::kInvalidArgument);
  CHECK_MESSAGE(contains(repeated.message(), "'reserve'"), repeated.message());

  CHECK(h.p->on("release", CommandHandler()).code() == StatusCode::kInvalidArgument);
  CHECK(h.p->on("", ok_handler).code() == StatusCode::kInvalidArgument);
  // The refused registrations left nothing behind: "release" has no handler.
  CHECK(h.roundtrip(command("saga-1/release/c", "release")).outcome == ReplyOutcome::kFailure);
}

TEST_CASE("open() refuses options without name, data folder or transport") {
  TempDir dir;
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  ParticipantOptions o;
  o.name = kParticipant;
  o.data_dir = dir.path().string();
  o.sync = false;

  SUBCASE("no name") {
    o.name.clear();
    auto p = Participant::open(o, std::shared_ptr<Transport>(bus->connect("x")));
    CHECK(p.status().code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(contains(p.status().message(), "name"), p.status().message());
  }
  SUBCASE("no data folder") {
    o.data_dir.clear();
    auto p = Participant::open(o, std::shared_ptr<Transport>(bus->connect("x")));
    CHECK(p.status().code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(contains(p.status().message(), "data_dir"), p.status().message());
  }
  SUBCASE("no transport") {
    auto p = Participant::open(o, nullptr);
    CHECK(p.status().code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(contains(p.status().message(), "transport"), p.status().message());
  }
  SUBCASE("everything given (and no clock: the system clock is used)") {
    auto p = Participant::open(o, std::shared_ptr<Transport>(bus->connect("x")));
    CHECK_MESSAGE(p.ok(), p.status().to_string());
  }
}

TEST_CASE("the outbox keeps a reply the bus could not take and sends it after a restart") {
  Harness h;
  h.on("reserve", [&](CommandContext& ctx) {
    ctx.state.put("stock/a", "1");
    ctx.state.emit(event("StockReserved"));
    // The fabric goes away after the command arrived and before the reply is sent.
    h.bus->set_available(false);
    return HandlerResult::success({{"hold", "h-a"}});
  });
  REQUIRE(h.open().ok());
  h.send(command("saga-1/reserve/a", "reserve"));
  REQUIRE(h.run_until([&] { return h.count("reserve") == 1; }));
  h.settle();  // the failed send reports back
  CHECK(h.replies.empty());
  CHECK(h.p->health().code() == StatusCode::kUnavailable);
  CHECK(h.state("stock/a") == "1");
  CHECK(h.p->stats().outbox_depth == 2);  // reply + event, unconfirmed

  h.close();
  h.bus->set_available(true);
  h.settle();
  CHECK(h.replies.empty());  // nobody re-sent it yet

  REQUIRE(h.open().ok());
  REQUIRE(h.run_until([&] { return h.replies.size() == 1 && h.events.size() == 1; }));
  const Message& r = h.replies[0];
  CHECK(r.id == "saga-1/reserve/a/r");
  CHECK(r.outcome == ReplyOutcome::kSuccess);
  CHECK(Json::parse(r.payload) == Json{{"hold", "h-a"}});
  CHECK(h.p->health().ok());
  h.settle();
  CHECK(h.replies.size() == 1);    // the command was acked: not redelivered
  CHECK(h.count("reserve") == 1);  // and not re-run
  CHECK(h.p->stats().outbox_depth == 0);

  // Once confirmed, the records are gone: another restart sends nothing again.
  h.reopen();
  h.settle();
  CHECK(h.replies.size() == 1);
  CHECK(h.events.size() == 1);
}

TEST_CASE("the outbox re-sends a failed reply while running once the bus is back") {
  Harness h;
  h.on("reserve", [&](CommandContext&) {
    h.bus->set_available(false);
    return HandlerResult::success();
  });
  REQUIRE(h.open().ok());
  h.send(command("saga-1/reserve/a", "reserve"));
  REQUIRE(h.run_until([&] { return h.count("reserve") == 1; }));
  h.settle();
  CHECK(h.replies.empty());

  h.bus->set_available(true);
  h.clock->advance(Duration{100});  // past the outbox's retry pause
  REQUIRE(h.run_until([&] { return h.replies.size() == 1; }));
  CHECK(h.replies[0].id == "saga-1/reserve/a/r");
  CHECK(h.count("reserve") == 1);
}

TEST_CASE(
    "a command sent while the participant is down is handled when it is back, and its re-send "
    "comes from the inbox") {
  Harness h;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  h.close();  // no engine: the command waits on the bus
  h.send(command("saga-1/reserve/a", "reserve", {{"sku", "a"}}));
  REQUIRE(h.open().ok());
  const Message r = h.roundtrip(command("saga-1/reserve/a", "reserve", {{"sku", "a"}}, 2));
  CHECK(r.outcome == ReplyOutcome::kSuccess);
  h.settle();
  CHECK(h.count("reserve") == 1);
  CHECK(h.replies.size() == 2);  // both copies answered, the second from the inbox
  CHECK(h.p->stats().duplicates == 1);
}

TEST_CASE("a command without reply_to is applied but answered nowhere") {
  Harness h;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  Message cmd = command("saga-1/reserve/a", "reserve", {{"sku", "a"}});
  cmd.reply_to.clear();
  h.send(cmd);
  REQUIRE(h.run_until([&] { return h.count("reserve") == 1; }));
  h.settle();
  CHECK(h.replies.empty());
  CHECK(h.state("stock/a") == "1");
}

TEST_CASE("messages that are not commands are ignored") {
  Harness h;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  Message not_command = command("saga-1/reserve/a", "reserve", {{"sku", "a"}});
  not_command.kind = MessageKind::kEvent;
  h.send(not_command);
  Message no_id = command("", "reserve", {{"sku", "a"}});
  h.send(no_id);
  h.settle();
  CHECK(h.count("reserve") == 0);
  CHECK(h.replies.empty());
  // The real command with that id is still handled normally afterwards.
  CHECK(h.roundtrip(command("saga-1/reserve/a", "reserve", {{"sku", "a"}})).outcome ==
        ReplyOutcome::kSuccess);
  CHECK(h.count("reserve") == 1);
}

// Waits in poll() for an hour whenever the caller may wait at all, unless a
// record, a confirmation or wake() ends the wait: an engine that counts on a
// short wait to get something done hangs on it.
class LongPoll final : public Transport {
 public:
  explicit LongPoll(std::shared_ptr<Transport> inner) : inner_(std::move(inner)) {}
  Status subscribe(std::string_view destination, Handler handler) override {
    return inner_->subscribe(destination, std::move(handler));
  }
  void send(Message message, SendCallback on_sent) override {
    inner_->send(std::move(message), std::move(on_sent));
  }
  size_t poll(std::chrono::milliseconds max_wait) override {
    return inner_->poll(max_wait.count() == 0 ? max_wait : std::chrono::hours(1));
  }
  void wake() override { inner_->wake(); }
  Status health() const override { return inner_->health(); }

 private:
  std::shared_ptr<Transport> inner_;
};

TEST_CASE("write() from another thread wakes the background loop's idle wait and goes first") {
  Harness h;
  h.wrap_endpoint = [](std::shared_ptr<Transport> inner) {
    return std::make_shared<LongPoll>(std::move(inner));
  };
  REQUIRE(h.open().ok());
  h.p->start_background();
  // The loop holds the driver's lock while it waits in poll(); each write
  // but perhaps the first finds it there.
  steady_clock::duration slowest{0};
  for (int i = 0; i < 20; ++i) {
    const auto started = steady_clock::now();
    auto written = std::async(std::launch::async, [&h, i] {
      return h.p->write(kSaga, [i](StateTxn& txn) {
        txn.put("note", std::to_string(i));
        return ok_status();
      });
    });
    REQUIRE(written.wait_for(kPatience) == std::future_status::ready);
    REQUIRE(written.get().ok());
    slowest = std::max(slowest, steady_clock::now() - started);
  }
  MESSAGE("slowest of 20 writes: ",
          std::chrono::duration_cast<std::chrono::microseconds>(slowest).count(), " us");
  CHECK(h.state("note") == "19");
  h.p->stop();  // returns only because it wakes the hour-long wait
}

TEST_CASE("the background engine handles commands until stopped") {
  Harness h;
  h.on("reserve", reserve);
  REQUIRE(h.open().ok());
  h.p->start_background();
  h.p->start_background();  // a second start is harmless

  auto wait_reply = [&](size_t n) {
    return h.run_until([&] { return h.replies.size() >= n; }, false);
  };
  h.send(command("saga-1/reserve/a", "reserve", {{"sku", "a"}}));
  REQUIRE(wait_reply(1));
  CHECK(h.replies[0].outcome == ReplyOutcome::kSuccess);
  h.send(command("saga-2/reserve/a", "reserve", {{"sku", "b"}}));
  REQUIRE(wait_reply(2));

  h.p->stop();
  h.p->stop();  // idempotent
  CHECK(h.p->stats().applied == 2);
  CHECK(h.state("stock/b") == "1");
}

TEST_CASE("four shards on two engine threads: every command applied once, in its key's order") {
  Harness h;
  h.threads = 2;
  REQUIRE(h.open(4).ok());
  std::mutex mu;
  std::set<std::thread::id> handled_on;
  std::map<std::string, std::vector<int>> order;  // key -> sequence numbers as handled
  h.on("add", [&](CommandContext& ctx) {
    {
      std::lock_guard lock(mu);
      handled_on.insert(std::this_thread::get_id());
      order[ctx.command.key].push_back(ctx.payload.at("seq").get<int>());
    }
    const std::string key = "count/" + ctx.command.key;
    auto v = ctx.state.get(key);
    if (!v.ok()) return HandlerResult::retry(v.status().to_string());
    const int n = *v ? std::stoi(**v) : 0;
    ctx.state.put(key, std::to_string(n + 1));
    return HandlerResult::success();
  });
  std::vector<std::string> keys;
  std::set<uint32_t> shards;
  for (int i = 0; i < 8; ++i) {
    keys.push_back("place-" + std::to_string(i));
    shards.insert(shard_of(keys.back(), 4));
  }
  REQUIRE(shards.size() >= 3);
  auto add = [&](int seq, const std::string& key) {
    Message m = command("saga-" + std::to_string(seq) + "/add", "add", Json{{"seq", seq}});
    m.key = key;
    m.saga_id = "saga-" + std::to_string(seq);
    return m;
  };
  constexpr int kCommands = 400;

  SUBCASE("in the background, with local writes meanwhile") {
    h.p->start_background();
    for (int i = 0; i < kCommands; ++i) {
      h.send(add(i, keys[i % keys.size()]));
      if (i % 50 == 0) {  // a local transaction in a shard its thread is driving
        REQUIRE(h.p->write(keys[0], [i](StateTxn& txn) {
                     txn.put("note/" + std::to_string(i), "w");
                     return ok_status();
                   })
                    .ok());
      }
    }
    for (int i = 0; i < 40; ++i) h.send(add(i, keys[i % keys.size()]));  // redelivered
    REQUIRE(h.run_until([&] { return h.replies.size() >= kCommands + 40; }, false));
    h.p->stop();
    CHECK(handled_on.size() == 2);  // both engine threads handled commands
    for (int i = 0; i < kCommands; i += 50) CHECK(h.state("note/" + std::to_string(i)) == "w");
  }
  SUBCASE("run_once drives both threads' shards on the calling thread") {
    for (int i = 0; i < kCommands; ++i) h.send(add(i, keys[i % keys.size()]));
    for (int i = 0; i < 40; ++i) h.send(add(i, keys[i % keys.size()]));
    REQUIRE(h.run_until([&] { return h.replies.size() >= kCommands + 40; }));
    CHECK(handled_on.size() == 1);
  }
  const ParticipantStats st = h.p->stats();
  CHECK(st.applied == kCommands);
  CHECK(st.duplicates == 40);
  CHECK(h.count("add") == kCommands);
  for (const Message& r : h.replies) CHECK(r.outcome == ReplyOutcome::kSuccess);
  for (size_t k = 0; k < keys.size(); ++k) {
    CHECK(h.state("count/" + keys[k]) == std::to_string(kCommands / keys.size()));
    const std::vector<int>& seen = order[keys[k]];
    CHECK(std::is_sorted(seen.begin(), seen.end()));  // one key: in arrival order
  }
}


// Replicas of one participant over one MemoryBus, each with its own store
// and all with the changelog, while the test's orchestrator endpoint sends
// commands (and copies of earlier ones) and the group moves the shards.
// `standby`: each replica also keeps a standby copy of the other's shards.
void replicas_move_shards(bool standby) {
  auto clock = std::make_shared<ManualClock>();
  auto bus = MemoryBus::create(clock, 7);
  TempDir dirs;
  std::vector<Message> replies;
  auto orch = bus->connect("orch");
  REQUIRE(orch->subscribe(kReplyTo, [&](Message m, Transport::Ack ack) {
                replies.push_back(std::move(m));
                ack();
              }).ok());
  std::mutex mu;
  std::map<std::string, int> calls;  // command id -> handler calls, on any replica
  auto add = [&](CommandContext& ctx) {
    {
      std::lock_guard lock(mu);
      ++calls[ctx.command.id];
    }
    const std::string key = "count/" + ctx.command.key;
    auto v = ctx.state.get(key);
    if (!v.ok()) return HandlerResult::retry(v.status().to_string());
    ctx.state.put(key, std::to_string((*v ? std::stoi(**v) : 0) + 1));
    return HandlerResult::success();
  };
  auto open_replica = [&](int i) {
    ParticipantOptions o;
    o.name = kParticipant;
    o.data_dir = (dirs.path() / ("replica-" + std::to_string(i))).string();
    o.sync = false;
    o.clock = clock;
    o.shards = 4;
    o.changelog = true;
    o.replicas = true;
    o.advertised_address = "replica-" + std::to_string(i);
    o.standby = standby;
    auto p = Participant::open(
        o, std::shared_ptr<Transport>(bus->connect("inventory-" + std::to_string(i))));
    REQUIRE_MESSAGE(p.ok(), p.status().to_string());
    REQUIRE((*p)->on("add", add).ok());
    return std::move(*p);
  };
  std::map<int, std::unique_ptr<Participant>> replicas;
  auto owned = [&](int i) { return replicas.at(i)->stats().shards_owned; };
  auto drive = [&](const std::function<bool()>& done) {
    const auto deadline = steady_clock::now() + kPatience;
    while (!done() && steady_clock::now() < deadline) {
      for (auto& [i, p] : replicas) p->run_once(Duration{0});
      orch->poll(Duration{0});
    }
    return done();
  };
  constexpr int kKeys = 6;
  auto send = [&](int from, int to) {
    for (int n = from; n < to; ++n) {
      Message m = command("saga-" + std::to_string(n) + "/add", "add");
      m.key = "place-" + std::to_string(n % kKeys);
      m.saga_id = "saga-" + std::to_string(n);
      orch->send(std::move(m), nullptr);
    }
  };
  size_t expected_replies = 0;
  auto send_and_wait = [&](int from, int to) {
    send(from, to);
    expected_replies += static_cast<size_t>(to - from);
    REQUIRE_MESSAGE(drive([&] { return replies.size() >= expected_replies; }),
                    replies.size() << " of " << expected_replies << " replies");
  };

  replicas[1] = open_replica(1);
  REQUIRE(drive([&] { return owned(1) == 4; }));
  send_and_wait(0, 120);

  // A second replica joins: half the shards move to it, restored from their changelogs.
  replicas[2] = open_replica(2);
  REQUIRE(drive([&] { return owned(1) == 2 && owned(2) == 2; }));
  // Each replica tells where a key's shard is driven (the owners table):
  // one says here, the other names it; a write sent there is taken, one
  // sent to the other replica is refused.
  auto replica_at = [&](const std::string& address) {
    return replicas.at(std::stoi(address.substr(address.find('-') + 1))).get();
  };
  auto agreed = [&] {
    for (int k = 0; k < kKeys; ++k) {
      const std::string key = "place-" + std::to_string(k);
      const ShardOwner a = replicas.at(1)->owner_of(key), b = replicas.at(2)->owner_of(key);
      const bool a_here = a.where == ShardOwner::Where::kHere;
      const ShardOwner& other = a_here ? b : a;
      if ((b.where == ShardOwner::Where::kHere) == a_here) return false;
      if (other.where != ShardOwner::Where::kElsewhere) return false;
      if (other.address != (a_here ? "replica-1" : "replica-2")) return false;
    }
    return true;
  };
  REQUIRE(drive(agreed));
  for (int k = 0; k < kKeys; ++k) {
    const std::string key = "place-" + std::to_string(k);
    const ShardOwner w = replicas.at(1)->owner_of(key);
    Participant* owner = w.where == ShardOwner::Where::kHere ? replicas.at(1).get()
                                                              : replica_at(w.address);
    Participant* other = owner == replicas.at(1).get() ? replicas.at(2).get() : replicas.at(1).get();
    auto note = [&](StateTxn& txn) {
      txn.put("note/" + key, "routed");
      return ok_status();
    };
    CHECK(other->write(key, note).code() == StatusCode::kUnavailable);
    const Status wrote = owner->write(key, note);
    CHECK_MESSAGE(wrote.ok(), key << ": " << wrote.to_string());
  }
  send_and_wait(0, 60);     // copies of earlier commands: answered from the inboxes
  send_and_wait(120, 240);

  if (standby) {  // the second copies the first's shards, inboxes included
    const auto deadline = steady_clock::now() + kPatience;
    while (replicas.at(2)->stats().standby_records == 0 && steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    REQUIRE(replicas.at(2)->stats().standby_records > 0);
  }
  // The first one goes away: the second takes every shard.
  replicas.erase(1);
  REQUIRE(drive([&] { return owned(2) == 4; }));
  send_and_wait(60, 180);   // copies again
  send_and_wait(240, 300);

  // The second one is presumed dead (its session expired) and comes back.
  bus->expire("inventory-2");
  REQUIRE(drive([&] { return owned(2) == 4; }));
  send_and_wait(300, 360);

  CHECK(calls.size() == 360);
  for (const auto& [id, n] : calls) CHECK_MESSAGE(n == 1, id << " handled " << n << " times");
  CHECK(replies.size() == expected_replies);
  for (const Message& r : replies) CHECK(r.outcome == ReplyOutcome::kSuccess);
  for (int k = 0; k < kKeys; ++k) {
    auto v = replicas.at(2)->get("count/place-" + std::to_string(k));
    REQUIRE(v.ok());
    CHECK(*v == std::to_string(360 / kKeys));
  }
  CHECK(bus->stats().rebalances >= 10);
  if (!standby) CHECK(replicas.at(2)->stats().standby_records == 0);
}

TEST_CASE("replicas: the group decides which replica handles a shard; moves lose and double nothing") {
  replicas_move_shards(/*standby=*/false);
}

TEST_CASE("replicas with standby copies: moves lose and double nothing") {
  replicas_move_shards(/*standby=*/true);
}

TEST_CASE("replicas need the changelog") {
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  TempDir dir;
  ParticipantOptions o;
  o.name = kParticipant;
  o.data_dir = dir.path().string();
  o.replicas = true;
  auto p = Participant::open(o, std::shared_ptr<Transport>(bus->connect("p")));
  CHECK(p.status().code() == StatusCode::kInvalidArgument);
  o.changelog = true;  // and a standby copy needs replicas
  o.replicas = false;
  o.standby = true;
  p = Participant::open(o, std::shared_ptr<Transport>(bus->connect("q")));
  CHECK(p.status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace saga
