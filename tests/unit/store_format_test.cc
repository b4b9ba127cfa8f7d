// The stored formats of libsaga/src (docs/storage.md): the instance record
// codec, the outbox and inbox records, including records written by older
// versions.
#include <doctest/doctest.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>
#include <string>

#include "inbox.h"
#include "instance.h"
#include "outbox.h"
#include "saga/definition.h"
#include "saga/memory_transport.h"
#include "saga/orchestrator.h"
#include "store/families.h"
#include "store/store.h"
#include "support/scripted_participant.h"
#include "support/temp_dir.h"

namespace saga::internal {
namespace {

Instance sample() {
  Instance inst;
  SagaView& v = inst.view;
  v.id = "saga-1";
  v.type = "booking";
  v.version = 3;
  v.state = SagaState::kCompensating;
  v.data = Json{{"qty", 2}, {"amount", 1234}, {"name", "Zoë"}, {"neg", -7}};
  for (int i = 0; i < 3; ++i) {
    StepView s;
    s.name = "step" + std::to_string(i);
    s.status = static_cast<StepStatus>(i + 1);
    s.attempts = 300u + static_cast<uint32_t>(i);
    s.compensation_attempts = static_cast<uint32_t>(i);
    s.started_ms = 1'700'000'000'000 + i;
    s.finished_ms = i == 2 ? 0 : 1'700'000'000'100 + i;
    s.compensated_ms = -1;
    s.last_error = i == 1 ? std::string("bad\0byte", 8) : "";
    s.round = static_cast<uint32_t>(i);
    s.compensation_round = 70000;
    v.steps.push_back(s);
  }
  v.current_step = 1;
  v.traceparent = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01";
  v.last_error = "refused";
  v.cancel_requested = true;
  v.created_ms = 1'700'000'000'000;
  v.updated_ms = 1'700'000'000'500;
  v.finished_ms = 0;
  inst.awaiting = "saga-1/1/c.2";
  inst.attempt = 4;
  inst.timer = TimerKind::kDeadline;
  inst.timer_due_ms = 1'700'000'005'000;
  inst.attempt_base = 2;
  inst.uncertain = true;
  inst.fingerprint = 0xfedcba9876543210ULL;
  return inst;
}

// sample() with a timeline (format 4): an entry of every kind of field,
// command ids of its own saga (stored without the id) and of another.
Instance sample_with_timeline() {
  Instance inst = sample();
  SagaView& v = inst.view;
  v.timeline_dropped = 300;
  TimelineEntry started;
  started.at_ms = v.created_ms;
  started.command_id = "saga-1/0/a";
  started.step_status = StepStatus::kRunning;
  started.attempt = 1;
  v.timeline.push_back(started);
  TimelineEntry refused;
  refused.at_ms = -5;
  refused.event = TimelineEvent::kStepRefused;
  refused.state = SagaState::kCompensating;
  refused.step = 70000;
  refused.step_status = StepStatus::kFailed;
  refused.attempt = 4;
  refused.command_id = "saga-10/1/c.2";  // another saga's prefix: kept whole
  refused.error = std::string("no\0room", 7);
  v.timeline.push_back(refused);
  TimelineEntry skip;
  skip.event = TimelineEvent::kOperatorSkip;
  skip.state = SagaState::kCompensated;
  skip.step_status = StepStatus::kCompensationSkipped;
  skip.command_id = "saga-1/";  // the id and a slash only
  skip.actor = "ops";
  skip.reason = "refunded by hand";
  v.timeline.push_back(skip);
  return inst;
}

void check_same(const Instance& a, const Instance& b) {
  const SagaView& x = a.view;
  const SagaView& y = b.view;
  CHECK(x.id == y.id);
  CHECK(x.type == y.type);
  CHECK(x.version == y.version);
  CHECK(x.state == y.state);
  CHECK(x.data == y.data);
  REQUIRE(x.steps.size() == y.steps.size());
  for (size_t i = 0; i < x.steps.size(); ++i) {
    CHECK(x.steps[i].name == y.steps[i].name);
    CHECK(x.steps[i].status == y.steps[i].status);
    CHECK(x.steps[i].attempts == y.steps[i].attempts);
    CHECK(x.steps[i].compensation_attempts == y.steps[i].compensation_attempts);
    CHECK(x.steps[i].started_ms == y.steps[i].started_ms);
    CHECK(x.steps[i].finished_ms == y.steps[i].finished_ms);
    CHECK(x.steps[i].compensated_ms == y.steps[i].compensated_ms);
    CHECK(x.steps[i].last_error == y.steps[i].last_error);
    CHECK(x.steps[i].round == y.steps[i].round);
    CHECK(x.steps[i].compensation_round == y.steps[i].compensation_round);
  }
  CHECK(x.current_step == y.current_step);
  CHECK(x.traceparent == y.traceparent);
  CHECK(x.last_error == y.last_error);
  CHECK(x.cancel_requested == y.cancel_requested);
  CHECK(x.created_ms == y.created_ms);
  CHECK(x.updated_ms == y.updated_ms);
  CHECK(x.finished_ms == y.finished_ms);
  CHECK(a.awaiting == b.awaiting);
  CHECK(a.attempt == b.attempt);
  CHECK(a.timer == b.timer);
  CHECK(a.timer_due_ms == b.timer_due_ms);
  CHECK(a.attempt_base == b.attempt_base);
  CHECK(a.uncertain == b.uncertain);
  CHECK(x.timeline_dropped == y.timeline_dropped);
  REQUIRE(x.timeline.size() == y.timeline.size());
  for (size_t i = 0; i < x.timeline.size(); ++i) {
    const TimelineEntry& p = x.timeline[i];
    const TimelineEntry& q = y.timeline[i];
    CHECK(p.at_ms == q.at_ms);
    CHECK(p.event == q.event);
    CHECK(p.state == q.state);
    CHECK(p.step == q.step);
    CHECK(p.step_status == q.step_status);
    CHECK(p.attempt == q.attempt);
    CHECK(p.command_id == q.command_id);
    CHECK(p.error == q.error);
    CHECK(p.actor == q.actor);
    CHECK(p.reason == q.reason);
  }
}

// What libsaga wrote before the binary record (format 1).
std::string encode_format1(const Instance& inst) {
  const SagaView& v = inst.view;
  Json steps = Json::array();
  for (const StepView& s : v.steps) {
    steps.push_back({{"n", s.name},
                     {"s", static_cast<int>(s.status)},
                     {"a", s.attempts},
                     {"ca", s.compensation_attempts},
                     {"t0", s.started_ms},
                     {"t1", s.finished_ms},
                     {"t2", s.compensated_ms},
                     {"e", s.last_error},
                     {"r", s.round},
                     {"cr", s.compensation_round}});
  }
  Json j = {{"id", v.id},
            {"type", v.type},
            {"ver", v.version},
            {"st", static_cast<int>(v.state)},
            {"data", v.data},
            {"steps", std::move(steps)},
            {"cur", v.current_step},
            {"tp", v.traceparent},
            {"err", v.last_error},
            {"cx", v.cancel_requested},
            {"c", v.created_ms},
            {"u", v.updated_ms},
            {"f", v.finished_ms},
            {"aw", inst.awaiting},
            {"at", inst.attempt},
            {"tk", static_cast<int>(inst.timer)},
            {"td", inst.timer_due_ms},
            {"ab", inst.attempt_base},
            {"un", inst.uncertain}};
  std::vector<uint8_t> bytes = Json::to_msgpack(j);
  return std::string(bytes.begin(), bytes.end());
}

TEST_CASE("instance record: round trip of every field") {
  Instance inst = sample_with_timeline();
  const std::string bytes = encode_instance(inst);
  CHECK(static_cast<uint8_t>(bytes[0]) == 0x04);
  // An own command id is stored without the saga's id.
  CHECK(bytes.find("saga-1/0/a") == std::string::npos);
  StatusOr<Instance> back = decode_instance(bytes);
  REQUIRE(back.ok());
  check_same(inst, *back);
  CHECK(back->fingerprint == inst.fingerprint);
  // The cached data encoding is what decoding found, so re-encoding is stable.
  Instance again = *back;
  CHECK(encode_instance(again) == bytes);
}

TEST_CASE("instance record: the data cache follows data_changed()") {
  Instance inst = sample();
  (void)encode_instance(inst);
  inst.view.data["qty"] = 5;
  inst.data_changed();
  StatusOr<Instance> back = decode_instance(encode_instance(inst));
  REQUIRE(back.ok());
  CHECK(back->view.data["qty"] == 5);
}

TEST_CASE("instance record: format 1 (MessagePack) records still decode") {
  Instance inst = sample();
  StatusOr<Instance> back = decode_instance(encode_format1(inst));
  REQUIRE(back.ok());
  check_same(inst, *back);
  CHECK(back->fingerprint == 0);
}

// Format 4 without a timeline: its last two bytes (none dropped, no entries)
// are zero.
std::string encode_format3(Instance& inst) {
  REQUIRE(inst.view.timeline.empty());
  std::string bytes = encode_instance(inst);
  REQUIRE(bytes.substr(bytes.size() - 2) == std::string(2, '\0'));
  bytes.resize(bytes.size() - 2);
  bytes[0] = '\x03';
  return bytes;
}

TEST_CASE("instance record: format 3 records (format 4 without the timeline) still decode") {
  Instance inst = sample();
  std::string bytes = encode_format3(inst);
  StatusOr<Instance> back = decode_instance(bytes);
  REQUIRE(back.ok());
  check_same(inst, *back);
  CHECK(back->fingerprint == inst.fingerprint);
  bytes.push_back('\0');  // a format 3 record must end after the fingerprint
  CHECK(decode_instance(bytes).status().code() == StatusCode::kDataLoss);
}

TEST_CASE("instance record: format 2 records (format 3 without the fingerprint) still decode") {
  Instance inst = sample();
  inst.fingerprint = 0;  // one byte, 0x00, at the end of format 3
  std::string bytes = encode_format3(inst);
  REQUIRE(bytes.back() == '\0');
  bytes.pop_back();
  bytes[0] = '\x02';
  StatusOr<Instance> back = decode_instance(bytes);
  REQUIRE(back.ok());
  check_same(inst, *back);
  CHECK(back->fingerprint == 0);
  bytes.push_back('\0');  // a format 2 record must end after `un`
  CHECK(decode_instance(bytes).status().code() == StatusCode::kDataLoss);
}

TEST_CASE("instance record: damaged records are DataLoss, never a crash") {
  Instance inst = sample_with_timeline();
  const std::string bytes = encode_instance(inst);
  for (size_t n = 0; n < bytes.size(); ++n) {
    StatusOr<Instance> r = decode_instance(bytes.substr(0, n));
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kDataLoss);
  }
  CHECK(decode_instance(bytes + "x").status().code() == StatusCode::kDataLoss);
  StatusOr<Instance> unknown = decode_instance(std::string("\x07rest", 5));
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.status().code() == StatusCode::kDataLoss);
  CHECK(unknown.status().message().find("unknown record format") != std::string::npos);
}

