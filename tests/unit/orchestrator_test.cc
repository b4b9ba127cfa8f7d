// The orchestrator driven by hand: a ManualClock, a seeded random source, a
// MemoryBus and scripted participants, with run_once() and the participants'
// poll() alternated until nothing moves. Timers fire by advancing the clock;
// nothing sleeps. Tests headed "Regression" guard bugs found and fixed.
#include "saga/orchestrator.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "saga/json.h"
#include "saga/memory_transport.h"
#include "saga/shard.h"
#include "support/doctest_vectors.h"
#include "support/eventually.h"
#include "support/scripted_participant.h"
#include "support/temp_dir.h"

namespace saga {
namespace {

using testing::ask_retry;
using testing::fail;
using testing::first;
using testing::ReceivedCommand;
using testing::ScriptedParticipant;
using testing::succeed;
using testing::swallow;

constexpr Duration kTimeout{1000};
// No jitter, so backoffs are exact: 100 ms, 200 ms, 400 ms, ...
constexpr RetryPolicy kQuickRetry{3, Duration{100}, 2.0, Duration{10'000}, 0.0};

using testing::TempDir;

void merge_reply(Json& data, const Json& reply) {
  if (reply.is_object()) data.update(reply);
}

// Knobs of the booking saga: reserve (inventory) -> pay (payment) -> confirm (inventory).
struct BookingSpec {
  uint32_t version = 1;
  RetryPolicy retry = kQuickRetry;
  RetryPolicy compensation_retry = kQuickRetry;
  std::optional<size_t> pivot;  // 1 (pay, then without its refund) or 2 (confirm)
  bool with_confirm = true;
};

DefinitionPtr booking(const BookingSpec& spec = {}) {
  DefinitionBuilder b("booking", spec.version);
  b.command("reserve", "inventory", "reserve")
      .compensate("inventory", "release")
      .on_reply(merge_reply)
      .timeout(kTimeout)
      .retry(spec.retry)
      .compensation_retry(spec.compensation_retry);
  b.command("pay", "payment", "charge");
  if (spec.pivot != size_t{1}) b.compensate("payment", "refund");  // a pivot is never undone
  b.on_reply(merge_reply).timeout(kTimeout).retry(spec.retry).compensation_retry(
      spec.compensation_retry);
  if (spec.pivot == size_t{1}) b.pivot();
  if (spec.with_confirm) {
    b.command("confirm", "inventory", "confirm").timeout(kTimeout).retry(spec.retry);
    if (spec.pivot == size_t{2}) b.pivot();
  }
  auto def = b.build();
  REQUIRE(def.ok());
  return *def;
}

// A one-step saga of another type, for list() filters.
DefinitionPtr transfer() {
  auto def = DefinitionBuilder("transfer", 1)
                 .command("debit", "payment", "debit")
                 .timeout(kTimeout)
                 .retry(kQuickRetry)
                 .build();
  REQUIRE(def.ok());
  return *def;
}

// One orchestrator over a temp folder, a bus, and the inventory and payment
// participants. Tests tweak `options` before open().
class Harness {
 public:
  Harness() {
    options.data_dir = dir_.path().string();
    options.clock = clock;
    options.random = std::make_shared<SeededRandom>(7);
    options.sync = false;
    options.breaker.enabled = false;  // breaker tests turn it on
  }
  ~Harness() { close(); }

  // Opens the orchestrator on the folder with a fresh bus endpoint.
  Status try_open(std::vector<DefinitionPtr> definitions) {
    std::shared_ptr<Transport> endpoint = bus->connect("orchestrator");
    if (wrap_endpoint) endpoint = wrap_endpoint(std::move(endpoint));
    auto opened = Orchestrator::open(options, std::move(endpoint), std::move(definitions));
    if (!opened.ok()) return opened.status();
    orch = std::move(*opened);
    return ok_status();
  }
  void open(std::vector<DefinitionPtr> definitions = {booking()}) {
    Status s = try_open(std::move(definitions));
    REQUIRE_MESSAGE(s.ok(), s.to_string());
  }
  // Destroys the orchestrator and its endpoint: the bus requeues what it did not ack.
  void close() { orch.reset(); }

  // Alternates the engine and the participants until a round moves nothing.
  void drive() {
    for (int round = 0; round < 10'000; ++round) {
      size_t moved = orch->run_once();
      moved += inventory.poll();
      moved += payment.poll();
      if (moved == 0) return;
    }
    FAIL("the orchestrator and participants never settled");
  }
  // Moves the clock by `d`, then drives.
  void advance(Duration d) {
    clock->advance(d);
    drive();
  }
  // Advances `step` at a time until `done()` or `limit` has passed; returns done().
  bool advance_until(const std::function<bool()>& done, Duration step = Duration{100},
                     Duration limit = Duration{60'000}) {
    drive();
    for (Duration spent{0}; !done() && spent < limit; spent += step) advance(step);
    return done();
  }

  std::string start(Json data = Json{{"qty", 1}}, StartOptions so = {}) {
    auto id = orch->start("booking", std::move(data), std::move(so));
    REQUIRE_MESSAGE(id.ok(), id.status().to_string());
    return *id;
  }
  SagaView view(const std::string& id) {
    auto v = orch->get(id);
    REQUIRE_MESSAGE(v.ok(), v.status().to_string());
    return *v;
  }
  SagaState state(const std::string& id) { return view(id).state; }
  std::function<bool()> reaches(const std::string& id, SagaState s) {
    return [this, id, s] { return state(id) == s; };
  }
  /// The store's folder.
  const std::filesystem::path& dir() const { return dir_.path(); }

 private:
  TempDir dir_;  // first member: removed after everything else is gone

 public:
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<MemoryBus> bus = MemoryBus::create(clock, 1);
  std::vector<std::string> journal;  // "<participant>:<command>" in order received
  ScriptedParticipant inventory{"inventory", bus, &journal};
  ScriptedParticipant payment{"payment", bus, &journal};
  Options options;
  /// When set, wraps the orchestrator's bus endpoint (fault injection).
  std::function<std::shared_ptr<Transport>(std::shared_ptr<Transport>)> wrap_endpoint;
  std::unique_ptr<Orchestrator> orch;
};

using Journal = std::vector<std::string>;

std::vector<uint32_t> attempts_of(const std::vector<ReceivedCommand>& cmds) {
  std::vector<uint32_t> out;
  for (const ReceivedCommand& c : cmds) out.push_back(c.attempt);
  return out;
}

std::vector<std::string> ids_of(const SagaPage& page) {
  std::vector<std::string> out;
  for (const SagaView& v : page.items) out.push_back(v.id);
  return out;
}

// Everything list() returns for `q`, following page tokens.
std::vector<std::string> list_all(Orchestrator& o, ListQuery q) {
  std::vector<std::string> out;
  for (int page = 0; page < 100; ++page) {
    auto p = o.list(q);
    REQUIRE_MESSAGE(p.ok(), p.status().to_string());
    for (const SagaView& v : p->items) out.push_back(v.id);
    if (p->next_page_token.empty()) return out;
    q.page_token = p->next_page_token;
  }
  FAIL("list() never ran out of pages");
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// Refuses the confirm and keeps asking the refund to be retried, so the
// compensation of `pay` runs out of attempts: the saga parks as FAILED.
std::string park_a_saga(Harness& h) {
  h.inventory.script("confirm", {fail("sold out")});
  h.payment.script("refund", {ask_retry("ledger locked")});
  const std::string id = h.start();
  h.drive();
  h.advance(Duration{100});  // refund attempt 2
  h.advance(Duration{200});  // refund attempt 3, the last
  REQUIRE(h.state(id) == SagaState::kFailed);
  return id;
}

// Window 4, at least 4 calls, opens at 50% failures, rests 1 s, closes after 1 probe.
constexpr BreakerOptions kTightBreaker{true, 4, 4, 0.5, Duration{1000}, 1};

// A saga waiting for payment's breaker, and when the breaker opened.
struct OpenBreaker {
  std::string waiting_id;
  TimePoint opened_at;
};

// Opens payment's breaker (kTightBreaker) with a booking whose charge is
// answered "retry" four times; that saga then waits for the breaker.
OpenBreaker open_payment_breaker(Harness& h) {
  h.payment.script("charge", {first(4, ask_retry("overloaded"))});
  OpenBreaker out;
  out.waiting_id = h.start();
  h.drive();
  for (int i = 0; i < 3; ++i) h.advance(Duration{100});  // attempts 2, 3, 4
  out.opened_at = h.clock->now();
  REQUIRE(h.orch->breaker_state("payment") == BreakerState::kOpen);
  h.advance(Duration{100});  // the backoff ends, but the breaker holds the 5th attempt back
  REQUIRE(h.payment.received("charge").size() == 4);
  return out;
}

BookingSpec constant_backoff(uint32_t attempts) {
  BookingSpec spec;
  spec.retry = RetryPolicy{attempts, Duration{100}, 1.0, Duration{100}, 0.0};
  return spec;
}

// ----------------------------------------------------------------- happy path

TEST_CASE("a three-step booking completes and merges each reply into the saga data") {
  Harness h;
  h.open();
  h.inventory.script("reserve", {succeed({{"hold", "H-1"}})});
  h.payment.script("charge", {succeed({{"charge", "C-9"}})});
  const int64_t t0 = to_millis(h.clock->now());

  const std::string id = h.start({{"qty", 2}});
  h.drive();

  const SagaView v = h.view(id);
  CHECK(v.state == SagaState::kCompleted);
  CHECK(v.type == "booking");
  CHECK(v.version == 1);
  CHECK(v.data == Json{{"qty", 2}, {"hold", "H-1"}, {"charge", "C-9"}});
  CHECK(v.created_ms == t0);
  CHECK(v.finished_ms >= t0);
  CHECK_FALSE(v.traceparent.empty());
  REQUIRE(v.steps.size() == 3);
  for (const StepView& s : v.steps) {
    CAPTURE(s.name);
    CHECK(s.status == StepStatus::kSucceeded);
    CHECK(s.attempts == 1);
    CHECK(s.compensation_attempts == 0);
    CHECK(s.started_ms >= t0);
    CHECK(s.finished_ms >= s.started_ms);
    CHECK(s.compensated_ms == 0);
  }
  CHECK(h.journal == Journal{"inventory:reserve", "payment:charge", "inventory:confirm"});
  const auto charges = h.payment.received("charge");
  REQUIRE(charges.size() == 1);
  CHECK(charges[0].id == id + "/1/a");
  CHECK(charges[0].attempt == 1);
  CHECK(charges[0].payload == Json{{"qty", 2}, {"hold", "H-1"}});  // default payload: the data
  CHECK(h.inventory.applied(id + "/0/a") == 1);
  CHECK(h.payment.applied(id + "/1/a") == 1);
  CHECK(h.orch->stats().in_flight == 0);
}

// `depth` nested one-element arrays around 1 (json_depth == depth).
Json nested(size_t depth) {
  Json j = 1;
  for (size_t i = 0; i < depth; ++i) j = Json::array({std::move(j)});
  return j;
}

TEST_CASE("the store's size and key count grow with the sagas and show in stats and metrics") {
  Harness h;
  h.open();
  h.inventory.script("reserve", {succeed({{"hold", "H-1"}})});
  h.payment.script("charge", {succeed({{"charge", "C-9"}})});
  const EngineStats before = h.orch->stats();
  for (int i = 0; i < 20; ++i) h.start({{"qty", 1}});
  h.drive();
  const EngineStats after = h.orch->stats();
  CHECK(after.store_keys >= before.store_keys + 20);  // an instance each, at least
  CHECK(after.store_bytes > before.store_bytes);
  const std::string metrics = h.orch->metrics_text();
  CAPTURE(metrics);
  auto gauge = [&](const std::string& name) {
    const std::string key = "saga_engine{gauge=\"" + name + "\"} ";
    const size_t at = metrics.find(key);
    REQUIRE(at != std::string::npos);
    return std::stod(metrics.substr(at + key.size()));
  };
  CHECK(gauge("store_keys") > 0);  // read at the scrape
  CHECK(gauge("store_bytes") > 0);
}

TEST_CASE("saga data stays within the JSON depth limit: a deep start is refused, a deep merge dropped") {
  Harness h;
  auto wrap = DefinitionBuilder("wrap", 1)
                  .command("reserve", "inventory", "reserve")
                  .on_reply([](Json& d, const Json& r) { d["wrapped"] = Json::array({r}); })
                  .timeout(kTimeout)
                  .retry(kQuickRetry)
                  .build();
  REQUIRE(wrap.ok());
  h.open({booking(), *wrap});

  SUBCASE("start") {
    auto refused = h.orch->start("booking", Json{{"deep", nested(kMaxJsonDepth)}});
    CHECK(refused.status().code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(refused.status().message().find("deeper than 64") != std::string::npos,
                  refused.status().message());
    CHECK(h.orch->list({}).value().items.empty());  // nothing was stored
    h.start(Json{{"deep", nested(kMaxJsonDepth - 1)}});  // exactly the limit: accepted
  }
  SUBCASE("a merge that would nest too deep is dropped; the record stays readable") {
    const Json reply = {{"r", nested(kMaxJsonDepth - 1)}};  // depth 64: a valid reply
    h.inventory.script("reserve", {succeed(reply)});
    auto id = h.orch->start("wrap", Json{{"qty", 1}});
    REQUIRE(id.ok());
    h.drive();
    CHECK(h.state(*id) == SagaState::kCompleted);
    CHECK(h.view(*id).data == Json{{"qty", 1}});
    h.close();
    h.open({booking(), *wrap});
    CHECK(h.view(*id).data == Json{{"qty", 1}});
  }
}


// ------------------------------------------------------------- changelog

// Everything of a saga that a restore must bring back.
std::string summary(const SagaView& v) {
  std::ostringstream o;
  o << v.id << " " << to_string(v.state) << " " << v.data.dump() << " " << v.updated_ms;
  for (const StepView& st : v.steps) o << " " << to_string(st.status) << "/" << st.attempts;
  return o.str();
}

// Every step of completed booking `id` was applied exactly once.
void check_applied_once(Harness& h, const std::string& id) {
  CAPTURE(id);
  CHECK(h.inventory.applied(id + "/0/a") == 1);
  CHECK(h.payment.applied(id + "/1/a") == 1);
  CHECK(h.inventory.applied(id + "/2/a") == 1);
}

TEST_CASE("with the changelog, a lost store is restored from it and its sagas go on") {
  Harness h;
  h.options.changelog = true;
  h.options.shards = 4;
  h.open();
  // Four charges are applied; the others vanish, so their sagas wait for a timeout.
  h.payment.script("charge", {first(4, succeed({{"charge", "C"}})), swallow()});
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(h.start(Json{{"qty", i}}));
  h.drive();
  std::map<std::string, std::string> before;
  int completed = 0;
  for (const std::string& id : ids) {
    before[id] = summary(h.view(id));
    completed += h.state(id) == SagaState::kCompleted;
  }
  CHECK(completed == 4);
  uint64_t records = 0;
  for (uint32_t k = 0; k < 4; ++k) records += h.bus->log_end("orchestrator.changelog", k);
  CHECK(records > 0);

  h.close();
  std::filesystem::remove_all(h.dir());  // the disk is gone
  h.payment.script("charge", {succeed({{"charge", "C"}})});
  h.open();
  for (const std::string& id : ids) CHECK(summary(h.view(id)) == before[id]);
  CHECK(list_all(*h.orch, {}).size() == ids.size());
  // Every record was applied, and the metrics say so, shard by shard.
  double restored = 0;
  std::istringstream metrics(h.orch->metrics_text());
  for (std::string line; std::getline(metrics, line);) {
    if (line.rfind("saga_restore_records_total{", 0) == 0)
      restored += std::stod(line.substr(line.rfind(' ') + 1));
  }
  CHECK(restored == static_cast<double>(records));
  CHECK(h.orch->stats().in_flight == 6);

  // The timers came back with the records: the waiting sagas retry and finish.
  REQUIRE(h.advance_until([&] {
    return std::all_of(ids.begin(), ids.end(),
                       [&](const std::string& id) { return h.state(id) == SagaState::kCompleted; });
  }));
  for (const std::string& id : ids) check_applied_once(h, id);
}

TEST_CASE("with the changelog, a fenced orchestrator stops its shards and emits nothing more") {
  Harness h;
  h.options.changelog = true;
  h.options.shards = 2;
  h.open();
  h.payment.script("charge", {swallow()});  // every saga waits at its second step
  const std::string a = h.start();
  h.drive();
  CHECK(h.payment.received("charge").size() == 1);

  // A fresh owner on another disk claims both shards: it restores them.
  TempDir other;
  Options o = h.options;
  o.data_dir = other.path().string();
  auto fresh = Orchestrator::open(o, h.bus->connect("orchestrator-2"), {booking()});
  REQUIRE_MESSAGE(fresh.ok(), fresh.status().to_string());
  auto v = (*fresh)->get(a);
  REQUIRE(v.ok());
  CHECK(v->state == SagaState::kRunning);

  // The old owner's next commit is fenced: the start fails, nothing is sent.
  const size_t sent_before = h.bus->stats().sent;
  auto refused = h.orch->start("booking", Json{{"qty", 1}}, {});
  CHECK(refused.status().code() == StatusCode::kAborted);
  CHECK_MESSAGE(refused.status().message().find("claimed by another owner") != std::string::npos,
                refused.status().message());
  h.clock->advance(Duration{5'000});  // the old owner's timer for `a` is due: it must stay quiet
  h.orch->run_once();
  CHECK(h.bus->stats().sent == sent_before);
  CHECK(h.payment.received("charge").size() == 1);

  // The fresh owner's timer re-sends the charge; the saga completes there.
  h.close();
  h.payment.script("charge", {succeed()});
  bool completed = false;
  for (int i = 0; i < 200 && !completed; ++i) {
    h.clock->advance(Duration{100});
    (*fresh)->run_once();
    h.inventory.poll();
    h.payment.poll();
    (*fresh)->run_once();
    completed = (*fresh)->get(a)->state == SagaState::kCompleted;
  }
  CHECK(completed);
  check_applied_once(h, a);
}

TEST_CASE("with the changelog, a failed commit rolls the shard back; nothing is lost or applied twice") {
  Harness h;
  h.options.changelog = true;
  h.options.shards = 2;
  h.open();
  const std::string a = h.start();  // its reserve command goes out with the first commit
  REQUIRE(h.inventory.poll() == 1);  // ... and is answered while the fabric is there
  h.bus->set_available(false);

  // The reply is handled, but the commit fails: the shard rolls back and rests.
  h.orch->run_once();
  CHECK(h.view(a).steps[0].status == StepStatus::kRunning);
  // A start is refused (in the resting shard, or its own commit fails), with a time to retry.
  auto refused = h.orch->start("booking", Json{{"qty", 1}}, {});
  CHECK(refused.status().code() == StatusCode::kUnavailable);
  CHECK(refused.status().retry_after().count() > 0);
  h.clock->advance(Duration{150});
  h.orch->run_once();  // tries again, fails again
  CHECK(h.view(a).steps[0].status == StepStatus::kRunning);

  h.bus->set_available(true);
  REQUIRE(h.advance_until(h.reaches(a, SagaState::kCompleted)));
  check_applied_once(h, a);
  CHECK(h.orch->stats().in_flight == 0);
  CHECK(list_all(*h.orch, {}).size() == 1);  // the refused start left nothing behind
  CHECK(h.orch->health().ok());
}

TEST_CASE("a store written without the changelog becomes its first commit; one with data is not overwritten") {
  Harness h;
  h.options.shards = 2;
  h.open();
  const std::string a = h.start();
  h.drive();
  REQUIRE(h.state(a) == SagaState::kCompleted);
  h.close();

  h.options.changelog = true;
  h.open();  // bootstraps the changelog from the store
  CHECK(h.bus->log_end("orchestrator.changelog", shard_of(a, 2)) > 0);
  h.close();
  std::filesystem::remove_all(h.dir());
  h.open();  // restored from the changelog alone
  CHECK(h.state(a) == SagaState::kCompleted);
  h.close();

  // Another store without a checkpoint, but with data, against a changelog
  // that has records: which one is right cannot be told.
  TempDir other;
  Options plain = h.options;
  plain.changelog = false;
  plain.data_dir = other.path().string();
  {
    auto o = Orchestrator::open(plain, h.bus->connect("plain"), {booking()});
    REQUIRE(o.ok());
    StartOptions so;
    so.id = a;  // same shard as `a`
    auto id = (*o)->start("booking", Json{{"qty", 1}}, so);
    REQUIRE(id.ok());
  }
  plain.changelog = true;
  auto refused = Orchestrator::open(plain, h.bus->connect("plain"), {booking()});
  CHECK(refused.status().code() == StatusCode::kFailedPrecondition);
  CHECK_MESSAGE(refused.status().message().find("remove the store") != std::string::npos,
                refused.status().message());
}

// --------------------------------------------------------------- compensation

TEST_CASE("a refused first step ends the saga compensated without sending any compensation") {
  Harness h;
  h.open();
  h.inventory.script("reserve", {fail("no availability")});

  const std::string id = h.start();
  h.drive();

  const SagaView v = h.view(id);
  CHECK(v.state == SagaState::kCompensated);
  CHECK(v.steps[0].status == StepStatus::kFailed);
  CHECK(v.steps[0].last_error == "no availability");
  CHECK(v.steps[1].status == StepStatus::kPending);
  CHECK(v.steps[2].status == StepStatus::kPending);
  CHECK(v.finished_ms > 0);
  CHECK(h.journal == Journal{"inventory:reserve"});
}

TEST_CASE("compensations run in reverse order after step 3 is refused") {
  Harness h;
  h.open();
  h.inventory.script("confirm", {fail("sold out")});

  const std::string id = h.start();
  h.drive();

  const SagaView v = h.view(id);
  CHECK(v.state == SagaState::kCompensated);
  CHECK(h.journal == Journal{"inventory:reserve", "payment:charge", "inventory:confirm",
                             "payment:refund", "inventory:release"});
  const auto refunds = h.payment.received("refund");
  const auto releases = h.inventory.received("release");
  REQUIRE(refunds.size() == 1);
  REQUIRE(releases.size() == 1);
  CHECK(refunds[0].id == id + "/1/c");
  CHECK(refunds[0].compensates == id + "/1/a");
  CHECK(releases[0].id == id + "/0/c");
  CHECK(releases[0].compensates == id + "/0/a");
  CHECK(v.steps[2].status == StepStatus::kFailed);
  CHECK(v.steps[1].status == StepStatus::kCompensated);
  CHECK(v.steps[0].status == StepStatus::kCompensated);
  CHECK(v.steps[1].compensation_attempts == 1);
  CHECK(v.steps[0].compensated_ms >= v.steps[1].compensated_ms);
  CHECK(v.steps[1].compensated_ms > 0);
}

// -------------------------------------------------------------------- retries

TEST_CASE("a retry reply re-sends the command only after the backoff, with a growing attempt") {
  Harness h;
  h.open();
  h.payment.script("charge", {first(2, ask_retry())});

  const std::string id = h.start();
  h.drive();
  CHECK(attempts_of(h.payment.received("charge")) == std::vector<uint32_t>{1});
  CHECK(h.view(id).steps[1].attempts == 1);

  h.advance(Duration{99});  // backoff after attempt 1 is 100 ms
  CHECK(h.payment.received("charge").size() == 1);
  h.advance(Duration{1});
  CHECK(attempts_of(h.payment.received("charge")) == std::vector<uint32_t>{1, 2});
  CHECK(h.view(id).steps[1].attempts == 2);

  h.advance(Duration{199});  // backoff after attempt 2 is 200 ms
  CHECK(h.payment.received("charge").size() == 2);
  h.advance(Duration{1});
  const auto charges = h.payment.received("charge");
  CHECK(attempts_of(charges) == std::vector<uint32_t>{1, 2, 3});
  for (const ReceivedCommand& c : charges) CHECK(c.id == id + "/1/a");

  const SagaView v = h.view(id);
  CHECK(v.state == SagaState::kCompleted);
  CHECK(v.steps[1].attempts == 3);
  CHECK(h.payment.applied(id + "/1/a") == 1);
}

TEST_CASE("a step that keeps asking for retries is given up after max_attempts and compensated") {
  Harness h;
  h.open();
  h.payment.script("charge", {ask_retry("overloaded")});

  const std::string id = h.start();
  CHECK(h.advance_until(h.reaches(id, SagaState::kCompensated)));

  const SagaView v = h.view(id);
  CHECK(attempts_of(h.payment.received("charge")) == std::vector<uint32_t>{1, 2, 3});
  CHECK(v.steps[1].status == StepStatus::kFailed);  // nothing applied: not compensated
  CHECK(v.steps[1].last_error == "overloaded");
  CHECK(v.steps[0].status == StepStatus::kCompensated);
  CHECK(h.payment.received("refund").empty());
  CHECK(h.inventory.received("release").size() == 1);
}

// ------------------------------------------------------------------- timeouts

TEST_CASE("a step without a reply is re-sent with the same id after its timeout") {
  Harness h;
  h.open();
  h.payment.script("charge", {first(1, swallow())});

  const std::string id = h.start();
  h.drive();
  h.advance(kTimeout - Duration{1});
  CHECK(h.payment.received("charge").size() == 1);
  h.advance(Duration{1});  // deadline: retried after the 100 ms backoff
  CHECK(h.view(id).steps[1].last_error.find("no reply") != std::string::npos);
  CHECK(h.payment.received("charge").size() == 1);
  h.advance(Duration{100});

  const auto charges = h.payment.received("charge");
  REQUIRE(charges.size() == 2);
  CHECK(charges[1].id == charges[0].id);
  CHECK(attempts_of(charges) == std::vector<uint32_t>{1, 2});
  const SagaView v = h.view(id);
  CHECK(v.state == SagaState::kCompleted);
  CHECK(v.steps[1].attempts == 2);
  CHECK(h.payment.applied(id + "/1/a") == 1);
}

TEST_CASE("a step that times out on every attempt is compensated itself, then the earlier ones") {
  Harness h;
  h.open();
  h.payment.script("charge", {swallow()});

  const std::string id = h.start();
  CHECK(h.advance_until(h.reaches(id, SagaState::kCompensated)));

  CHECK(attempts_of(h.payment.received("charge")) == std::vector<uint32_t>{1, 2, 3});
  CHECK(h.journal == Journal{"inventory:reserve", "payment:charge", "payment:charge",
                             "payment:charge", "payment:refund", "inventory:release"});
  const auto refunds = h.payment.received("refund");
  REQUIRE(refunds.size() == 1);
  CHECK(refunds[0].compensates == id + "/1/a");  // the outcome was unknown: undo it too
  const SagaView v = h.view(id);
  CHECK(v.steps[1].status == StepStatus::kCompensated);
  CHECK(v.steps[0].status == StepStatus::kCompensated);
}

// ------------------------------------------------ compensation retries, FAILED

TEST_CASE("a compensation that keeps failing parks the saga as FAILED until an operator retries") {
  Harness h;
  h.open();
  const std::string id = park_a_saga(h);

  SagaView v = h.view(id);
  CHECK_FALSE(is_terminal(v.state));
  CHECK(v.finished_ms == 0);
  CHECK(v.steps[1].status == StepStatus::kCompensationFailed);
  CHECK(v.steps[1].compensation_attempts == 3);
  CHECK(v.last_error == "ledger locked");
  CHECK(v.steps[0].status == StepStatus::kSucceeded);  // not undone yet
  CHECK(h.inventory.received("release").empty());
  CHECK(attempts_of(h.payment.received("refund")) == std::vector<uint32_t>{1, 2, 3});

  ListQuery failed;
  failed.state = SagaState::kFailed;
  auto page = h.orch->list(failed);
  REQUIRE(page.ok());
  CHECK(ids_of(*page) == std::vector<std::string>{id});
  const std::string metrics = h.orch->metrics_text();
  CAPTURE(metrics);
  CHECK(metrics.find("saga_failed_total{type=\"booking\"} 1") != std::string::npos);
  CHECK(h.orch->stats().in_flight == 1);

  h.advance(Duration{3'600'000});  // nothing happens by itself
  CHECK(h.state(id) == SagaState::kFailed);
  CHECK(h.payment.received("refund").size() == 3);

  h.payment.script("refund", {succeed()});
  CHECK(h.orch->retry(id).ok());
  h.drive();

  v = h.view(id);
  CHECK(v.state == SagaState::kCompensated);
  CHECK(v.steps[1].status == StepStatus::kCompensated);
  CHECK(v.steps[1].compensation_attempts == 4);  // every send counts; the retry budget starts again
  CHECK(v.steps[0].status == StepStatus::kCompensated);
  CHECK(h.payment.applied(id + "/1/c") == 1);
  CHECK(h.inventory.applied(id + "/0/c") == 1);
  CHECK(h.orch->stats().in_flight == 0);
  CHECK(h.orch->retry(id).code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("abort moves a FAILED saga to ABORTED and nothing more is sent") {
  Harness h;
  h.open();
  const std::string id = park_a_saga(h);
  const size_t received = h.journal.size();

  CHECK(h.orch->abort(id).ok());
  h.advance(Duration{60'000});

  const SagaView v = h.view(id);
  CHECK(v.state == SagaState::kAborted);
  CHECK(is_terminal(v.state));
  CHECK(v.finished_ms > 0);
  CHECK(h.journal.size() == received);
  CHECK(h.orch->retry(id).code() == StatusCode::kFailedPrecondition);
}

// Regression: restart_compensation() used to reset the attempt counter, so the
// restarted compensation re-used (command id, attempt) pairs; the participant's
// reply ids ("<command>/retry<attempt>") repeat and the engine's reply marks
// drop them as duplicates. The compensation then waits for its full timeout.
// What a timeline shows of each entry: event, state after, step, step status.
std::vector<std::string> timeline_of(const SagaView& v) {
  std::vector<std::string> out;
  for (const TimelineEntry& e : v.timeline) {
    out.push_back(std::string(to_string(e.event)) + " " + std::string(to_string(e.state)) + " " +
                  std::to_string(e.step) + " " + std::string(to_string(e.step_status)));
  }
  return out;
}

TEST_CASE("the timeline records every transition with its command, attempt and error; an operator's skip with who and why") {
  Harness h;
  h.open();
  const std::string id = park_a_saga(h);
  SagaView v = h.view(id);
  CHECK(timeline_of(v) == std::vector<std::string>{
                              "STARTED RUNNING 0 RUNNING",
                              "STEP_SUCCEEDED RUNNING 0 SUCCEEDED",
                              "STEP_SUCCEEDED RUNNING 1 SUCCEEDED",
                              "STEP_REFUSED COMPENSATING 2 FAILED",
                              "COMPENSATION_FAILED COMPENSATING 1 COMPENSATING",
                              "RESENT COMPENSATING 1 COMPENSATING",
                              "COMPENSATION_FAILED COMPENSATING 1 COMPENSATING",
                              "RESENT COMPENSATING 1 COMPENSATING",
                              "COMPENSATION_FAILED FAILED 1 COMPENSATION_FAILED",
                          });
  REQUIRE(v.timeline.size() == 9);
  CHECK(v.timeline_dropped == 0);
  CHECK(v.timeline[0].command_id == id + "/0/a");
  CHECK(v.timeline[0].attempt == 1);
  CHECK(v.timeline[0].at_ms == v.created_ms);
  CHECK(v.timeline[2].command_id == id + "/2/a");
  CHECK(v.timeline[3].error == "sold out");
  CHECK(v.timeline[3].command_id == id + "/1/c");  // the refusal starts the refund
  CHECK(v.timeline[4].error == "ledger locked");
  CHECK(v.timeline[4].command_id.empty());  // a backoff first: nothing sent
  CHECK(v.timeline[5].command_id == id + "/1/c");
  CHECK(v.timeline[5].attempt == 2);
  CHECK(v.timeline[7].attempt == 3);
  for (size_t i = 1; i < v.timeline.size(); ++i) CHECK(v.timeline[i].at_ms >= v.timeline[i - 1].at_ms);
  CHECK(v.timeline.back().at_ms == v.updated_ms);
  CHECK(v.awaiting.empty());  // parked: waiting for an operator, not a participant

  // Skip is for a failed compensation only.
  Harness other;
  other.open();
  const std::string running = other.start();
  CHECK(other.orch->skip_compensation(running).code() == StatusCode::kFailedPrecondition);
  CHECK(h.orch->skip_compensation("nope").code() == StatusCode::kNotFound);

  REQUIRE(h.orch->skip_compensation(id, {"ops@example", "refunded by hand"}).ok());
  h.drive();
  v = h.view(id);
  CHECK(v.state == SagaState::kCompensated);
  CHECK(v.steps[1].status == StepStatus::kCompensationSkipped);
  CHECK(v.steps[1].compensated_ms > 0);
  CHECK(v.steps[0].status == StepStatus::kCompensated);
  CHECK(h.payment.received("refund").size() == 3);  // nothing more sent to payment
  CHECK(h.inventory.applied(id + "/0/c") == 1);
  REQUIRE(v.timeline.size() == 11);
  const TimelineEntry& skip = v.timeline[9];
  CHECK(skip.event == TimelineEvent::kOperatorSkip);
  CHECK(skip.actor == "ops@example");
  CHECK(skip.reason == "refunded by hand");
  CHECK(skip.step == 1);
  CHECK(skip.step_status == StepStatus::kCompensationSkipped);
  CHECK(skip.command_id == id + "/0/c");  // the release of step 0 goes out at once
  CHECK(timeline_of(v).back() == "COMPENSATION_SUCCEEDED COMPENSATED 0 COMPENSATED");
  CHECK(v.timeline.back().actor.empty());
  CHECK(h.orch->skip_compensation(id).code() == StatusCode::kFailedPrecondition);

  // The timeline is in the record: a restart reads it back.
  h.close();
  h.open();
  CHECK(timeline_of(h.view(id)) == timeline_of(v));
}

TEST_CASE("operator actions are in the timeline: retry, force_compensate and abort with their notes") {
  Harness h;
  h.open();
  const std::string parked = park_a_saga(h);
  h.payment.script("refund", {succeed()});
  REQUIRE(h.orch->retry(parked, {"ann", "ledger unlocked"}).ok());
  h.drive();
  SagaView v = h.view(parked);
  CHECK(v.state == SagaState::kCompensated);
  REQUIRE(v.timeline.size() >= 10);
  CHECK(v.timeline[9].event == TimelineEvent::kOperatorRetry);
  CHECK(v.timeline[9].actor == "ann");
  CHECK(v.timeline[9].reason == "ledger unlocked");
  CHECK(v.timeline[9].command_id == parked + "/1/c");
  CHECK(v.timeline[9].attempt == 4);

  h.payment.script("charge", {swallow()});
  const std::string forced = h.start();
  h.drive();
  REQUIRE(h.orch->force_compensate(forced, {"bob", "guest called"}).ok());
  const std::string aborted = h.start();
  h.drive();
  REQUIRE(h.orch->abort(aborted, {"", ""}).ok());
  h.drive();
  const SagaView f = h.view(forced);
  REQUIRE(f.timeline.size() >= 3);
  const TimelineEntry& force = f.timeline[2];
  CHECK(force.event == TimelineEvent::kOperatorCompensate);
  CHECK(force.actor == "bob");
  // The charge was in flight (outcome unknown): its refund goes out at once.
  CHECK(force.step_status == StepStatus::kCompensating);
  CHECK(force.command_id == forced + "/1/c");
  CHECK(force.state == SagaState::kCompensating);
  const SagaView a = h.view(aborted);
  CHECK(a.timeline.back().event == TimelineEvent::kOperatorAbort);
  CHECK(a.timeline.back().state == SagaState::kAborted);
  CHECK(a.timeline.back().actor.empty());
}

TEST_CASE("a timeline keeps its first entry and the newest up to timeline_limit; 0 keeps none") {
  Harness h;
  h.options.timeline_limit = 4;
  h.open();
  const std::string id = park_a_saga(h);  // nine transitions
  const SagaView v = h.view(id);
  CHECK(timeline_of(v) == std::vector<std::string>{
                              "STARTED RUNNING 0 RUNNING",
                              "COMPENSATION_FAILED COMPENSATING 1 COMPENSATING",
                              "RESENT COMPENSATING 1 COMPENSATING",
                              "COMPENSATION_FAILED FAILED 1 COMPENSATION_FAILED",
                          });
  CHECK(v.timeline_dropped == 5);

  Harness one;
  one.options.timeline_limit = 1;
  one.open();
  const std::string first_only = park_a_saga(one);
  CHECK(timeline_of(one.view(first_only)) == std::vector<std::string>{"STARTED RUNNING 0 RUNNING"});
  CHECK(one.view(first_only).timeline_dropped == 8);

  Harness none;
  none.options.timeline_limit = 0;
  none.open();
  const std::string plain = none.start();
  none.drive();
  CHECK(none.view(plain).state == SagaState::kCompleted);
  CHECK(none.view(plain).timeline.empty());
  CHECK(none.view(plain).timeline_dropped == 0);
}

TEST_CASE("counts() tallies sagas in flight by state, step and awaited participant; list filters by it") {
  Harness h;
  h.open();
  auto empty = h.orch->counts();
  REQUIRE(empty.ok());
  CHECK(empty->running + empty->compensating + empty->failed == 0);
  CHECK(empty->by_step.empty());

  const std::string parked = park_a_saga(h);
  h.payment.script("charge", {swallow()});
  const std::string charging1 = h.start();
  const std::string charging2 = h.start();
  h.drive();
  h.inventory.script("reserve", {swallow()});
  const std::string reserving = h.start();
  h.drive();

  auto c = h.orch->counts();
  REQUIRE(c.ok());
  CHECK(c->running == 3);
  CHECK(c->compensating == 0);
  CHECK(c->failed == 1);
  std::vector<std::string> at;
  for (const SagaCounts::AtStep& s : c->by_step)
    at.push_back(s.type + " " + s.step + " " + std::string(to_string(s.state)) + " " +
                 std::to_string(s.count));
  CHECK(at == std::vector<std::string>{"booking reserve RUNNING 1", "booking pay RUNNING 2",
                                       "booking pay FAILED 1"});
  REQUIRE(c->by_participant.size() == 2);
  CHECK(c->by_participant[0] == std::pair<std::string, uint64_t>{"inventory", 1});
  CHECK(c->by_participant[1] == std::pair<std::string, uint64_t>{"payment", 2});

  CHECK(h.view(charging1).awaiting == "payment");
  CHECK(h.view(reserving).awaiting == "inventory");
  CHECK(h.view(parked).awaiting.empty());
  ListQuery q;
  q.awaiting = "payment";
  CHECK(list_all(*h.orch, q) == std::vector<std::string>{charging1, charging2});
  q.awaiting = "nobody";
  CHECK(list_all(*h.orch, q).empty());
}

TEST_CASE("a retry reply to a compensation restarted by retry() is not dropped as stale") {
  Harness h;
  h.open();
  const std::string id = park_a_saga(h);
  h.payment.script("refund", {first(1, ask_retry("still locked")), succeed()});
  const uint64_t stale_before = h.orch->stats().stale_replies;

  REQUIRE(h.orch->retry(id).ok());
  h.drive();
  CHECK(h.payment.received("refund").size() == 4);
  CHECK(h.orch->stats().stale_replies == stale_before);
  CHECK(h.view(id).steps[1].last_error == "still locked");
  h.advance(Duration{100});  // the backoff after attempt 1, well before the 1 s timeout
  CHECK(h.payment.received("refund").size() == 5);
  CHECK(h.state(id) == SagaState::kCompensated);
}

// --------------------------------------------------------------------- cancel

TEST_CASE("cancel of a running saga compensates the in-flight step and the ones before it") {
  Harness h;
  h.open();
  h.payment.set_paused(true);
  const std::string id = h.start();
  h.drive();  // awaiting the charge
  REQUIRE(h.view(id).steps[1].status == StepStatus::kRunning);

  CHECK(h.orch->cancel(id).ok());
  SagaView v = h.view(id);
  CHECK(v.state == SagaState::kCompensating);
  CHECK(v.cancel_requested);
  CHECK(v.steps[1].status == StepStatus::kCompensating);
  CHECK(h.orch->cancel(id).ok());  // asking again while compensating is harmless

  h.payment.set_paused(false);
  h.drive();

  v = h.view(id);
  CHECK(v.state == SagaState::kCompensated);
  CHECK(h.journal ==
        Journal{"inventory:reserve", "payment:charge", "payment:refund", "inventory:release"});
  const auto refunds = h.payment.received("refund");
  REQUIRE(refunds.size() == 1);
  CHECK(refunds[0].compensates == id + "/1/a");
  CHECK(v.steps[1].status == StepStatus::kCompensated);
  CHECK(v.steps[0].status == StepStatus::kCompensated);
  CHECK(h.inventory.received("confirm").empty());
}

TEST_CASE("cancel of a finished saga fails with FailedPrecondition, of an unknown one NotFound") {
  Harness h;
  h.open();
  const std::string id = h.start();
  h.drive();
  REQUIRE(h.state(id) == SagaState::kCompleted);

  CHECK(h.orch->cancel(id).code() == StatusCode::kFailedPrecondition);
  CHECK(h.orch->cancel("no-such-saga").code() == StatusCode::kNotFound);
  CHECK(h.orch->retry("no-such-saga").code() == StatusCode::kNotFound);
  CHECK(h.orch->abort("no-such-saga").code() == StatusCode::kNotFound);
  CHECK(h.orch->force_compensate("no-such-saga").code() == StatusCode::kNotFound);
  CHECK(h.orch->get("no-such-saga").status().code() == StatusCode::kNotFound);
  CHECK(h.state(id) == SagaState::kCompleted);

  h.close();  // also after a restart, when the saga is only on disk
  h.open();
  CHECK(h.orch->cancel(id).code() == StatusCode::kFailedPrecondition);
}

// ---------------------------------------------------------------------- admin

TEST_CASE("force_compensate undoes a running saga at once") {
  Harness h;
  h.open();
  h.payment.script("charge", {first(1, ask_retry())});
  const std::string id = h.start();
  h.drive();  // the charge is in backoff

  CHECK(h.orch->force_compensate(id).ok());
  h.drive();

  const SagaView v = h.view(id);
  CHECK(v.state == SagaState::kCompensated);
  CHECK_FALSE(v.cancel_requested);
  CHECK(h.payment.received("charge").size() == 1);  // the backoff's resend never happens
  CHECK(h.inventory.received("release").size() == 1);
  CHECK(h.inventory.received("confirm").empty());
  h.advance(Duration{60'000});
  CHECK(h.payment.received("charge").size() == 1);
}

TEST_CASE("abort of a running saga stops it where it is and sends nothing more") {
  Harness h;
  h.open();
  h.payment.set_paused(true);
  const std::string id = h.start();
  h.drive();

  CHECK(h.orch->abort(id).ok());
  SagaView v = h.view(id);
  CHECK(v.state == SagaState::kAborted);
  CHECK(v.finished_ms > 0);

  h.payment.set_paused(false);
  h.drive();
  h.advance(Duration{60'000});
  v = h.view(id);
  CHECK(v.state == SagaState::kAborted);
  CHECK(h.journal == Journal{"inventory:reserve", "payment:charge"});
  CHECK(h.orch->stats().in_flight == 0);
  CHECK(h.orch->abort(id).code() == StatusCode::kFailedPrecondition);
  CHECK(h.orch->force_compensate(id).code() == StatusCode::kFailedPrecondition);
}

// ---------------------------------------------------------------------- pivot

TEST_CASE("after the pivot succeeds, a later step that keeps failing is retried, not compensated") {
  Harness h;
  BookingSpec spec;
  spec.pivot = 1;
  spec.retry.max_attempts = 2;
  h.open({booking(spec)});

  SUBCASE("with retry replies") { h.inventory.script("confirm", {first(4, ask_retry())}); }
  SUBCASE("with timeouts") { h.inventory.script("confirm", {first(4, swallow())}); }

  const std::string id = h.start();
  CHECK(h.advance_until(h.reaches(id, SagaState::kCompleted)));

  CHECK(attempts_of(h.inventory.received("confirm")) == std::vector<uint32_t>{1, 2, 3, 4, 5});
  CHECK(h.payment.received("refund").empty());
  CHECK(h.inventory.received("release").empty());
  CHECK(h.view(id).steps[2].attempts == 5);
}

TEST_CASE("before the pivot succeeds, a refused step still compensates") {
  Harness h;
  BookingSpec spec;
  spec.pivot = 1;
  h.open({booking(spec)});
  h.payment.script("charge", {fail("card declined")});

  const std::string id = h.start();
  h.drive();

  CHECK(h.state(id) == SagaState::kCompensated);
  CHECK(h.journal == Journal{"inventory:reserve", "payment:charge", "inventory:release"});
}

TEST_CASE("cancel after the pivot fails with FailedPrecondition and the saga completes") {
  Harness h;
  BookingSpec spec;
  spec.pivot = 1;
  h.open({booking(spec)});
  h.inventory.script("confirm", {first(1, ask_retry())});
  const std::string id = h.start();
  h.drive();  // confirm is in backoff
  const SagaView before = h.view(id);
  REQUIRE(before.current_step == 2);

  CHECK(h.orch->cancel(id).code() == StatusCode::kFailedPrecondition);
  CHECK(h.state(id) == SagaState::kRunning);
  h.advance(Duration{100});

  CHECK(h.state(id) == SagaState::kCompleted);
  CHECK(h.payment.received("refund").empty());
}

// The pivot out of retries: its outcome is open, so nothing before it is
// undone; the saga waits as Failed for an operator or the pivot's late answer.
// The booking with its pivot on pay, two attempts a step.
BookingSpec pivot_on_pay() {
  BookingSpec spec;
  spec.pivot = 1;
  spec.retry.max_attempts = 2;
  return spec;
}

// Parks a booking whose pivot (pay) answers `answer` to both its attempts;
// without one, payment is paused: both attempts wait on the bus, unanswered.
std::string park_at_pivot(Harness& h, std::optional<testing::Response> answer) {
  h.open({booking(pivot_on_pay())});
  if (answer) {
    h.payment.script("charge", {first(2, *answer)});
  } else {
    h.payment.set_paused(true);
  }
  const std::string id = h.start();
  REQUIRE(h.advance_until(h.reaches(id, SagaState::kFailed)));
  return id;
}

TEST_CASE("a pivot out of retries parks the saga as Failed and undoes nothing") {
  Harness h;
  std::string id;
  SUBCASE("timeouts") { id = park_at_pivot(h, swallow()); }
  SUBCASE("retry answers") { id = park_at_pivot(h, ask_retry()); }
  const SagaView v = h.view(id);
  CHECK(v.current_step == 1);
  CHECK(v.steps[0].status == StepStatus::kSucceeded);  // the room stays held
  CHECK(v.steps[1].attempts == 2);
  CHECK_MESSAGE(v.last_error.find("pivot step 'pay' out of retries") != std::string::npos,
                v.last_error);
  h.advance(Duration{3'600'000});  // nothing happens by itself
  CHECK(h.state(id) == SagaState::kFailed);
  CHECK(h.inventory.received("release").empty());
  CHECK(h.payment.received("charge").size() == 2);
  CHECK(h.orch->cancel(id).code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("an operator resolves a parked pivot: retry() sends it again, force_compensate() undoes the steps before it") {
  Harness h;
  const std::string id = park_at_pivot(h, swallow());
  SUBCASE("retry") {
    REQUIRE(h.orch->retry(id).ok());  // the script is used up: the charge succeeds now
    h.drive();
    CHECK(h.state(id) == SagaState::kCompleted);
    CHECK(h.payment.received("charge").size() == 3);
    CHECK(h.inventory.received("release").empty());
  }
  SUBCASE("force_compensate") {
    REQUIRE(h.orch->force_compensate(id).ok());
    h.drive();
    CHECK(h.state(id) == SagaState::kCompensated);
    CHECK(h.inventory.received("release").size() == 1);
    CHECK(h.inventory.received("confirm").empty());
  }
}

TEST_CASE("a parked pivot's late answer decides: a success completes, a refusal compensates") {
  Harness h;
  const std::string id = park_at_pivot(h, std::nullopt);
  CHECK(h.inventory.received("release").empty());

  SUBCASE("the charge went through after all") {
    h.payment.set_paused(false);  // answers both attempts of the one command: success
    h.drive();
    CHECK(h.state(id) == SagaState::kCompleted);
    CHECK(h.inventory.received("release").empty());
    CHECK(h.inventory.received("confirm").size() == 1);
  }
  SUBCASE("the charge was refused") {
    h.payment.script("charge", {fail("card declined")});
    h.payment.set_paused(false);
    h.drive();
    CHECK(h.state(id) == SagaState::kCompensated);
    CHECK(h.inventory.received("release").size() == 1);
    CHECK(h.view(id).steps[1].status == StepStatus::kFailed);
  }
}

TEST_CASE("a parked pivot survives a restart, and its late answer still counts") {
  Harness h;
  const std::string id = park_at_pivot(h, std::nullopt);
  h.close();
  h.open({booking(pivot_on_pay())});
  CHECK(h.state(id) == SagaState::kFailed);
  h.payment.set_paused(false);
  h.drive();
  CHECK(h.state(id) == SagaState::kCompleted);
  CHECK(h.inventory.received("release").empty());
}

TEST_CASE("cancel while the pivot's command is in flight is refused and the saga completes") {
  Harness h;
  BookingSpec spec;
  spec.pivot = 1;
  h.open({booking(spec)});
  h.payment.set_paused(true);  // the charge is sent and not answered yet
  const std::string id = h.start();
  h.drive();
  REQUIRE(h.view(id).current_step == 1);
  REQUIRE(h.payment.received("charge").empty());  // still in the bus: in flight

  // Compensating now would release the room while the charge may still land.
  const Status refused = h.orch->cancel(id);
  CHECK(refused.code() == StatusCode::kFailedPrecondition);
  CHECK_MESSAGE(refused.message().find("has sent its pivot step 'pay'") != std::string::npos,
                refused.message());
  CHECK(h.state(id) == SagaState::kRunning);
  CHECK_FALSE(h.view(id).cancel_requested);
  h.payment.set_paused(false);
  h.drive();

  CHECK(h.state(id) == SagaState::kCompleted);
  CHECK(h.inventory.received("release").empty());
  CHECK(h.journal == Journal{"inventory:reserve", "payment:charge", "inventory:confirm"});
}

TEST_CASE("cancel before the pivot's command is sent still compensates") {
  Harness h;
  BookingSpec spec;
  spec.pivot = 1;
  h.open({booking(spec)});
  h.inventory.set_paused(true);  // reserve is in flight; the pivot (pay) is not sent
  const std::string id = h.start();
  h.drive();
  REQUIRE(h.view(id).current_step == 0);

  CHECK(h.orch->cancel(id).ok());
  h.inventory.set_paused(false);
  h.drive();
  CHECK(h.state(id) == SagaState::kCompensated);
  CHECK(h.payment.received("charge").empty());
}

// Regression: handle_request() set cancel_requested before dispatching the
// event and dispatch() restored a copy taken after that, so a refused cancel
// stayed in memory and is persisted by the next transition.
TEST_CASE("a cancel refused after the pivot does not mark the saga as cancel-requested") {
  Harness h;
  BookingSpec spec;
  spec.pivot = 1;
  h.open({booking(spec)});
  h.inventory.script("confirm", {first(1, ask_retry())});
  const std::string id = h.start();
  h.drive();

  REQUIRE(h.orch->cancel(id).code() == StatusCode::kFailedPrecondition);
  h.advance(Duration{100});

  const SagaView v = h.view(id);
  REQUIRE(v.state == SagaState::kCompleted);
  CHECK_FALSE(v.cancel_requested);
}

// Regression: after the pivot a refused step was re-sent under the same
// command id (now each refusal starts a new round, "<saga>/<step>/a.<round>"). Participants answer
// a known command id from their inbox with the first reply (here the refusal, under the same reply
// id, which the engine then drops as a duplicate), so the step can never succeed: it loops through
// timeouts forever.
TEST_CASE("after the pivot, a refused step is retried until its participant accepts it") {
  Harness h;
  BookingSpec spec;
  spec.pivot = 1;
  h.open({booking(spec)});
  h.inventory.script("confirm", {first(1, fail("warehouse closed")), succeed()});

  const std::string id = h.start();
  CHECK(h.advance_until(h.reaches(id, SagaState::kCompleted), Duration{100}, Duration{30'000}));
  CHECK(h.payment.received("refund").empty());
}

// ------------------------------------------------ duplicate and stale replies

TEST_CASE("a reply delivered twice changes nothing the second time") {
  Harness h;
  h.open();
  h.payment.set_paused(true);
  const std::string id = h.start();
  h.drive();  // awaiting the charge

  FaultOptions twice;
  twice.duplicate = 1.0;
  h.bus->set_faults(twice);
  h.payment.set_paused(false);
  REQUIRE(h.payment.poll() == 1);  // its reply goes out twice
  h.bus->set_faults(FaultOptions{});
  const uint64_t stale_before = h.orch->stats().stale_replies;
  h.drive();

  CHECK(h.orch->stats().stale_replies == stale_before + 1);
  const SagaView v = h.view(id);
  CHECK(v.state == SagaState::kCompleted);
  CHECK(v.steps[1].attempts == 1);
  CHECK(h.inventory.received("confirm").size() == 1);
  CHECK(h.payment.applied(id + "/1/a") == 1);
}

TEST_CASE("a reply to an earlier step's command is ignored") {
  Harness h;
  h.open();
  h.payment.set_paused(true);
  const std::string id = h.start();
  h.drive();  // reserve done, awaiting the charge
  const SagaView before = h.view(id);
  const uint64_t stale_before = h.orch->stats().stale_replies;

  SUBCASE("the same reply again") { h.inventory.send_raw(h.inventory.replies().at(0)); }
  SUBCASE("a different reply (a refusal) to the old command") {
    Message late = h.inventory.replies().at(0);
    late.id += "-late";
    late.outcome = ReplyOutcome::kFailure;
    late.payload = R"({"error":"changed my mind"})";
    h.inventory.send_raw(late);
  }
  h.drive();

  CHECK(h.orch->stats().stale_replies == stale_before + 1);
  const SagaView after = h.view(id);
  CHECK(after.state == SagaState::kRunning);
  CHECK(after.current_step == 1);
  CHECK(after.updated_ms == before.updated_ms);
  CHECK(after.data == before.data);

  h.payment.set_paused(false);
  h.drive();
  CHECK(h.state(id) == SagaState::kCompleted);
  CHECK(h.inventory.received("release").empty());
}

TEST_CASE("a retry reply with an old attempt number is ignored") {
  Harness h;
  h.open();
  h.payment.script("charge", {first(1, ask_retry())});
  const std::string id = h.start();
  h.drive();  // attempt 1 answered "retry"
  h.payment.set_paused(true);
  h.advance(Duration{100});  // attempt 2 waits at the paused participant
  REQUIRE(h.view(id).steps[1].attempts == 2);

  Message late = h.payment.replies().at(0);
  REQUIRE(late.outcome == ReplyOutcome::kRetry);
  REQUIRE(late.attempt == 1);
  late.id += "-late";  // not the same message: only its attempt makes it stale
  h.payment.send_raw(late);
  const uint64_t stale_before = h.orch->stats().stale_replies;
  h.drive();
  CHECK(h.orch->stats().stale_replies == stale_before + 1);

  h.payment.set_paused(false);
  h.drive();
  const SagaView v = h.view(id);
  CHECK(v.state == SagaState::kCompleted);
  CHECK(v.steps[1].attempts == 2);
  CHECK(attempts_of(h.payment.received("charge")) == std::vector<uint32_t>{1, 2});
}

// ---------------------------------------------------------------- local steps

TEST_CASE("local steps run inside the transaction and local compensations undo them") {
  auto def = DefinitionBuilder("checkout", 1)
                 .local("validate",
                        [](Json& data) {
                          data["validated"] = true;
                          return ok_status();
                        })
                 .compensate_local([](Json& data) {
                   data["validation_undone"] = true;
                   return ok_status();
                 })
                 .command("reserve", "inventory", "reserve")
                 .compensate("inventory", "release")
                 .timeout(kTimeout)
                 .retry(kQuickRetry)
                 .local("finalize",
                        [](Json& data) {
                          if (data.at("qty").get<int>() > 5) {
                            return Status::invalid_argument("too many");
                          }
                          data["finalized"] = true;
                          return ok_status();
                        })
                 .build();
  REQUIRE(def.ok());
  Harness h;
  h.open({*def});

  SUBCASE("they succeed") {
    auto id = h.orch->start("checkout", {{"qty", 1}});
    REQUIRE(id.ok());
    h.drive();
    const SagaView v = h.view(*id);
    CHECK(v.state == SagaState::kCompleted);
    CHECK(v.data == Json{{"qty", 1}, {"validated", true}, {"finalized", true}});
    for (const StepView& s : v.steps) {
      CAPTURE(s.name);
      CHECK(s.status == StepStatus::kSucceeded);
      CHECK(s.attempts == 1);
    }
    CHECK(h.journal == Journal{"inventory:reserve"});
  }
  SUBCASE("one fails and the ones before are compensated, local ones included") {
    auto id = h.orch->start("checkout", {{"qty", 9}});
    REQUIRE(id.ok());
    h.drive();
    const SagaView v = h.view(*id);
    CHECK(v.state == SagaState::kCompensated);
    CHECK(v.steps[2].status == StepStatus::kFailed);
    CHECK(v.steps[2].last_error.find("too many") != std::string::npos);
    CHECK(v.steps[1].status == StepStatus::kCompensated);
    CHECK(v.steps[0].status == StepStatus::kCompensated);
    CHECK(v.data.value("validation_undone", false));
    CHECK_FALSE(v.data.contains("finalized"));
    CHECK(h.journal == Journal{"inventory:reserve", "inventory:release"});
  }
}

TEST_CASE("a definition's function that throws fails its step or is logged; the engine goes on") {
  enum class Thrower { kLocal, kPayload, kMerge, kEvents };
  auto make = [](Thrower t) {
    DefinitionBuilder b("booking", 1);
    b.command("reserve", "inventory", "reserve")
        .compensate("inventory", "release")
        .timeout(kTimeout)
        .retry(kQuickRetry);
    if (t == Thrower::kMerge) b.on_reply([](Json&, const Json&) { throw 42; });
    b.local("note", [t](Json& data) {
      if (t == Thrower::kLocal) throw 42;  // not even a std::exception
      data["noted"] = true;
      return ok_status();
    });
    b.command("pay", "payment", "charge").timeout(kTimeout).retry(kQuickRetry);
    if (t == Thrower::kPayload) {
      b.payload([](const Json&) -> Json { throw std::runtime_error("no price"); });
    }
    if (t == Thrower::kEvents) {
      b.on_state_change([](const SagaView&, std::optional<SagaState>) -> std::vector<Message> {
        throw std::runtime_error("no event stream");
      });
    }
    auto def = b.build();
    REQUIRE(def.ok());
    return *def;
  };
  Harness h;
  auto run = [&](Thrower t) {  // one saga under that definition, driven to its end
    h.open({make(t)});
    const std::string id = h.start();
    h.drive();
    return h.view(id);
  };
  SUBCASE("a local step: the step fails and the saga compensates") {
    const SagaView v = run(Thrower::kLocal);
    CHECK(v.state == SagaState::kCompensated);
    CHECK(v.steps[1].last_error ==
          "INTERNAL: local function threw: an exception not derived from std::exception");
    CHECK(h.inventory.received("release").size() == 1);
  }
  SUBCASE("a payload builder: nothing is sent, the step fails and the saga compensates") {
    const SagaView v = run(Thrower::kPayload);
    CHECK(v.state == SagaState::kCompensated);
    CHECK(v.steps[2].last_error == "building the command failed: no price");
    CHECK(h.payment.received("charge").empty());
  }
  SUBCASE("a reply merger: the reply counts, the merge is dropped, the saga completes") {
    CHECK(run(Thrower::kMerge).state == SagaState::kCompleted);
  }
  SUBCASE("an event builder: no events, the saga completes") {
    CHECK(run(Thrower::kEvents).state == SagaState::kCompleted);
  }
  // The engine took every throw and still serves.
  CHECK(h.orch->start("booking", Json{{"qty", 1}}).ok());
}

TEST_CASE("a saga older than the de-duplication horizon sends nothing more and parks as Failed") {
  BookingSpec forever;  // retried without end, every 10 s at most
  forever.retry = forever.compensation_retry = RetryPolicy{0, Duration{100}, 2.0, Duration{10'000}, 0.0};
  Harness h;
  h.options.dedup_horizon = Duration{3'600'000};  // 1 h
  h.open({booking(forever)});
  auto sent = [&] {
    return h.payment.received("charge").size() + h.inventory.received("release").size();
  };
  SUBCASE("waiting for a step") {
    h.payment.script("charge", {swallow()});  // the charge is never answered
  }
  SUBCASE("compensating") {
    h.payment.script("charge", {fail()});
    h.inventory.script("release", {swallow()});  // the release is never answered
  }
  const std::string id = h.start();
  for (int minute = 0; minute < 59; ++minute) h.advance(Duration{60'000});
  const SagaView before = h.view(id);
  CHECK((before.state == SagaState::kRunning || before.state == SagaState::kCompensating));
  const size_t sent_before = sent();
  CHECK(sent_before > 20);  // resent all along (the clock moves a minute at a time)
  h.advance(Duration{120'000});  // past the hour: the next resend is refused
  const SagaView v = h.view(id);
  CHECK(v.state == SagaState::kFailed);
  CHECK_MESSAGE(v.last_error.find("older than the de-duplication horizon (3600 s)") !=
                    std::string::npos,
                v.last_error);
  const size_t sent_at_park = sent();
  CHECK(sent_at_park <= sent_before + 12);
  h.advance(Duration{600'000});
  CHECK(sent() == sent_at_park);  // nothing more, not even after a while
  // An operator's retry sends nothing either; abort settles it.
  CHECK(h.orch->retry(id).ok());
  h.drive();
  CHECK(h.state(id) == SagaState::kFailed);
  CHECK(sent() == sent_at_park);
  CHECK(h.orch->abort(id).ok());
  CHECK(h.state(id) == SagaState::kAborted);
}

TEST_CASE("a saga of local steps only completes within the one write of its start") {
  int calls = 0;
  auto def = DefinitionBuilder("stamp", 1)
                 .local("a",
                        [](Json& data) {
                          data["a"] = 1;
                          return ok_status();
                        })
                 .local("b",
                        [&calls](Json& data) {
                          // Transient on the first call: retried after the backoff.
                          if (++calls == 1) return Status::unavailable("clerk busy");
                          data["b"] = 2;
                          return ok_status();
                        })
                 .retry(kQuickRetry)
                 .local("c",
                        [](Json& data) {
                          data["c"] = 3;
                          return ok_status();
                        })
                 .build();
  REQUIRE(def.ok());
  Harness h;
  h.open({*def});
  const uint64_t writes_before = h.orch->stats().writes;

  auto id = h.orch->start("stamp", Json::object());
  REQUIRE(id.ok());
  CHECK(h.orch->stats().writes == writes_before + 1);
  SagaView v = h.view(*id);
  CHECK(v.state == SagaState::kRunning);
  CHECK(v.steps[0].status == StepStatus::kSucceeded);
  CHECK(v.steps[1].attempts == 1);
  CHECK(v.steps[1].last_error.find("clerk busy") != std::string::npos);

  h.advance(Duration{100});
  v = h.view(*id);
  CHECK(v.state == SagaState::kCompleted);
  CHECK(v.data == Json{{"a", 1}, {"b", 2}, {"c", 3}});
  CHECK(v.steps[1].attempts == 2);
  CHECK(calls == 2);
}

// ---------------------------------------------------------- version pinning

TEST_CASE("an unfinished saga keeps the definition version it started with") {
  BookingSpec v1_spec;
  v1_spec.with_confirm = false;  // v1: reserve -> pay
  BookingSpec v2_spec;
  v2_spec.version = 2;  // v2: reserve -> pay -> confirm
  const DefinitionPtr v1 = booking(v1_spec);
  const DefinitionPtr v2 = booking(v2_spec);
  Harness h;
  h.open({v1});
  h.payment.set_paused(true);
  const std::string old_id = h.start();
  h.drive();  // awaiting the charge
  h.close();

  SUBCASE("opening without v1 fails while a v1 saga is unfinished") {
    const Status s = h.try_open({v2});
    CHECK(s.code() == StatusCode::kFailedPrecondition);
    CHECK(h.orch == nullptr);
  }
  SUBCASE("with v1 and v2 registered, old sagas run v1 and new ones v2") {
    h.open({v1, v2});
    h.payment.set_paused(false);
    h.drive();
    SagaView old_view = h.view(old_id);
    CHECK(old_view.state == SagaState::kCompleted);
    CHECK(old_view.version == 1);
    CHECK(old_view.steps.size() == 2);
    CHECK(h.inventory.received("confirm").empty());

    const std::string new_id = h.start();
    h.drive();
    const SagaView new_view = h.view(new_id);
    CHECK(new_view.state == SagaState::kCompleted);
    CHECK(new_view.version == 2);
    CHECK(new_view.steps.size() == 3);
    CHECK(h.inventory.received("confirm").size() == 1);

    StartOptions pinned;
    pinned.version = 1;
    const std::string pinned_id = h.start(Json{{"qty", 1}}, pinned);
    h.drive();
    CHECK(h.view(pinned_id).version == 1);
    pinned.version = 3;
    CHECK(h.orch->start("booking", Json::object(), pinned).status().code() ==
          StatusCode::kNotFound);
  }
}

TEST_CASE("an unfinished saga resumes only under the shape of definition it started with") {
  Harness h;
  h.open({booking()});
  h.payment.set_paused(true);
  const std::string id = h.start();
  h.drive();  // awaiting the charge
  h.close();

  SUBCASE("a step changed without a new version: open fails and names the step") {
    BookingSpec edited;
    edited.pivot = 1;  // pay loses its refund and becomes the pivot
    const Status s = h.try_open({booking(edited)});
    CHECK(s.code() == StatusCode::kFailedPrecondition);
    CHECK(h.orch == nullptr);
    CHECK_MESSAGE(s.message().find("saga '" + id + "' started under another shape of definition "
                                   "'booking' v1") != std::string::npos,
                  s.to_string());
    CHECK_MESSAGE(s.message().find("step 2: was 'pay: payment.charge, compensation "
                                   "payment.refund', now 'pay: payment.charge, pivot'") !=
                      std::string::npos,
                  s.to_string());
  }
  SUBCASE("a step removed without a new version: open fails and names the step") {
    BookingSpec shorter;
    shorter.with_confirm = false;
    const Status s = h.try_open({booking(shorter)});
    CHECK(s.code() == StatusCode::kFailedPrecondition);
    CHECK_MESSAGE(s.message().find("step 3: was 'confirm: inventory.confirm', now no such step") !=
                      std::string::npos,
                  s.to_string());
  }
  SUBCASE("only retries changed: the saga resumes under them and completes") {
    h.open({booking(constant_backoff(7))});
    h.payment.set_paused(false);
    h.drive();
    CHECK(h.view(id).state == SagaState::kCompleted);
  }
}

// ------------------------------------------------------------------- recovery

TEST_CASE("a saga awaiting a reply resumes after a restart") {
  Harness h;
  h.open();

  SUBCASE("the reply arrives while the orchestrator is down") {
    const std::string id = h.start();
    h.inventory.poll();  // the reserve is applied and answered; the engine never sees it
    h.close();

    h.open();
    CHECK(h.orch->stats().in_flight == 1);
    h.drive();

    CHECK(h.state(id) == SagaState::kCompleted);
    CHECK(h.inventory.applied(id + "/0/a") == 1);  // a re-sent reserve is answered from the inbox
    CHECK(h.payment.applied(id + "/1/a") == 1);
  }
  SUBCASE("no reply ever comes: the deadline, re-armed from disk, re-sends the command") {
    h.inventory.script("reserve", {first(1, swallow())});
    const std::string id = h.start();
    h.drive();
    h.close();

    h.open();
    h.advance(kTimeout - Duration{1});
    CHECK(h.inventory.received("reserve").size() == 1);
    h.advance(Duration{1});    // the deadline
    h.advance(Duration{100});  // and the backoff

    CHECK(attempts_of(h.inventory.received("reserve")) == std::vector<uint32_t>{1, 2});
    CHECK(h.state(id) == SagaState::kCompleted);
  }
}

TEST_CASE("a saga in backoff resumes after a restart when its backoff ends") {
  Harness h;
  h.open();
  h.payment.script("charge", {first(1, ask_retry())});
  const std::string id = h.start();
  h.drive();  // attempt 1 answered "retry": the resend is due in 100 ms
  h.close();

  h.open();
  h.drive();
  CHECK(h.payment.received("charge").size() == 1);
  CHECK(h.state(id) == SagaState::kRunning);
  h.advance(Duration{100});

  CHECK(attempts_of(h.payment.received("charge")) == std::vector<uint32_t>{1, 2});
  CHECK(h.state(id) == SagaState::kCompleted);
}

TEST_CASE("a compensating saga resumes after a restart") {
  Harness h;
  h.open();
  h.inventory.script("confirm", {fail()});
  h.payment.set_paused(true);
  const std::string id = h.start();
  h.drive();
  REQUIRE(h.state(id) == SagaState::kRunning);  // the charge waits at payment
  // Step by hand so that the refund is sent but payment never sees it.
  h.payment.set_paused(false);
  h.payment.poll();    // charge applied
  h.orch->run_once();  // reads the charge reply, sends the confirm
  h.inventory.poll();  // refuses the confirm
  h.orch->run_once();  // reads the refusal, sends the refund
  REQUIRE(h.state(id) == SagaState::kCompensating);
  h.close();

  h.open();
  h.drive();

  CHECK(h.state(id) == SagaState::kCompensated);
  CHECK(h.payment.applied(id + "/1/c") == 1);
  CHECK(h.inventory.applied(id + "/0/c") == 1);
  // The refund's send was never confirmed before the restart, so the outbox
  // sends it again: payment answers the duplicate from its inbox.
  CHECK(h.journal == Journal{"inventory:reserve", "payment:charge", "inventory:confirm",
                             "payment:refund", "payment:refund", "inventory:release"});
}

TEST_CASE("a FAILED saga stays parked across a restart and can be retried after it") {
  Harness h;
  h.open();
  const std::string id = park_a_saga(h);
  h.close();

  h.open();
  h.advance(Duration{60'000});
  CHECK(h.state(id) == SagaState::kFailed);
  ListQuery failed;
  failed.state = SagaState::kFailed;
  CHECK(list_all(*h.orch, failed) == std::vector<std::string>{id});
  CHECK(h.orch->stats().in_flight == 1);

  h.payment.script("refund", {succeed()});
  CHECK(h.orch->retry(id).ok());
  h.drive();
  CHECK(h.state(id) == SagaState::kCompensated);
}

TEST_CASE("commands the transport never confirmed are re-sent after a restart") {
  Harness h;
  h.open();
  h.bus->set_available(false);
  const std::string id = h.start();  // durable, but the reserve cannot be sent
  h.orch->run_once();                // the failed send is reported
  CHECK(h.orch->stats().outbox_depth == 1);
  CHECK(h.orch->health().code() == StatusCode::kUnavailable);
  h.close();
  h.bus->set_available(true);
  CHECK(h.inventory.received().empty());

  h.open();
  h.drive();

  CHECK(h.inventory.received("reserve").size() == 1);
  CHECK(h.state(id) == SagaState::kCompleted);
  h.orch->run_once();  // the last confirmations
  CHECK(h.orch->stats().outbox_depth == 0);
}

// -------------------------------------------------------------------- breaker

TEST_CASE("failures at payment open its breaker; start is rejected until a probe succeeds") {
  Harness h;
  h.options.breaker = kTightBreaker;
  h.open({booking(constant_backoff(10))});
  OpenBreaker open;

  SUBCASE("with retry replies") { open = open_payment_breaker(h); }
  SUBCASE("with timeouts") {
    h.payment.script("charge", {first(4, swallow())});
    open.waiting_id = h.start();
    REQUIRE(h.advance_until([&] { return h.orch->breaker_state("payment") == BreakerState::kOpen; },
                            Duration{100}, Duration{10'000}));
    open.opened_at = h.clock->now();
    h.advance(Duration{100});
    REQUIRE(h.payment.received("charge").size() == 4);
  }

  auto rejected = h.orch->start("booking", {{"qty", 1}});
  REQUIRE_FALSE(rejected.ok());
  CHECK(rejected.status().code() == StatusCode::kUnavailable);
  CHECK(rejected.status().retry_after() > Duration{0});
  CHECK(h.orch->breaker_state("payment") == BreakerState::kOpen);
  CHECK(h.orch->breaker_state("inventory") == BreakerState::kClosed);
  CHECK(h.state(open.waiting_id) == SagaState::kRunning);

  h.clock->set(open.opened_at + Duration{999});
  h.drive();
  CHECK(h.payment.received("charge").size() == 4);  // still resting
  h.advance(Duration{1});  // half-open: the waiting saga's charge is the probe, and succeeds

  CHECK(h.payment.received("charge").size() == 5);
  CHECK(h.orch->breaker_state("payment") == BreakerState::kClosed);
  CHECK(h.state(open.waiting_id) == SagaState::kCompleted);
  const std::string next = h.start();
  h.drive();
  CHECK(h.state(next) == SagaState::kCompleted);
}

TEST_CASE("with the park policy a saga started while the breaker is open waits, then proceeds") {
  Harness h;
  h.options.breaker = kTightBreaker;
  h.options.breaker_policy = BreakerPolicy::kPark;
  h.open({booking(constant_backoff(10))});
  const OpenBreaker open = open_payment_breaker(h);

  const std::string parked = h.start();
  h.drive();
  SagaView v = h.view(parked);
  CHECK(v.state == SagaState::kRunning);
  CHECK(v.steps[0].status == StepStatus::kSucceeded);
  CHECK(v.steps[1].attempts == 0);  // waiting costs no attempt
  CHECK(v.steps[1].last_error.find("circuit breaker") != std::string::npos);
  CHECK(h.payment.received("charge").size() == 4);  // none for the parked saga

  auto both_completed = [&] {
    return h.state(open.waiting_id) == SagaState::kCompleted &&
           h.state(parked) == SagaState::kCompleted;
  };
  CHECK(h.advance_until(both_completed, Duration{50}, Duration{10'000}));
  CHECK(h.orch->breaker_state("payment") == BreakerState::kClosed);
  CHECK(h.view(parked).steps[1].attempts == 1);
  CHECK(h.payment.applied(parked + "/1/a") == 1);
}

// Regression: a probe slot of a half-open breaker was released only by an
// outcome (reply or timeout) of the probe. When the probing saga is aborted
// (or cancelled, or force-compensated) while its probe is in flight, the slot
// is never released: the breaker stays half-open and refuses every command to
// the participant forever.
TEST_CASE("a probe abandoned by an abort does not block its participant forever") {
  Harness h;
  h.options.breaker = kTightBreaker;
  h.open({booking(constant_backoff(10))});
  const OpenBreaker open = open_payment_breaker(h);
  h.payment.script("charge", {swallow()});
  h.clock->set(open.opened_at + Duration{1000});
  h.drive();  // the probe goes out and gets no answer
  REQUIRE(h.payment.received("charge").size() == 5);
  REQUIRE(h.orch->abort(open.waiting_id).ok());
  h.payment.script("charge", {succeed()});

  const std::string next = h.start();
  CHECK(h.advance_until(h.reaches(next, SagaState::kCompleted), Duration{100}, Duration{30'000}));
  CHECK(h.orch->breaker_state("payment") == BreakerState::kClosed);
}

// ------------------------------------------------------------------ retention

TEST_CASE("finished sagas are removed once the retention has passed") {
  Harness h;
  h.options.retention = Duration{3'600'000};
  h.options.retention_interval = Duration{60'000};
  h.open();
  const std::string done = h.start();
  h.drive();
  REQUIRE(h.state(done) == SagaState::kCompleted);
  const std::string parked = park_a_saga(h);

  h.advance(Duration{3'540'000});  // 59 min
  CHECK(h.orch->get(done).ok());
  h.advance(Duration{120'000});  // 61 min: the next sweep removes it

  CHECK(h.orch->get(done).status().code() == StatusCode::kNotFound);
  const std::vector<std::string> all = list_all(*h.orch, ListQuery{});
  CHECK_FALSE(contains(all, done));
  CHECK(contains(all, parked));  // FAILED is not terminal: never swept
  CHECK(h.orch->cancel(done).code() == StatusCode::kNotFound);
}

// Regression: handle_start() also checked staged_ids_, a set of every id
// started since the process began that nothing ever shrank: a long-running
// orchestrator grows it without bound, and an id removed by retention stays
// "taken" until a restart (after which the same start succeeds).
TEST_CASE("an id removed by retention can be started again without a restart") {
  Harness h;
  h.options.retention = Duration{3'600'000};
  h.options.retention_interval = Duration{60'000};
  h.open();
  StartOptions so;
  so.id = "order-1";
  h.start(Json{{"qty", 1}}, so);
  h.drive();
  h.advance(Duration{3'660'001});
  REQUIRE(h.orch->get("order-1").status().code() == StatusCode::kNotFound);

  auto again = h.orch->start("booking", {{"qty", 1}}, so);
  CHECK_MESSAGE(again.ok(), again.status().to_string());
}

TEST_CASE("a retention sweep removes max_batch sagas per iteration and goes on until none is left") {
  auto def = DefinitionBuilder("stamp", 1)
                 .local("a", [](Json&) { return ok_status(); })
                 .build();
  REQUIRE(def.ok());
  Harness h;
  h.options.retention = Duration{1'000};
  h.options.retention_interval = Duration{10'000};
  h.options.max_batch = 8;
  h.open({*def});
  std::vector<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    auto id = h.orch->start("stamp", Json::object());  // completed within its start
    REQUIRE(id.ok());
    ids.push_back(*id);
  }
  h.clock->advance(Duration{10'000});  // the next sweep is due, all 50 expired
  auto left = [&] {
    return std::count_if(ids.begin(), ids.end(), [&](const std::string& id) {
      return h.orch->get(id).ok();
    });
  };
  // Each iteration removes at most 8; the sweep does not wait for its
  // interval to go on.
  h.orch->run_once(Duration{0});
  CHECK(left() == 42);
  h.orch->run_once(Duration{0});
  CHECK(left() == 34);
  for (int i = 0; i < 5; ++i) h.orch->run_once(Duration{0});
  CHECK(left() == 0);
  CHECK(list_all(*h.orch, ListQuery{}).empty());
  // Finished later: removed by the next sweep, an interval after this one began.
  auto late = h.orch->start("stamp", Json::object());
  REQUIRE(late.ok());
  h.clock->advance(Duration{1'001});
  h.orch->run_once(Duration{0});
  CHECK(h.orch->get(*late).ok());
  h.clock->advance(Duration{10'000});
  h.orch->run_once(Duration{0});
  CHECK(h.orch->get(*late).status().code() == StatusCode::kNotFound);
  CHECK(h.orch->metrics_text().find("saga_engine_events_total{event=\"retention_removed\"} 51") !=
        std::string::npos);
}

// ------------------------------------------------------------ domain records

// "ticket": one local step; its records name its state. "t/<id>": the state,
// expiring `ttl` after the change (0: never); "u/<owner>/<id>": an index
// entry kept with the saga's shard key "owner" from the data.
DefinitionPtr ticket(Duration ttl, std::shared_ptr<ManualClock> clock, bool running_ttl_only) {
  auto def =
      DefinitionBuilder("ticket", 1)
          .local("a", [](Json&) { return ok_status(); })
          .records([ttl, clock, running_ttl_only](const SagaView& v, std::optional<SagaState>) {
            const bool expires =
                ttl.count() > 0 && (!running_ttl_only || v.state == SagaState::kRunning);
            const int64_t at = expires ? to_millis(clock->now()) + ttl.count() : 0;
            std::vector<Record> out = {{"t/" + v.id, std::string(to_string(v.state)), at, ""}};
            if (v.data.contains("owner")) {
              const std::string owner = v.data["owner"];
              out.push_back({"u/" + owner + "/" + v.id, "", at, owner});
            }
            return out;
          })
          .build();
  REQUIRE(def.ok());
  return *def;
}

TEST_CASE("domain records are written with their transition, outlive the saga and expire at their own time") {
  Harness h;
  h.options.shards = 1;  // the owner's index entries share every saga's shard
  h.options.retention = Duration{3'600'000};
  h.options.retention_interval = Duration{60'000};
  h.open({ticket(Duration{7'200'000}, h.clock, false)});
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto id = h.orch->start("ticket", Json{{"owner", "ann"}});
    REQUIRE(id.ok());
    ids.push_back(*id);
  }
  // Written in the start's write, the completion's last.
  for (const std::string& id : ids) {
    auto r = h.orch->record(id, "t/" + id);
    REQUIRE(r.ok());
    REQUIRE(r->has_value());
    CHECK((*r)->value == "COMPLETED");
    CHECK((*r)->shard_key == id);
  }
  // The index entries, a page at a time, in key order.
  std::vector<std::string> listed;
  std::string after;
  for (;;) {
    auto page = h.orch->records("ann", "u/ann/", after, 2);
    REQUIRE(page.ok());
    if (page->empty()) break;
    CHECK(page->size() <= 2);
    for (const Record& r : *page) listed.push_back(r.key.substr(6));
    after = page->back().key;
  }
  std::vector<std::string> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  CHECK(listed == sorted);
  CHECK(h.orch->records("ann", "u/", "", 0).status().code() == StatusCode::kInvalidArgument);

  h.advance(Duration{3'660'000});  // 61 min: the sagas are gone, their records stay
  for (const std::string& id : ids) {
    CHECK(h.orch->get(id).status().code() == StatusCode::kNotFound);
    auto r = h.orch->record(id, "t/" + id);
    REQUIRE(r.ok());
    CHECK(r->has_value());
  }
  h.advance(Duration{3'600'000});  // past their expiry, then swept
  for (const std::string& id : ids) {
    auto r = h.orch->record(id, "t/" + id);
    REQUIRE(r.ok());
    CHECK_FALSE(r->has_value());
  }
  CHECK(h.orch->records("ann", "u/ann/", "", 10)->empty());
  CHECK(h.orch->metrics_text().find("saga_engine_events_total{event=\"records_expired\"} 10") !=
        std::string::npos);
}

TEST_CASE("a record written again with another expiry outlives the expiry it had before") {
  Harness h;
  h.options.retention_interval = Duration{60'000};
  // Running: expires in 10 min; Completed (the same write): never.
  h.open({ticket(Duration{600'000}, h.clock, true)});
  auto id = h.orch->start("ticket", Json::object());
  REQUIRE(id.ok());
  h.advance(Duration{1'200'000});
  auto r = h.orch->record(*id, "t/" + *id);
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  CHECK((*r)->value == "COMPLETED");
  CHECK((*r)->expires_ms == 0);
}

TEST_CASE("a record outside its saga's shard, or with a bad key, is not written; the saga goes on") {
  Harness h;
  h.options.shards = 4;
  h.open({ticket(Duration{0}, h.clock, false)});
  // An owner in another shard than the saga's id.
  std::string owner = "o";
  const std::string id = "ticket-1";
  while (shard_of(owner, 4) == shard_of(id, 4)) owner += "o";
  StartOptions so;
  so.id = id;
  REQUIRE(h.orch->start("ticket", Json{{"owner", owner}}, so).ok());
  CHECK(h.state(id) == SagaState::kCompleted);
  CHECK(h.orch->record(id, "t/" + id)->has_value());
  CHECK(h.orch->records(owner, "u/", "", 10)->empty());
  CHECK(h.orch->records(id, "u/", "", 10)->empty());
}

TEST_CASE("write_records backfills records outside any transition; if_absent keeps what is there") {
  Harness h;
  h.options.shards = 4;
  h.open({ticket(Duration{0}, h.clock, false)});
  auto id = h.orch->start("ticket", Json::object());
  REQUIRE(id.ok());
  auto value = [&](const std::string& key) -> std::string {
    auto r = h.orch->record(*id, key);
    REQUIRE(r.ok());
    return *r ? (*r)->value : "<none>";
  };
  REQUIRE(h.orch->write_records(*id, {{"t/" + *id, "old", 0, ""}, {"extra", "1", 0, ""}}, true).ok());
  CHECK(value("t/" + *id) == "COMPLETED");  // written by the saga: kept
  CHECK(value("extra") == "1");
  REQUIRE(h.orch->write_records(*id, {{"extra", "2", 0, ""}}).ok());
  CHECK(value("extra") == "2");
  // Refused: another shard's key, an empty key, a negative expiry.
  std::string other = "x";
  while (shard_of(other, 4) == shard_of(*id, 4)) other += "x";
  CHECK(h.orch->write_records(*id, {{"k", "v", 0, other}}).code() == StatusCode::kInvalidArgument);
  CHECK(h.orch->write_records(*id, {{"", "v", 0, ""}}).code() == StatusCode::kInvalidArgument);
  CHECK(h.orch->write_records(*id, {{"k", "v", -1, ""}}).code() == StatusCode::kInvalidArgument);
  h.close();
  h.open({ticket(Duration{0}, h.clock, false)});
  CHECK(value("extra") == "2");
}

TEST_CASE("with the changelog, records come back with a lost store") {
  Harness h;
  h.options.changelog = true;
  h.options.shards = 3;
  h.open({ticket(Duration{0}, h.clock, false)});
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(*h.orch->start("ticket", Json::object()));
  REQUIRE(h.orch->write_records(ids[0], {{"backfilled", "b", 0, ""}}).ok());
  h.close();
  std::filesystem::remove_all(h.dir());
  h.open({ticket(Duration{0}, h.clock, false)});
  for (const std::string& id : ids) {
    auto r = h.orch->record(id, "t/" + id);
    REQUIRE(r.ok());
    CHECK(r->has_value());
  }
  auto backfilled = h.orch->record(ids[0], "backfilled");
  REQUIRE(backfilled.ok());
  REQUIRE(backfilled->has_value());
  CHECK((*backfilled)->value == "b");
}

// ---------------------------------------------------------------------- list

// Five sagas: booking x2 COMPLETED, booking COMPENSATED, transfer COMPLETED,
// booking RUNNING (payment paused).
struct Population {
  std::vector<std::string> completed_bookings, all;
  std::string compensated, transfer_id, running;
};

Population populate(Harness& h) {
  Population p;
  for (int i = 0; i < 2; ++i) {
    p.completed_bookings.push_back(h.start());
    h.drive();
    h.clock->advance(Duration{10});
  }
  h.inventory.script("reserve", {first(1, fail())});
  p.compensated = h.start();
  h.drive();
  h.clock->advance(Duration{10});
  auto t = h.orch->start("transfer", {{"amount", 5}});
  REQUIRE(t.ok());
  p.transfer_id = *t;
  h.drive();
  h.clock->advance(Duration{10});
  h.payment.set_paused(true);
  p.running = h.start();
  h.drive();
  p.all = p.completed_bookings;
  p.all.insert(p.all.end(), {p.compensated, p.transfer_id, p.running});
  return p;
}

TEST_CASE("list filters by type and by state") {
  Harness h;
  h.open({booking(), transfer()});
  const Population p = populate(h);

  ListQuery q;
  CHECK(list_all(*h.orch, q) == p.all);
  q.type = "transfer";
  CHECK(list_all(*h.orch, q) == std::vector<std::string>{p.transfer_id});
  q.type = "booking";
  CHECK(list_all(*h.orch, q).size() == 4);
  q.state = SagaState::kCompleted;
  CHECK(list_all(*h.orch, q) == p.completed_bookings);
  q.type.reset();
  CHECK(list_all(*h.orch, q).size() == 3);
  q.state = SagaState::kRunning;
  CHECK(list_all(*h.orch, q) == std::vector<std::string>{p.running});
  q.state = SagaState::kCompensated;
  CHECK(list_all(*h.orch, q) == std::vector<std::string>{p.compensated});
  q.type = "nothing-like-it";
  q.state.reset();
  CHECK(list_all(*h.orch, q).empty());

  // Each saga of the population was created 10 ms after the one before.
  ListQuery window;
  window.created_from_ms = h.view(p.compensated).created_ms;
  CHECK(list_all(*h.orch, window) ==
        std::vector<std::string>{p.compensated, p.transfer_id, p.running});
  window.created_to_ms = h.view(p.transfer_id).created_ms;  // exclusive
  CHECK(list_all(*h.orch, window) == std::vector<std::string>{p.compensated});
}

TEST_CASE("list pages of two cover every saga exactly once, oldest first") {
  Harness h;
  h.open({booking(), transfer()});
  const Population p = populate(h);

  ListQuery q;
  q.limit = 2;
  std::vector<size_t> page_sizes;
  std::vector<std::string> seen;
  std::vector<int64_t> created;
  for (int i = 0; i < 10; ++i) {
    auto page = h.orch->list(q);
    REQUIRE(page.ok());
    page_sizes.push_back(page->items.size());
    for (const SagaView& v : page->items) {
      seen.push_back(v.id);
      created.push_back(v.created_ms);
    }
    if (page->next_page_token.empty()) break;
    q.page_token = page->next_page_token;
  }
  CHECK(page_sizes == std::vector<size_t>{2, 2, 1});
  CHECK(seen.size() == 5);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 5);
  CHECK(std::is_sorted(created.begin(), created.end()));
  CHECK(seen == p.all);

  ListQuery bookings;
  bookings.type = "booking";
  bookings.limit = 2;
  auto first_page = h.orch->list(bookings);
  REQUIRE(first_page.ok());
  REQUIRE_FALSE(first_page->next_page_token.empty());
  bookings.page_token = first_page->next_page_token;
  auto second_page = h.orch->list(bookings);
  REQUIRE(second_page.ok());
  CHECK(second_page->items.size() == 2);
  CHECK(second_page->next_page_token.empty());  // exactly used up: no empty third page

  // list_token() after a page's last saga is that page's next_page_token, for
  // every filter; owned_only changes nothing without replicas (all is here).
  ListQuery running;
  running.state = SagaState::kRunning;
  int continued = 0;
  for (ListQuery f : {ListQuery{}, bookings, running}) {
    f.limit = 1;
    f.page_token.clear();
    auto page = h.orch->list(f);
    REQUIRE(page.ok());
    REQUIRE(page->items.size() == 1);
    if (!page->next_page_token.empty()) {  // (one running saga: no next page)
      ++continued;
      CHECK(list_token(f, page->items[0].created_ms, page->items[0].id) ==
            page->next_page_token);
    }
    f.owned_only = true;
    auto owned = h.orch->list(f);
    REQUIRE(owned.ok());
    CHECK(owned->items.at(0).id == page->items[0].id);
    CHECK(owned->next_page_token == page->next_page_token);
  }
  CHECK(continued == 2);
}

TEST_CASE("list rejects a bad limit and a garbage page token with InvalidArgument") {
  Harness h;
  h.open({booking(), transfer()});
  populate(h);

  ListQuery q;
  q.limit = 0;
  CHECK(h.orch->list(q).status().code() == StatusCode::kInvalidArgument);
  q.limit = 1001;
  CHECK(h.orch->list(q).status().code() == StatusCode::kInvalidArgument);
  q.limit = 1000;
  CHECK(h.orch->list(q).ok());

  q.page_token = "not a token";
  CHECK(h.orch->list(q).status().code() == StatusCode::kInvalidArgument);
  q.page_token = "abc";  // odd length
  CHECK(h.orch->list(q).status().code() == StatusCode::kInvalidArgument);

  // A well-formed token from another query does not fit this one.
  ListQuery all;
  all.limit = 1;
  auto page = h.orch->list(all);
  REQUIRE(page.ok());
  REQUIRE_FALSE(page->next_page_token.empty());
  ListQuery transfers;
  transfers.type = "transfer";
  transfers.page_token = page->next_page_token;
  CHECK(h.orch->list(transfers).status().code() == StatusCode::kInvalidArgument);
}

// --------------------------------------------------------------------- start

TEST_CASE("start of an unknown saga type fails with NotFound") {
  Harness h;
  h.open();
  auto r = h.orch->start("no-such-type", Json::object());
  CHECK(r.status().code() == StatusCode::kNotFound);
  CHECK(list_all(*h.orch, ListQuery{}).empty());
}

TEST_CASE("starting the same id twice fails with AlreadyExists") {
  Harness h;
  h.open();
  StartOptions so;
  so.id = "order-42";
  CHECK(h.start(Json{{"qty", 1}}, so) == "order-42");
  CHECK(h.orch->start("booking", Json::object(), so).status().code() == StatusCode::kAlreadyExists);
  h.drive();
  CHECK(h.orch->start("booking", Json::object(), so).status().code() == StatusCode::kAlreadyExists);

  h.close();  // the id is only on disk now
  h.open();
  CHECK(h.orch->start("booking", Json::object(), so).status().code() == StatusCode::kAlreadyExists);
  CHECK(h.inventory.received("reserve").size() == 1);
}

TEST_CASE("start_async delivers the new saga's id to its callback once it is durable") {
  Harness h;
  h.open();
  std::vector<StatusOr<std::string>> results;
  auto collect = [&results](StatusOr<std::string> id) { results.push_back(std::move(id)); };
  StartOptions named;
  named.id = "order-7";

  h.orch->start_async("booking", {{"qty", 1}}, named, collect);
  h.orch->start_async("booking", {{"qty", 2}}, StartOptions{}, collect);
  h.orch->start_async("no-such-type", Json::object(), StartOptions{}, collect);
  CHECK(results.empty());  // nothing happens before the engine runs
  h.orch->run_once();

  REQUIRE(results.size() == 3);
  REQUIRE(results[0].ok());
  CHECK(*results[0] == "order-7");
  REQUIRE(results[1].ok());
  CHECK_FALSE(results[1]->empty());
  CHECK(h.orch->get(*results[1]).ok());
  CHECK(results[2].status().code() == StatusCode::kNotFound);
  h.drive();
  CHECK(h.state("order-7") == SagaState::kCompleted);
  CHECK(h.state(*results[1]) == SagaState::kCompleted);
}

// -------------------------------------------------------------- group commit

TEST_CASE("one iteration writes a hundred started sagas in far fewer writes than transitions") {
  Harness h;
  h.open();
  std::vector<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    h.orch->start_async("booking", {{"qty", 1}}, StartOptions{}, [&ids](StatusOr<std::string> id) {
      REQUIRE(id.ok());
      ids.push_back(*id);
    });
  }
  const EngineStats before = h.orch->stats();

  h.orch->run_once();

  const EngineStats after = h.orch->stats();
  CHECK(ids.size() == 100);
  CHECK(after.transitions - before.transitions == 100);
  CHECK(after.writes - before.writes == 1);
  CHECK(after.in_flight == 100);
  h.drive();
  for (const std::string& id : ids) CHECK(h.state(id) == SagaState::kCompleted);
  const EngineStats end = h.orch->stats();
  CHECK(end.writes * 10 < end.transitions);
}

// Regression: Options::max_batch was validated in Orchestrator::open() but
// never used: iterate() put every request, reply and timer of an iteration
// into one WriteBatch, however many there are.
TEST_CASE("a write holds at most max_batch transitions") {
  Harness h;
  h.options.max_batch = 10;
  h.open();
  size_t answered = 0;
  for (int i = 0; i < 100; ++i) {
    h.orch->start_async("booking", {{"qty", 1}}, StartOptions{},
                        [&answered](StatusOr<std::string> id) {
                          CHECK(id.ok());
                          ++answered;
                        });
  }
  const EngineStats before = h.orch->stats();

  for (int i = 0; i < 100 && answered < 100; ++i) h.orch->run_once();

  const EngineStats after = h.orch->stats();
  REQUIRE(answered == 100);
  CHECK(after.transitions - before.transitions == 100);
  CHECK(after.writes - before.writes >= 10);
}

// ------------------------------------------------------------- domain events

// Collects every event published on one stream of the bus.
struct EventSink {
  explicit EventSink(MemoryBus& bus, const std::string& stream) : endpoint(bus.connect("sink")) {
    REQUIRE(endpoint
                ->subscribe(stream,
                            [this](Message m, Transport::Ack ack) {
                              events.push_back(std::move(m));
                              ack();
                            })
                .ok());
  }
  std::vector<std::string> types() {
    endpoint->poll(Duration{0});
    std::vector<std::string> out;
    for (const Message& m : events) out.push_back(m.type);
    return out;
  }
  std::unique_ptr<Transport> endpoint;
  std::vector<Message> events;
};

DefinitionPtr booking_with_events() {
  auto def = DefinitionBuilder("booking", 1)
                 .command("reserve", "inventory", "reserve")
                 .compensate("inventory", "release")
                 .timeout(kTimeout)
                 .retry(kQuickRetry)
                 .command("pay", "payment", "charge")
                 .compensate("payment", "refund")
                 .timeout(kTimeout)
                 .retry(kQuickRetry)
                 .on_state_change([](const SagaView& v, std::optional<SagaState> previous) {
                   Message m;
                   m.destination = "reserveplace";
                   m.type = !previous ? "ReservationPlaced"
                                      : std::string("Saga") + std::string(to_string(v.state));
                   m.payload = Json{{"orderId", v.id}}.dump();
                   return std::vector<Message>{m};
                 })
                 .build();
  REQUIRE(def.ok());
  return *def;
}

TEST_CASE("state changes publish the definition's domain events through the outbox") {
  Harness h;
  h.open({booking_with_events()});
  EventSink sink(*h.bus, "reserveplace");

  const std::string ok = h.start();
  h.drive();
  CHECK(h.state(ok) == SagaState::kCompleted);
  CHECK(sink.types() == std::vector<std::string>{"ReservationPlaced", "SagaCOMPLETED"});
  const Message& placed = sink.events.at(0);
  CHECK(placed.kind == MessageKind::kEvent);
  CHECK(placed.id == ok + "/RUNNING");
  CHECK(placed.key == ok);
  CHECK(placed.saga_id == ok);
  CHECK(placed.traceparent == h.view(ok).traceparent);
  CHECK(Json::parse(placed.payload)["orderId"] == ok);

  h.payment.script("charge", {fail("card declined")});
  const std::string declined = h.start();
  h.drive();
  CHECK(h.state(declined) == SagaState::kCompensated);
  CHECK(sink.types() == std::vector<std::string>{"ReservationPlaced", "SagaCOMPLETED",
                                                 "ReservationPlaced", "SagaCOMPENSATING",
                                                 "SagaCOMPENSATED"});
}

// Holds the delivery reports of events until `release` is set; then hands
// them over in its next poll(). Everything else passes straight through.
class EventReportGate : public Transport {
 public:
  explicit EventReportGate(std::shared_ptr<Transport> inner) : inner_(std::move(inner)) {}
  Status subscribe(std::string_view destination, Handler handler) override {
    return inner_->subscribe(destination, std::move(handler));
  }
  void send(Message message, SendCallback on_sent) override {
    if (message.kind != MessageKind::kEvent) return inner_->send(std::move(message), on_sent);
    inner_->send(std::move(message), [this, on_sent](Status s) { held_.emplace_back(on_sent, s); });
  }
  size_t poll(std::chrono::milliseconds max_wait) override {
    size_t n = inner_->poll(max_wait);
    if (!release) return n;
    for (auto& [callback, status] : held_) callback(status);
    n += held_.size();
    held_.clear();
    return n;
  }
  Status health() const override { return inner_->health(); }

  bool release = false;

 private:
  std::shared_ptr<Transport> inner_;
  std::vector<std::pair<SendCallback, Status>> held_;
};

TEST_CASE("commands of a write wait until the write's domain events are confirmed") {
  Harness h;
  std::shared_ptr<EventReportGate> gate;
  h.wrap_endpoint = [&gate](std::shared_ptr<Transport> inner) {
    gate = std::make_shared<EventReportGate>(std::move(inner));
    return gate;
  };
  h.open({booking_with_events()});
  EventSink sink(*h.bus, "reserveplace");

  const std::string id = h.start();
  for (int i = 0; i < 5; ++i) {
    h.orch->run_once();
    h.inventory.poll();
  }
  // ReservationPlaced is out, unconfirmed: the reserve command it precedes waits.
  CHECK(sink.types() == std::vector<std::string>{"ReservationPlaced"});
  CHECK(h.inventory.received().empty());

  gate->release = true;
  h.drive();
  CHECK(h.state(id) == SagaState::kCompleted);
  CHECK(h.inventory.received("reserve").size() == 1);
  CHECK(sink.types() == std::vector<std::string>{"ReservationPlaced", "SagaCOMPLETED"});
}

TEST_CASE("sagas spread over four shards on two engine threads each end once, all listed") {
  Harness h;
  h.options.shards = 4;
  h.options.threads = 2;
  std::mutex mu;
  std::set<std::thread::id> settled_on;
  std::multiset<std::string> settled;
  h.options.on_settled = [&](const SagaView& v) {
    std::lock_guard lock(mu);
    settled_on.insert(std::this_thread::get_id());
    settled.insert(v.id);
  };
  h.open();
  h.orch->start_background();
  std::set<std::string> ids;
  std::set<uint32_t> shards;
  for (int i = 0; i < 200; ++i) {
    const std::string id = h.start();  // generated ids: each goes to its shard
    ids.insert(id);
    shards.insert(shard_of(id, 4));
  }
  CHECK(ids.size() == 200);
  CHECK(shards.size() == 4);
  const bool finished = testing::eventually([&] {
    h.inventory.poll();
    h.payment.poll();
    return h.orch->stats().in_flight == 0;
  });
  h.orch->stop();
  REQUIRE_MESSAGE(finished, h.orch->stats().in_flight << " sagas still in flight");
  for (const std::string& id : ids) CHECK(h.state(id) == SagaState::kCompleted);
  CHECK(h.inventory.received("reserve").size() == 200);
  CHECK(h.payment.received("charge").size() == 200);
  CHECK(h.inventory.received("confirm").size() == 200);
  CHECK(settled.size() == 200);
  CHECK(std::set<std::string>(settled.begin(), settled.end()) == ids);  // once each
  CHECK(settled_on.size() == 2);  // both engine threads settled sagas

  ListQuery q;
  q.limit = 7;
  const std::vector<std::string> listed = list_all(*h.orch, q);
  CHECK(listed.size() == 200);
  CHECK(std::set<std::string>(listed.begin(), listed.end()) == ids);
  int64_t last_created = 0;
  for (const std::string& id : listed) {  // oldest first across shards
    const int64_t created = h.view(id).created_ms;
    CHECK(created >= last_created);
    last_created = created;
  }
}

TEST_CASE("list pages stay full across shards when most entries do not match the filter") {
  Harness h;
  h.options.shards = 4;
  h.open();
  h.payment.script("charge", {first(9, fail("card declined"))});
  std::vector<std::string> completed;
  for (int i = 0; i < 12; ++i) {
    const std::string id = h.start();
    h.drive();
    if (h.state(id) == SagaState::kCompleted) completed.push_back(id);
    h.clock->advance(Duration{10});  // creation order is list order
  }
  REQUIRE(completed.size() == 3);
  ListQuery q;
  q.type = "booking";
  q.state = SagaState::kCompleted;  // type index, state filtered in memory
  q.limit = 1;
  CHECK(list_all(*h.orch, q) == completed);
  q.limit = 2;
  auto page = h.orch->list(q);
  REQUIRE(page.ok());
  CHECK(ids_of(*page) == std::vector<std::string>{completed[0], completed[1]});
  CHECK_FALSE(page->next_page_token.empty());
}

TEST_CASE("a store keeps its shard count: reopened without one it has it, with another it fails") {
  Harness h;
  h.options.shards = 1;  // as every store written before shards existed
  h.open();
  const std::string id = h.start();
  h.drive();
  REQUIRE(h.state(id) == SagaState::kCompleted);
  h.close();
  h.options.shards = 0;  // a user who sets nothing keeps the store's count
  h.open();
  CHECK(h.state(id) == SagaState::kCompleted);
  const std::string next = h.start();
  h.drive();
  CHECK(h.state(next) == SagaState::kCompleted);
  h.close();
  h.options.shards = 4;
  const Status s = h.try_open({booking()});
  CHECK(s.code() == StatusCode::kFailedPrecondition);
  CHECK_MESSAGE(s.message().find("1 shard(s), not 4") != std::string::npos, s.to_string());
}


// Replicas of one orchestrator over one MemoryBus, each with its own store
// and the changelog; sagas are started through the owner of their shard.
struct ReplicaSet {
  explicit ReplicaSet(Harness& harness) : h(harness) {}

  Harness& h;
  TempDir dirs;
  std::mutex mu;
  std::map<std::string, int> settled;  // saga id -> on_settled calls, on any replica
  std::map<int, std::unique_ptr<Orchestrator>> replicas;
  std::vector<std::string> ids;  // the sagas started

  void open(int i, bool standby = false) {
    Options o = h.options;
    o.data_dir = (dirs.path() / ("replica-" + std::to_string(i))).string();
    o.shards = 4;
    o.changelog = true;
    o.replicas = true;
    o.standby = standby;
    o.advertised_address = "replica-" + std::to_string(i);
    o.on_settled = [this](const SagaView& v) {
      std::lock_guard lock(mu);
      ++settled[v.id];
    };
    auto r = Orchestrator::open(
        o, std::shared_ptr<Transport>(h.bus->connect("orchestrator-" + std::to_string(i))),
        {booking()});
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    replicas[i] = std::move(*r);
  }
  Orchestrator& at(int i) { return *replicas.at(i); }
  uint64_t owned(int i) { return at(i).stats().shards_owned; }
  // The replica an address names ("replica-N").
  Orchestrator& named(const std::string& address) {
    return at(std::stoi(address.substr(address.find('-') + 1)));
  }
  // Whether every replica agrees on the owner of saga `id`'s shard: one
  // says here, every other one names its address (the owners table).
  bool agreed(const std::string& id) {
    int here = 0;
    for (auto& [i, o] : replicas) here += o->owner_of(id).where == ShardOwner::Where::kHere;
    if (here != 1) return false;
    for (auto& [i, o] : replicas) {
      const ShardOwner w = o->owner_of(id);
      if (w.where == ShardOwner::Where::kHere) continue;
      if (w.where != ShardOwner::Where::kElsewhere) return false;
      if (named(w.address).owner_of(id).where != ShardOwner::Where::kHere) return false;
    }
    return true;
  }
  bool all_agreed() {
    for (int k = 0; k < 16; ++k)
      if (!agreed("probe-" + std::to_string(k))) return false;
    return true;
  }
  // Drives every replica and the participants until `done`, or gives up.
  bool run(const std::function<bool()>& done) {
    for (int round = 0; round < 20'000 && !done(); ++round) {
      for (auto& [i, o] : replicas) o->run_once();
      h.inventory.poll();
      h.payment.poll();
      if (round % 10 == 9) h.clock->advance(Duration{50});  // timeouts resend what moved
    }
    return done();
  }
  // Starts `n` sagas through the first replica: there when it owns the
  // saga's shard, else on the replica whose address it names.
  void start(int n) {
    for (int k = 0; k < n; ++k) {
      StartOptions so;
      so.id = "b-" + std::to_string(ids.size());
      Orchestrator* first = replicas.begin()->second.get();
      const ShardOwner w = first->owner_of(so.id);
      Orchestrator* target = first;
      if (w.where == ShardOwner::Where::kElsewhere) {
        target = &named(w.address);
      } else {
        REQUIRE_MESSAGE(w.where == ShardOwner::Where::kHere, so.id << ": owner unknown");
      }
      auto r = target->start("booking", Json{{"qty", 1}}, so);
      REQUIRE_MESSAGE(r.ok(), so.id << ": " << r.status().to_string());
      CHECK(target->owner_of(so.id).where == ShardOwner::Where::kHere);
      ids.push_back(so.id);
    }
  }
  bool all_settled() {
    std::lock_guard lock(mu);
    return settled.size() == ids.size();
  }
  // Every saga settled once, and replica `i` shows each one Completed.
  void check_completed_once(int i) {
    for (const auto& [id, n] : settled) CHECK_MESSAGE(n == 1, id << " settled " << n << " times");
    for (const std::string& id : ids) {
      auto v = at(i).get(id);
      REQUIRE_MESSAGE(v.ok(), v.status().to_string());
      CHECK_MESSAGE(v->state == SagaState::kCompleted, id << " is " << to_string(v->state));
    }
    CHECK(at(i).stats().in_flight == 0);
  }
};

// The group moves shards between replicas: a join, a leave and an expiry
// with sagas waiting for replies.
TEST_CASE("replicas: sagas move with their shards between replicas and each settles once") {
  Harness h;
  ReplicaSet set(h);
  auto& replicas = set.replicas;
  auto open_replica = [&](int i) { set.open(i); };
  auto owned = [&](int i) { return set.owned(i); };
  auto all_agreed = [&] { return set.all_agreed(); };
  auto run = [&](const std::function<bool()>& done) { return set.run(done); };
  auto start = [&](int n) { set.start(n); };
  auto all_settled = [&] { return set.all_settled(); };

  open_replica(1);
  REQUIRE(run([&] { return owned(1) == 4 && all_agreed(); }));
  h.payment.set_paused(true);  // sagas wait for their charge's reply
  start(40);
  run([&] { return h.inventory.received("reserve").size() >= 40; });

  open_replica(2);  // takes two shards, with their waiting sagas
  REQUIRE(run([&] { return owned(1) == 2 && owned(2) == 2 && all_agreed(); }));
  CHECK_MESSAGE(replicas.at(1)->metrics_text().find("saga_engine{gauge=\"shards_owned\"} 2") !=
                    std::string::npos,
                replicas.at(1)->metrics_text());
  // A replica names the other for the shards it does not own.
  int elsewhere = 0;
  for (int k = 0; k < 16; ++k) {
    const ShardOwner w = replicas.at(1)->owner_of("probe-" + std::to_string(k));
    if (w.where == ShardOwner::Where::kElsewhere) {
      CHECK(w.address == "replica-2");
      ++elsewhere;
    }
  }
  CHECK(elsewhere > 0);
  h.payment.set_paused(false);
  start(40);
  REQUIRE(run(all_settled));

  h.payment.set_paused(true);
  start(40);
  run([&] { return h.inventory.received("reserve").size() >= 120; });
  replicas.erase(1);  // leaves: the other takes its shards
  REQUIRE(run([&] { return owned(2) == 4 && all_agreed(); }));
  h.bus->expire("orchestrator-2");  // presumed dead, then back
  h.payment.set_paused(false);
  REQUIRE(run([&] { return owned(2) == 4 && all_settled(); }));
  set.check_completed_once(2);
  // Without a standby copy, taking shards over replays their changelogs.
  CHECK(replicas.at(2)->stats().restored_records > 0);
  CHECK(replicas.at(2)->stats().standby_records == 0);

  Options plain = h.options;
  plain.data_dir = (set.dirs.path() / "plain").string();
  plain.replicas = true;
  auto refused = Orchestrator::open(plain, std::shared_ptr<Transport>(h.bus->connect("x")),
                                    {booking()});
  CHECK(refused.status().code() == StatusCode::kInvalidArgument);  // replicas need the changelog
  plain.changelog = true;
  plain.replicas = false;
  plain.standby = true;
  refused = Orchestrator::open(plain, std::shared_ptr<Transport>(h.bus->connect("y")), {booking()});
  CHECK(refused.status().code() == StatusCode::kInvalidArgument);  // a standby needs replicas
}

// A standby replica copies the shards it does not own from their
// changelogs as they are written, so that taking them over replays nothing:
// the sagas waiting in them go on from the copy alone.
TEST_CASE("replicas: a standby copy makes taking shards over replay nothing") {
  Harness h;
  ReplicaSet set(h);
  set.open(1, /*standby=*/true);
  REQUIRE(set.run([&] { return set.owned(1) == 4 && set.all_agreed(); }));
  set.open(2, /*standby=*/true);
  REQUIRE(set.run([&] { return set.owned(1) == 2 && set.owned(2) == 2 && set.all_agreed(); }));
  h.payment.set_paused(true);  // sagas wait for their charge's reply
  set.start(40);
  set.run([&] { return h.inventory.received("reserve").size() >= 40; });

  // Replica 2 never owned replica 1's shards: its copy of them starts at
  // offset 0 and is complete when it holds every record of their logs. The
  // copy runs on its own thread: wait for it, driving nothing meanwhile.
  uint64_t ones = 0;  // records in the logs of replica 1's shards
  for (uint32_t k = 0; k < 4; ++k) {
    for (int n = 0;; ++n) {
      const std::string probe = "probe-" + std::to_string(n);
      if (set.at(1).owner_of(probe).shard != k) continue;
      if (set.at(1).owner_of(probe).where == ShardOwner::Where::kHere)
        ones += h.bus->log_end("orchestrator.changelog", k);
      break;
    }
  }
  REQUIRE(ones > 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (set.at(2).stats().standby_records < ones && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE(set.at(2).stats().standby_records == ones);
  const uint64_t restored_before = set.at(2).stats().restored_records;

  set.replicas.erase(1);  // leaves: replica 2 takes its shards from its copy
  h.payment.set_paused(false);
  REQUIRE(set.run([&] { return set.owned(2) == 4 && set.all_settled(); }));
  set.check_completed_once(2);
  CHECK(set.at(2).stats().restored_records == restored_before);
  CHECK(set.at(2).metrics_text().find("saga_engine{gauge=\"standby_records\"} " +
                                      std::to_string(ones)) != std::string::npos);
}

}  // namespace
}  // namespace saga