TEST_CASE("instance record: saga data nested deeper than kMaxJsonDepth is DataLoss") {
  Instance inst = sample();
  // 100,000 one-element arrays: nlohmann's MessagePack reader recurses per level.
  inst.data_bytes = std::string(100'000, '\x91') + '\xc0';
  StatusOr<Instance> r = decode_instance(encode_instance(inst));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kDataLoss);
  CHECK_MESSAGE(r.status().message().find("nested deeper than 64") != std::string::npos,
                r.status().message());

  inst.data_bytes = std::string(64, '\x91') + '\xc0';  // at the limit: fine
  StatusOr<Instance> ok = decode_instance(encode_instance(inst));
  REQUIRE(ok.ok());
  CHECK(ok->view.data.is_array());

  Json deep = Json::array();
  for (int i = 1; i < 64; ++i) deep = Json::array({std::move(deep)});
  inst = sample();
  inst.view.data = {{"deep", deep}};  // 65 levels inside format 1's record (66 with it)
  StatusOr<Instance> old = decode_instance(encode_format1(inst));
  REQUIRE_FALSE(old.ok());
  CHECK(old.status().code() == StatusCode::kDataLoss);
}

Message sample_message() {
  Message m;
  m.id = "saga-1/0/a.1";
  m.kind = MessageKind::kReply;
  m.type = "reserve";
  m.destination = "orchestrator.replies";
  m.key = "k";
  m.saga_id = "saga-1";
  m.reply_to = "x";
  m.in_reply_to = "saga-1/0/a";
  m.compensates = "c";
  m.attempt = 70000;
  m.outcome = ReplyOutcome::kRetry;
  m.traceparent = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01";
  m.payload = std::string("{\"error\":\"bad\xff\"}");  // not UTF-8: kept as is
  m.created_ms = 1'700'000'000'123;
  return m;
}

TEST_CASE("outbox record: binary round trip, exact bytes") {
  const Message m = sample_message();
  std::string bytes;
  encode_outbox_record(m, bytes);
  CHECK(static_cast<uint8_t>(bytes[0]) == 0x01);
  StatusOr<Message> back = decode_outbox_record(bytes);
  REQUIRE(back.ok());
  CHECK(*back == m);
}

TEST_CASE("outbox record: JSON envelopes of older versions still decode") {
  Message m = sample_message();
  m.payload = "{\"ok\":true}";
  StatusOr<Message> back = decode_outbox_record(encode_message(m));
  REQUIRE(back.ok());
  CHECK(*back == m);
}

TEST_CASE("outbox record: damaged records are errors, never a crash") {
  std::string bytes;
  encode_outbox_record(sample_message(), bytes);
  for (size_t n = 1; n < bytes.size(); ++n)
    CHECK_FALSE(decode_outbox_record(bytes.substr(0, n)).ok());
  CHECK_FALSE(decode_outbox_record(bytes + "x").ok());
  CHECK_FALSE(decode_outbox_record("").ok());
  // An old JSON envelope nested 100,000 deep.
  CHECK_FALSE(decode_outbox_record("{\"id\":" + std::string(100'000, '[')).ok());
}

TEST_CASE("inbox record: binary round trip, exact bytes") {
  const InboxRecord r{ReplyOutcome::kFailure, std::string("{\"error\":\"n\0o\"}", 15), true};
  std::string bytes;
  encode_inbox_record(r, bytes);
  CHECK(bytes == std::string("\x01\x02\x01\x0f", 4) + r.payload);
  StatusOr<InboxRecord> back = decode_inbox_record(bytes);
  REQUIRE(back.ok());
  CHECK(back->outcome == r.outcome);
  CHECK(back->payload == r.payload);
  CHECK(back->voided);
}

TEST_CASE("inbox record: JSON objects of older versions still decode") {
  StatusOr<InboxRecord> a = decode_inbox_record(R"({"o":1,"p":"{\"held\":2}","v":false})");
  REQUIRE(a.ok());
  CHECK(a->outcome == ReplyOutcome::kSuccess);
  CHECK(a->payload == R"({"held":2})");
  CHECK_FALSE(a->voided);
  StatusOr<InboxRecord> b = decode_inbox_record(R"({"o":2,"p":"{}","v":true})");
  REQUIRE(b.ok());
  CHECK(b->outcome == ReplyOutcome::kFailure);
  CHECK(b->voided);
  StatusOr<InboxRecord> c = decode_inbox_record(R"({"o":1,"p":""})");  // "v" optional
  REQUIRE(c.ok());
  CHECK_FALSE(c->voided);
  CHECK_FALSE(decode_inbox_record(R"({"o":"x","p":""})").ok());
}

TEST_CASE("inbox record: damaged records are errors, never a crash") {
  std::string bytes;
  encode_inbox_record({ReplyOutcome::kSuccess, "{\"charged\":5}", false}, bytes);
  for (size_t n = 1; n < bytes.size(); ++n)
    CHECK_FALSE(decode_inbox_record(bytes.substr(0, n)).ok());
  CHECK_FALSE(decode_inbox_record(bytes + "x").ok());
  CHECK_FALSE(decode_inbox_record("").ok());
  std::string bad = bytes;
  bad[1] = 9;  // outcome out of range
  CHECK_FALSE(decode_inbox_record(bad).ok());
  // An old JSON record nested 100,000 deep.
  std::string deep =
      R"({"o":1,"p":"","x":)" + std::string(100'000, '[') + std::string(100'000, ']') + "}";
  StatusOr<InboxRecord> r = decode_inbox_record(deep);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kDataLoss);
}

// Holds send callbacks so the test decides which sends are confirmed.
class HoldingTransport final : public Transport {
 public:
  Status subscribe(std::string_view, Handler) override { return ok_status(); }
  void send(Message m, SendCallback cb) override {
    pending.emplace_back(std::move(m), std::move(cb));
  }
  size_t poll(std::chrono::milliseconds) override { return 0; }
  Status health() const override { return ok_status(); }
  std::vector<std::pair<Message, SendCallback>> pending;
};

TEST_CASE("outbox: confirmed runs are range-deleted, unconfirmed records in between survive") {
  testing::TempDir dir;
  auto store = Store::open((dir.path() / "s").string(), {"outbox"}, false);
  REQUIRE(store.ok());
  HoldingTransport transport;
  ManualClock clock;
  auto log = spdlog::default_logger()->clone("outbox-test");
  std::set<std::string> unconfirmed;
  {
    Outbox outbox(Keyspace(**store, 0), (*store)->cf(0), transport, clock, log);
    REQUIRE(outbox.recover().ok());
    Batch batch;
    for (int i = 0; i < 10; ++i) {
      Message m;
      m.id = "m" + std::to_string(i);
      m.kind = MessageKind::kCommand;
      m.destination = "d";
      outbox.stage(batch, std::move(m));
    }
    REQUIRE((*store)->write(batch).ok());
    batch.clear();
    outbox.release();
    REQUIRE(transport.pending.size() == 10);
    // Confirm all but m3 and m7, out of order; m8 fails.
    for (int i : {9, 0, 1, 2, 4, 5, 6})
      transport.pending[static_cast<size_t>(i)].second(ok_status());
    transport.pending[8].second(Status::unavailable("down"));
    outbox.stage_confirmed(batch);
    REQUIRE((*store)->write(batch).ok());
    CHECK(outbox.depth() == 3);
    unconfirmed = {"m3", "m7", "m8"};
  }
  // What is left on disk is exactly what was not confirmed.
  HoldingTransport after;
  Outbox outbox(Keyspace(**store, 0), (*store)->cf(0), after, clock, log);
  REQUIRE(outbox.recover().ok());
  outbox.release();
  std::set<std::string> resent;
  for (auto& [m, cb] : after.pending) resent.insert(m.id);
  CHECK(resent == unconfirmed);
}

// Writes `record` as the instance `v` of an orchestrator store in
// `data_dir`, with the index keys a, t and s as every version wrote them
// (and, for a terminal one, an x key with the empty value of earlier
// versions); `more` adds to the same batch.
void write_instance(const std::string& data_dir, const SagaView& v, const std::string& record,
                    const std::function<void(Store&, Batch&)>& more = {}) {
  auto store = Store::open(data_dir, kOrchestratorFamilies, false);
  REQUIRE(store.ok());
  Batch b;
  b.put((*store)->cf(0), v.id, record);
  const std::string created = be64(static_cast<uint64_t>(v.created_ms));
  b.put((*store)->cf(4), "a" + created + v.id, "");
  b.put((*store)->cf(4), "t" + v.type + std::string(1, '\0') + created + v.id, "");
  b.put((*store)->cf(4), "s" + std::string(1, static_cast<char>(v.state)) + created + v.id, "");
  if (is_terminal(v.state))
    b.put((*store)->cf(4), "x" + be64(static_cast<uint64_t>(v.finished_ms)) + v.id, "");
  if (more) more(**store, b);
  REQUIRE((*store)->write(b).ok());
}

// A store as libsaga wrote it before format 2 and before timers were rebuilt
// from the records: a format-1 record, its index keys and a timer key.
TEST_CASE("open: a store of the previous layout resumes, its timer re-armed from the record") {
  testing::TempDir dir;
  const std::string data_dir = (dir.path() / "orch").string();
  const std::vector<std::string> cfs = {"instances", "outbox", "timers", "replies", "index"};
  const int64_t t0 = 1'700'000'000'000;
  {
    Instance inst;
    SagaView& v = inst.view;
    v.id = "legacy-1";
    v.type = "one";
    v.version = 1;
    v.state = SagaState::kRunning;
    v.data = Json{{"qty", 1}};
    StepView s;
    s.name = "reserve";
    s.status = StepStatus::kRunning;
    s.attempts = 1;
    s.started_ms = t0 - 10;
    v.steps.push_back(s);
    v.traceparent = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01";
    v.created_ms = v.updated_ms = t0 - 10;
    inst.awaiting = "legacy-1/0/a";
    inst.attempt = 1;
    inst.timer = TimerKind::kDeadline;
    inst.timer_due_ms = t0 + 1000;
    write_instance(data_dir, v, encode_format1(inst), [&](Store& store, Batch& b) {
      b.put(store.cf(2), be64(static_cast<uint64_t>(inst.timer_due_ms)) + v.id,
            std::string(1, '\x01'));
    });
  }
  auto clock = std::make_shared<ManualClock>(from_millis(t0));
  auto bus = MemoryBus::create(clock, 1);
  testing::ScriptedParticipant inventory("inventory", bus);
  DefinitionBuilder b("one", 1);
  b.command("reserve", "inventory", "reserve")
      .timeout(Duration{1000})
      .retry(RetryPolicy{3, Duration{100}, 2.0, Duration{1000}, 0.0});
  auto def = b.build();
  REQUIRE(def.ok());
  {  // The record predates fingerprints: its step names are what is compared.
    auto renamed = DefinitionBuilder("one", 1).command("hold", "inventory", "reserve").build();
    REQUIRE(renamed.ok());
    Options o;
    o.data_dir = data_dir;
    o.clock = clock;
    auto refused = Orchestrator::open(
        o, std::shared_ptr<Transport>(bus->connect("orchestrator")), {*renamed});
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.status().code() == StatusCode::kFailedPrecondition);
    CHECK_MESSAGE(refused.status().message().find(
                      "step 1: was 'reserve', now 'hold' (step names)") != std::string::npos,
                  refused.status().to_string());
  }
  {
    Options o;
    o.data_dir = data_dir;
    o.clock = clock;
    o.random = std::make_shared<SeededRandom>(1);
    o.breaker.enabled = false;
    auto orch =
        Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect("orchestrator")), {*def});
    REQUIRE(orch.ok());
    auto pump = [&] {
      for (int i = 0; i < 20; ++i) {
        (*orch)->run_once(Duration{0});
        inventory.poll();
      }
    };
    pump();
    CHECK(inventory.received().empty());  // the deadline is not due yet
    clock->advance(Duration{1001});       // deadline: retry after a 100 ms backoff
    pump();
    clock->advance(Duration{100});
    pump();
    REQUIRE(inventory.received().size() == 1);
    CHECK(inventory.received()[0].id == "legacy-1/0/a");
    CHECK(inventory.received()[0].attempt == 2);
    auto v = (*orch)->get("legacy-1");
    REQUIRE(v.ok());
    CHECK(v->state == SagaState::kCompleted);
    CHECK(v->data == Json{{"qty", 1}});
  }
  // The legacy timer key is gone, and the record is in the current format (4) now.
  auto store = Store::open(data_dir, cfs, false);
  REQUIRE(store.ok());
  int timer_keys = 0;
  REQUIRE((*store)
              ->scan((*store)->cf(2), "", "",
                     [&](std::string_view, std::string_view) {
                       ++timer_keys;
                       return true;
                     })
              .ok());
  CHECK(timer_keys == 0);
  auto rec = (*store)->get((*store)->cf(0), "legacy-1");
  REQUIRE(rec.ok());
  REQUIRE(rec->has_value());
  CHECK(static_cast<uint8_t>((**rec)[0]) == 0x04);
}

// A record damaged in a way decoding cannot see (its current step beyond its
// steps) makes a transition throw: the saga parks, the engine serves on.
TEST_CASE("a transition that throws parks its saga as Failed with the error; the engine goes on") {
  testing::TempDir dir;
  const std::string data_dir = (dir.path() / "orch").string();
  const int64_t t0 = 1'700'000'000'000;
  auto def = DefinitionBuilder("one", 1)
                 .command("reserve", "inventory", "reserve")
                 .compensate("inventory", "release")
                 .build();
  REQUIRE(def.ok());
  {
    Instance inst;
    SagaView& v = inst.view;
    v.id = "damaged-1";
    v.type = "one";
    v.version = 1;
    v.state = SagaState::kFailed;
    v.data = Json::object();
    StepView s;
    s.name = "reserve";
    s.status = StepStatus::kCompensationFailed;
    v.steps.push_back(s);
    v.current_step = 7;
    v.created_ms = v.updated_ms = t0 - 10;
    inst.fingerprint = (*def)->fingerprint();
    write_instance(data_dir, v, encode_instance(inst));
  }
  auto clock = std::make_shared<ManualClock>(from_millis(t0));
  auto bus = MemoryBus::create(clock, 1);
  testing::ScriptedParticipant inventory("inventory", bus);
  Options o;
  o.data_dir = data_dir;
  o.clock = clock;
  auto orch = Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect("orchestrator")), {*def});
  REQUIRE_MESSAGE(orch.ok(), orch.status().to_string());

  const Status retried = (*orch)->retry("damaged-1");  // restarting its compensation throws
  CHECK(retried.code() == StatusCode::kInternal);
  auto v = (*orch)->get("damaged-1");
  REQUIRE(v.ok());
  CHECK(v->state == SagaState::kFailed);
  CHECK_MESSAGE(v->last_error.starts_with("internal error in a transition: "), v->last_error);

  auto next = (*orch)->start("one", Json::object());
  REQUIRE_MESSAGE(next.ok(), next.status().to_string());
  for (int i = 0; i < 20 && inventory.received().empty(); ++i) {
    (*orch)->run_once(Duration{0});
    inventory.poll();
  }
  CHECK(inventory.received().size() == 1);
}

// Retention keys written before they carried the instance's index fields
// (empty value), and the reply marks of older versions, still go.
TEST_CASE("retention removes a finished saga of an older layout with its index keys and marks") {
  testing::TempDir dir;
  const std::string data_dir = (dir.path() / "orch").string();
  const std::vector<std::string> cfs = {"instances", "outbox", "timers", "replies", "index"};
  const int64_t t0 = 1'700'000'000'000;
  auto def = DefinitionBuilder("one", 1).command("reserve", "inventory", "reserve").build();
  REQUIRE(def.ok());
  {
    Instance inst;
    SagaView& v = inst.view;
    v.id = "old-1";
    v.type = "one";
    v.version = 1;
    v.state = SagaState::kCompleted;
    v.data = Json::object();
    StepView s;
    s.name = "reserve";
    s.status = StepStatus::kSucceeded;
    v.steps.push_back(s);
    v.created_ms = t0 - 20;
    v.updated_ms = v.finished_ms = t0 - 10;
    write_instance(data_dir, v, encode_format1(inst), [&](Store& store, Batch& b) {
      b.put(store.cf(3), v.id + std::string(1, '\0') + "reply-1", "");
    });
  }
  auto clock = std::make_shared<ManualClock>(from_millis(t0));
  auto bus = MemoryBus::create(clock, 1);
  {
    Options o;
    o.data_dir = data_dir;
    o.clock = clock;
    o.retention = Duration{1'000};
    o.retention_interval = Duration{1'000};
    auto orch =
        Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect("orchestrator")), {*def});
    REQUIRE_MESSAGE(orch.ok(), orch.status().to_string());
    (*orch)->run_once(Duration{0});
    CHECK((*orch)->get("old-1").ok());  // not expired yet
    clock->advance(Duration{1'000});
    (*orch)->run_once(Duration{0});
    CHECK((*orch)->get("old-1").status().code() == StatusCode::kNotFound);
  }
  auto store = Store::open(data_dir, cfs, false);
  REQUIRE(store.ok());
  for (size_t cf : {0, 3, 4}) {
    int keys = 0;
    REQUIRE((*store)
                ->scan((*store)->cf(cf), "", "",
                       [&](std::string_view, std::string_view) {
                         ++keys;
                         return true;
                       })
                .ok());
    CHECK_MESSAGE(keys == 0, "column family " << cfs[cf]);
  }
}

// RocksDB 9.x writes table format 6 by default, which RocksDB 7.8 (Debian's)
// cannot open ("unsupported format_version: 6"); a store keeps format 5 so
// that it moves both ways between Debian's RocksDB and one built from source
// (scripts/rocksdb). RocksDB records each family's table options in the
// store's OPTIONS file.
TEST_CASE("a store's table files keep format 5, which RocksDB 6.6 and later read") {
  testing::TempDir dir;
  const std::filesystem::path path = dir.path() / "s";
  {
    auto store = Store::open(path.string(), {"instances", "index"}, false);
    REQUIRE_MESSAGE(store.ok(), store.status().to_string());
  }
  std::filesystem::path options_file;
  for (const auto& entry : std::filesystem::directory_iterator(path)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("OPTIONS-", 0) == 0 && (options_file.empty() || name > options_file.filename().string()))
      options_file = entry.path();
  }
  REQUIRE_MESSAGE(!options_file.empty(), "no OPTIONS file in " << path);
  std::ifstream in(options_file);
  int tables = 0;
  for (std::string line; std::getline(in, line);) {
    const auto at = line.find("format_version=");
    if (at == std::string::npos) continue;
    ++tables;
    CHECK_MESSAGE(line.substr(at) == "format_version=5", options_file << ": " << line);
  }
  CHECK(tables == 3);  // default (metadata), instances, index
}

TEST_CASE("a store of four shards keeps each shard's keys apart and its count") {
  testing::TempDir dir;
  const std::string path = (dir.path() / "s").string();
  const std::vector<std::string> cfs = {"instances", "index"};
  {
    auto store = Store::open(path, cfs, false, {.wanted = 4});
    REQUIRE_MESSAGE(store.ok(), store.status().to_string());
    CHECK((*store)->shards() == 4);
    const Keyspace two(**store, 2), zero(**store, 0), three(**store, 3);
    CHECK(two.prefix() == std::string("\x00\x02", 2));
    Batch b;
    two.put(b, (*store)->cf(0), "k", "in shard 2");
    two.put(b, (*store)->cf(0), "k2", "also in shard 2");
    zero.put(b, (*store)->cf(0), "k", "in shard 0");
    REQUIRE((*store)->write(b).ok());
    CHECK(**two.get((*store)->cf(0), "k") == "in shard 2");
    CHECK(**zero.get((*store)->cf(0), "k") == "in shard 0");
    CHECK_FALSE(three.get((*store)->cf(0), "k")->has_value());
    CHECK_FALSE(two.get((*store)->cf(1), "k")->has_value());
    std::vector<std::string> seen;
    REQUIRE(two.scan((*store)->cf(0), "k", "",
                     [&](std::string_view key, std::string_view) {
                       seen.emplace_back(key);
                       return true;
                     })
                .ok());
    CHECK(seen == std::vector<std::string>{"k", "k2"});  // no prefix, no other shard
  }
  // Reopened without a count (or with a default for new stores), it has four.
  auto again = Store::open(path, cfs, false, {.wanted = 0, .for_new_store = 12});
  REQUIRE_MESSAGE(again.ok(), again.status().to_string());
  CHECK((*again)->shards() == 4);
  CHECK(**Keyspace(**again, 2).get((*again)->cf(0), "k") == "in shard 2");
  again->reset();
  // Another count is refused, naming both.
  auto other = Store::open(path, cfs, false, {.wanted = 3});
  REQUIRE_FALSE(other.ok());
  CHECK(other.status().code() == StatusCode::kFailedPrecondition);
  CHECK(other.status().message().find("4 shard(s), not 3") != std::string::npos);
}

TEST_CASE("a store written before shards existed opens as one shard, without key prefixes") {
  testing::TempDir dir;
  const std::string path = (dir.path() / "s").string();
  const std::vector<std::string> cfs = {"instances", "index"};
  {
    auto store = Store::open(path, cfs, false);  // what the single-shard version did
    REQUIRE(store.ok());
    Batch b;
    b.put((*store)->cf(0), "saga-1", "record");
    REQUIRE((*store)->write(b).ok());
  }
  auto again = Store::open(path, cfs, false, {.wanted = 0, .for_new_store = 12});
  REQUIRE_MESSAGE(again.ok(), again.status().to_string());
  CHECK((*again)->shards() == 1);
  const Keyspace only(**again, 0);
  CHECK(only.prefix().empty());
  CHECK(**only.get((*again)->cf(0), "saga-1") == "record");
  again->reset();
  CHECK(Store::open(path, cfs, false, {.wanted = 12}).status().code() ==
        StatusCode::kFailedPrecondition);
  // A new store without a count gets the default for new stores; so does a
  // store whose creation died before its count was written (it has no data).
  auto fresh = Store::open((dir.path() / "new").string(), cfs, false,
                           {.wanted = 0, .for_new_store = 12});
  REQUIRE(fresh.ok());
  CHECK((*fresh)->shards() == 12);
  fresh->reset();
  {
    auto empty = Store::open((dir.path() / "died").string(), cfs, false);  // no count, no data
    REQUIRE(empty.ok());
  }
  auto died = Store::open((dir.path() / "died").string(), cfs, false,
                          {.wanted = 0, .for_new_store = 5});
  REQUIRE(died.ok());
  CHECK((*died)->shards() == 5);
}

}  // namespace
}  // namespace saga::internal
