// Moving stores to another shard count (saga/reshard.h): booking sagas over
// the MemoryBus stopped in flight (waiting on replies, on timers, with unsent
// commands), their orchestrator and inventory stores resharded, reopened with
// the new count and driven to the end; a participant whose state is spread by
// command key; the refusals; and the saga-reshard binary.
#include "saga/reshard.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "changelog.h"
#include "saga/memory_transport.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"
#include "saga/shard.h"
#include "store/families.h"
#include "store/store.h"
#include "support/booking.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace saga {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr int64_t kCapacity = 20;

std::string summary(const SagaView& v) {
  return std::string(to_string(v.state)) + " step " + std::to_string(v.current_step) + " " +
         v.data.dump() + " " + v.last_error;
}

// Every id list() returns, following page tokens.
std::vector<std::string> list_all(const Orchestrator& o) {
  std::vector<std::string> out;
  ListQuery q;
  for (int page = 0; page < 1000; ++page) {
    auto p = o.list(q);
    REQUIRE_MESSAGE(p.ok(), p.status().to_string());
    for (const SagaView& v : p->items) out.push_back(v.id);
    if (p->next_page_token.empty()) return out;
    q.page_token = p->next_page_token;
  }
  FAIL("list() never ran out of pages");
  return out;
}

// The booking saga's orchestrator, inventory and payment (tests/support/
// booking.h) over one MemoryBus, each store in a folder that a reshard replaces.
class World {
 public:
  World() {
    faults_.decline = 0.15;
    faults_.payment_retry = 0.3;
    faults_.confirm_failure = 0.1;
  }
  ~World() {
    orch.reset();
    inventory.reset();
    payment.reset();
  }

  void open_orchestrator(uint32_t shards) {
    orch.reset();
    Options o;
    o.data_dir = orch_dir;
    o.sync = false;
    o.shards = shards;
    o.clock = clock;
    o.random = std::make_shared<SeededRandom>(3);
    o.breaker.enabled = false;
    auto r = Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect("orchestrator")),
                                {testing::booking_definition()});
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    orch = std::move(*r);
  }
  std::unique_ptr<Participant> open_participant(const std::string& name, const std::string& dir,
                                                uint32_t shards) {
    ParticipantOptions o;
    o.name = name;
    o.data_dir = dir;
    o.sync = false;
    o.shards = shards;
    o.clock = clock;
    auto r = Participant::open(o, std::shared_ptr<Transport>(bus->connect(name)));
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    return std::move(*r);
  }
  void open_inventory(uint32_t shards) {
    inventory.reset();
    inventory = open_participant("inventory", inventory_dir, shards);
    REQUIRE(testing::register_inventory(*inventory, kCapacity, faults_, chance()).ok());
  }
  void open_payment(uint32_t shards) {
    payment.reset();
    payment = open_participant("payment", payment_dir, shards);
    REQUIRE(testing::register_payment(*payment, faults_, chance()).ok());
  }
  std::function<double()> chance() {
    return [this] { return std::uniform_real_distribution<double>(0, 1)(rng_); };
  }

  std::vector<std::string> start(int n) {
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      StartOptions so;
      so.id = "b-" + std::to_string(next_++);
      auto id = orch->start("booking", Json{{"qty", 1 + next_ % 2}, {"amount", 100 + next_}}, so);
      REQUIRE_MESSAGE(id.ok(), id.status().to_string());
      ids.push_back(*id);
      sagas.push_back(*id);
    }
    return ids;
  }
  // One round of whichever engines are open, then 20 ms pass.
  void step() {
    if (orch) orch->run_once();
    if (inventory) inventory->run_once();
    if (payment) payment->run_once();
    clock->advance(Duration{20});
  }
  bool all_terminal() {
    return std::all_of(sagas.begin(), sagas.end(), [&](const std::string& id) {
      auto v = orch->get(id);
      return v.ok() && is_terminal(v->state);
    });
  }
  std::map<std::string, SagaView> views() {
    std::map<std::string, SagaView> out;
    for (const std::string& id : sagas) out.emplace(id, *orch->get(id));
    return out;
  }

  // Starts sagas and stops the orchestrator with some of them done, some
  // waiting on payment's replies (payment is down) or on retry timers, and
  // some whose commands never left the outbox (the fabric was away).
  void run_until_stopped_in_flight(uint32_t shards) {
    open_orchestrator(shards);
    open_inventory(4);
    open_payment(3);
    start(12);
    for (int i = 0; i < 8; ++i) step();
    payment.reset();  // its commands wait on the bus
    start(12);
    for (int i = 0; i < 6; ++i) step();
    bus->set_available(false);
    start(8);
    for (int i = 0; i < 3; ++i) step();
    REQUIRE(orch->stats().outbox_depth > 0);
    REQUIRE(orch->stats().in_flight > 8);
    for (const std::string& id : list_all(*orch)) before[id] = summary(*orch->get(id));
    listed = list_all(*orch);
    in_flight = orch->stats().in_flight;
    orch.reset();
    inventory.reset();
    bus->set_available(true);
  }

  // Drives every engine until every saga is terminal; checks the invariants.
  void finish() {
    if (!payment) open_payment(3);
    for (int i = 0; i < 20'000 && !all_terminal(); ++i) step();
    REQUIRE(all_terminal());
    const auto bad = testing::check_booking_invariants(views(), *inventory, *payment, kCapacity);
    for (const std::string& b : bad) FAIL_CHECK(b);
    CHECK(bad.empty());
  }

 private:
  TempDir dir_;

 public:
  std::string orch_dir = (dir_.path() / "orchestrator").string();
  std::string inventory_dir = (dir_.path() / "inventory").string();
  std::string payment_dir = (dir_.path() / "payment").string();
  std::string new_dir(const std::string& name) { return (dir_.path() / name).string(); }
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<MemoryBus> bus = MemoryBus::create(clock, 11);
  std::unique_ptr<Orchestrator> orch;
  std::unique_ptr<Participant> inventory;
  std::unique_ptr<Participant> payment;
  std::vector<std::string> sagas;
  std::map<std::string, std::string> before;  // summaries when stopped
  std::vector<std::string> listed;
  uint64_t in_flight = 0;

 private:
  testing::BookingFaults faults_;
  std::mt19937_64 rng_{42};
  int next_ = 0;
};

// The booking inventory keeps its stock in the shard of kStockKey: every key it writes.
StatusOr<std::string> stock_key(std::string_view, std::string_view, const ReshardSource&) {
  return std::string(testing::kStockKey);
}

void reshard_in_flight_orchestrator(uint32_t from, uint32_t to, bool with_inventory) {
  CAPTURE(from);
  CAPTURE(to);
  World w;
  w.run_until_stopped_in_flight(from);

  const std::string moved = w.new_dir("orchestrator-" + std::to_string(to));
  auto stats = reshard_orchestrator({.from = w.orch_dir, .to = moved, .shards = to});
  REQUIRE_MESSAGE(stats.ok(), stats.status().to_string());
  CHECK(stats->from_shards == from);
  CHECK(stats->records["instances"] == w.sagas.size());
  CHECK(stats->records["outbox"] > 0);
  CHECK(stats->records["index"] >= 3 * w.sagas.size());
  w.orch_dir = moved;

  // The old count no longer opens it; the new one finds everything.
  Options wrong;
  wrong.data_dir = moved;
  wrong.shards = from;
  if (from != to) {
    auto refused = Orchestrator::open(wrong, std::shared_ptr<Transport>(w.bus->connect("x")),
                                      {testing::booking_definition()});
    CHECK(refused.status().code() == StatusCode::kFailedPrecondition);
  }
  {  // The definitions' shapes came along: a changed one is named, whichever saga meets it first.
    Options edited;
    edited.data_dir = moved;
    edited.shards = to;
    auto refused = Orchestrator::open(edited, std::shared_ptr<Transport>(w.bus->connect("x")),
                                      {testing::booking_definition(Duration{1000}, 5, true)});
    REQUIRE_FALSE(refused.ok());
    CHECK_MESSAGE(refused.status().message().find(
                      "step 3: was 'confirm: inventory.confirm', now 'confirm: "
                      "inventory.confirm, pivot'") != std::string::npos,
                  refused.status().to_string());
  }
  if (with_inventory) {
    const std::string inv = w.new_dir("inventory-" + std::to_string(to));
    auto s = reshard_participant({.from = w.inventory_dir, .to = inv, .shards = to}, stock_key);
    REQUIRE_MESSAGE(s.ok(), s.status().to_string());
    CHECK(s->records["state"] > 0);
    w.inventory_dir = inv;
  }
  w.open_orchestrator(to);
  w.open_inventory(with_inventory ? to : 4);
  CHECK(list_all(*w.orch) == w.listed);
  for (const auto& [id, s] : w.before) CHECK_MESSAGE(summary(*w.orch->get(id)) == s, id);
  CHECK(w.orch->stats().in_flight == w.in_flight);
  CHECK(w.orch->stats().outbox_depth > 0);  // the unsent commands came along

  w.finish();
  CHECK(list_all(*w.orch).size() == w.sagas.size());
}

TEST_CASE("an orchestrator stopped with sagas in flight moves from 3 to 7 shards and finishes them") {
  reshard_in_flight_orchestrator(3, 7, false);
}

TEST_CASE("an orchestrator moves from 3 shards to 1 and from 1 to 5, its inventory along") {
  SUBCASE("3 to 1") { reshard_in_flight_orchestrator(3, 1, true); }
  SUBCASE("1 to 5") { reshard_in_flight_orchestrator(1, 5, true); }
}

// Domain records follow their shard keys: a saga's own to its id's new
// shard, an owner's index entries (written by sagas of the owner's shard) to
// the owner's new shard, with their expiry keys.
TEST_CASE("an orchestrator's domain records move to the shards of their shard keys") {
  constexpr int64_t kFarFuture = 4'102'444'800'000;  // 2100-01-01
  auto def = DefinitionBuilder("ticket", 1)
                 .local("a", [](Json&) { return ok_status(); })
                 .records([](const SagaView& v, std::optional<SagaState>) {
                   const std::string owner = v.data["owner"];
                   return std::vector<Record>{{"t/" + v.id, "x", kFarFuture, ""},
                                              {"u/" + owner + "/" + v.id, "", kFarFuture, owner}};
                 })
                 .build();
  REQUIRE(def.ok());
  TempDir dir;
  auto bus = MemoryBus::create(std::make_shared<ManualClock>(), 5);
  auto open = [&](const std::string& at, uint32_t shards) {
    Options o;
    o.data_dir = at;
    o.sync = false;
    o.shards = shards;
    auto r = Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect("orchestrator")), {*def});
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    return std::move(*r);
  };
  const std::string from = (dir.path() / "3").string(), to = (dir.path() / "5").string();
  std::map<std::string, std::vector<std::string>> by_owner;
  {
    auto orch = open(from, 3);
    for (int i = 0; i < 40; ++i) {
      const std::string owner = "owner-" + std::to_string(i % 4);
      StartOptions so;
      so.id = "t-" + std::to_string(i);
      for (int n = 0; shard_of(so.id, 3) != shard_of(owner, 3); ++n)
        so.id = "t-" + std::to_string(i) + "." + std::to_string(n);
      REQUIRE(orch->start("ticket", Json{{"owner", owner}}, so).ok());
      by_owner[owner].push_back(so.id);
    }
  }
  auto stats = reshard_orchestrator({.from = from, .to = to, .shards = 5});
  REQUIRE_MESSAGE(stats.ok(), stats.status().to_string());
  auto orch = open(to, 5);
  for (auto& [owner, ids] : by_owner) {
    for (const std::string& id : ids) {
      auto r = orch->record(id, "t/" + id);
      REQUIRE(r.ok());
      CHECK_MESSAGE(r->has_value(), id);
    }
    auto listed = orch->records(owner, "u/" + owner + "/", "", 1000);
    REQUIRE(listed.ok());
    std::vector<std::string> got;
    for (const Record& r : *listed) got.push_back(r.key.substr(r.key.rfind('/') + 1));
    std::sort(ids.begin(), ids.end());
    CHECK(got == ids);
  }
}

// ---------------------------------------------------------------- participant

// A participant of deposits to accounts: commands keyed by account. Its state:
//   acct/<account>  the balance (read and written in the account's shard)
//   entry/<cmd id>  the account the command went to
//   seen/<cmd id>   empty; its account is only in entry/<cmd id>
//   applied/<cmd id> how often the handler ran for the command
Status register_accounts(Participant& p) {
  return p.on("deposit", [](CommandContext& c) {
    const std::string& account = c.command.key;
    auto balance = c.state.get("acct/" + account);
    if (!balance.ok()) return HandlerResult::retry(balance.status().message());
    const int64_t now = (*balance ? std::stoll(**balance) : 0) + c.payload.value("amount", 0);
    c.state.put("acct/" + account, std::to_string(now));
    c.state.put("entry/" + c.command.id, account);
    c.state.put("seen/" + c.command.id, "");
    auto applied = c.state.get("applied/" + c.command.id);
    c.state.put("applied/" + c.command.id,
                std::to_string((applied.ok() && *applied ? std::stoll(**applied) : 0) + 1));
    return HandlerResult::success({{"balance", now}});
  });
}

StatusOr<std::string> account_key(std::string_view key, std::string_view value,
                                  const ReshardSource& source) {
  if (key.starts_with("acct/")) return std::string(key.substr(5));
  if (key.starts_with("entry/")) return std::string(value);
  if (key.starts_with("seen/") || key.starts_with("applied/")) {
    const std::string entry = "entry/" + std::string(key.substr(key.find('/') + 1));
    SAGA_ASSIGN_OR_RETURN(auto account, source.get(entry));
    if (!account) return Status::not_found(entry + " is missing");
    return *account;
  }
  return Status::invalid_argument("unknown key");
}

Message deposit(int i, int amount) {
  Message m;
  m.id = "dep-" + std::to_string(i);
  m.kind = MessageKind::kCommand;
  m.type = "deposit";
  m.destination = "accounts";
  m.key = "acct-" + std::to_string(i % 7);
  m.saga_id = "s-" + std::to_string(i);
  m.reply_to = "client.replies";
  m.attempt = 1;
  m.payload = Json{{"amount", amount}}.dump();
  return m;
}

struct Accounts {
  TempDir dir;
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<MemoryBus> bus = MemoryBus::create(clock, 5);
  std::unique_ptr<Transport> client = bus->connect("client");
  std::map<std::string, int> replies;  // command id -> replies received
  std::map<std::string, int64_t> last_balance;
  std::unique_ptr<Participant> p;

  Accounts() {
    REQUIRE(client
                ->subscribe("client.replies",
                            [this](Message m, Transport::Ack ack) {
                              ++replies[m.in_reply_to];
                              last_balance[m.in_reply_to] =
                                  Json::parse(m.payload).value("balance", int64_t{-1});
                              ack();
                            })
                .ok());
  }
  void open(const std::string& data_dir, uint32_t shards) {
    p.reset();
    ParticipantOptions o;
    o.name = "accounts";
    o.data_dir = data_dir;
    o.sync = false;
    o.shards = shards;
    o.clock = clock;
    auto r = Participant::open(o, std::shared_ptr<Transport>(bus->connect("accounts")));
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    p = std::move(*r);
    REQUIRE(register_accounts(*p).ok());
  }
  void drive(int rounds = 50) {
    for (int i = 0; i < rounds; ++i) {
      p->run_once();
      client->poll(std::chrono::milliseconds(0));
      clock->advance(Duration{20});
    }
  }
  int64_t balance(int account) {
    auto v = p->get("acct/acct-" + std::to_string(account));
    REQUIRE(v.ok());
    return *v ? std::stoll(**v) : 0;
  }
};

TEST_CASE("a participant moves from 3 to 5 shards: state by command key, inbox everywhere, "
          "unsent replies kept, a redelivered command answered from the inbox") {
  Accounts a;
  const std::string old_dir = (a.dir.path() / "old").string();
  a.open(old_dir, 3);
  std::map<int, int64_t> expected;  // account -> balance
  for (int i = 0; i < 40; ++i) {
    a.client->send(deposit(i, 10 + i), nullptr);
    expected[i % 7] += 10 + i;
  }
  a.drive();
  REQUIRE(a.replies.size() == 40);
  // Ten more are applied, and the participant stops before the bus confirmed
  // their replies: the records are still in its outbox.
  for (int i = 40; i < 50; ++i) {
    a.client->send(deposit(i, 10 + i), nullptr);
    expected[i % 7] += 10 + i;
  }
  a.p->run_once();
  REQUIRE(a.p->stats().outbox_depth > 0);
  a.p.reset();

  const std::string new_dir = (a.dir.path() / "new").string();
  auto stats = reshard_participant({.from = old_dir, .to = new_dir, .shards = 5}, account_key);
  REQUIRE_MESSAGE(stats.ok(), stats.status().to_string());
  CHECK(stats->from_shards == 3);
  // Every command in every shard, each with its expiry key.
  CHECK(stats->records["inbox"] == 2 * 50 * 5);
  CHECK(stats->records["outbox"] > 0);

  // Each state key is in the shard of its account, and only there.
  {
    auto store = internal::Store::open(new_dir, internal::kParticipantFamilies, false, {.wanted = 0});
    REQUIRE(store.ok());
    REQUIRE((*store)->shards() == 5);
    size_t keys = 0;
    for (uint32_t k = 0; k < 5; ++k) {
      const internal::Keyspace ks(**store, k);
      REQUIRE(ks.scan((*store)->cf(0), "", "", [&](std::string_view key, std::string_view v) {
                  ++keys;
                  std::string account;
                  if (key.starts_with("acct/")) account = std::string(key.substr(5));
                  if (key.starts_with("entry/")) account = std::string(v);
                  if (!account.empty()) CHECK_MESSAGE(shard_of(account, 5) == k, key);
                  return true;
                }).ok());
    }
    CHECK(keys == 7 + 3 * 50);
  }

  a.open(new_dir, 5);
  a.drive();
  for (int i = 0; i < 50; ++i) CHECK_MESSAGE(a.replies["dep-" + std::to_string(i)] >= 1, i);
  for (const auto& [account, total] : expected) CHECK(a.balance(account) == total);

  // A duplicate of an applied command: answered from the inbox, not applied again.
  const uint64_t duplicates = a.p->stats().duplicates;
  a.client->send(deposit(3, 13), nullptr);
  a.drive(10);
  CHECK(a.p->stats().duplicates == duplicates + 1);
  CHECK(a.replies["dep-3"] == 2);
  CHECK(a.last_balance["dep-3"] == 13);  // the reply it got the first time
  CHECK(a.balance(3) == expected[3]);
  // New deposits see the balances where they now live.
  a.client->send(deposit(50, 1000), nullptr);  // account 50 % 7 = 1
  a.drive(10);
  CHECK(a.balance(1) == expected[1] + 1000);
  auto applied = testing::read_ints(*a.p, "applied/");
  CHECK(applied.size() == 51);
  for (const auto& [cmd, n] : applied) CHECK_MESSAGE(n == 1, cmd);
}

// ------------------------------------------------------------------- refusals

// A small orchestrator store with `sagas` sagas, in `dir`, with `shards`.
void make_orchestrator_store(const std::string& dir, uint32_t shards, bool changelog = false,
                             std::shared_ptr<MemoryBus> bus = nullptr, int sagas = 1) {
  auto clock = std::make_shared<ManualClock>();
  if (!bus) bus = MemoryBus::create(clock, 1);
  Options o;
  o.data_dir = dir;
  o.sync = false;
  o.shards = shards;
  o.changelog = changelog;
  o.clock = clock;
  auto orch = Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect("orchestrator")),
                                 {testing::booking_definition()});
  REQUIRE_MESSAGE(orch.ok(), orch.status().to_string());
  for (int i = 0; i < sagas; ++i)
    REQUIRE((*orch)->start("booking", Json{{"qty", 1}, {"amount", 5}}, {}).ok());
  (*orch)->run_once();
}

// An orchestrator on `dir` with the changelog on `bus`, or its error.
StatusOr<std::unique_ptr<Orchestrator>> open_with_changelog(const std::string& dir,
                                                           uint32_t shards,
                                                           std::shared_ptr<MemoryBus> bus) {
  Options o;
  o.data_dir = dir;
  o.sync = false;
  o.shards = shards;
  o.changelog = true;
  o.clock = std::make_shared<ManualClock>();
  return Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect("orchestrator")),
                            {testing::booking_definition()});
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_CASE("reshard refuses a bad count, a missing source, a used destination, another kind of "
          "store and a store that ran with the changelog, and leaves nothing behind") {
  TempDir dir;
  const std::string src = (dir.path() / "src").string();
  const std::string dst = (dir.path() / "dst").string();
  make_orchestrator_store(src, 3);

  for (uint32_t bad : {0u, kMaxShards + 1}) {
    auto r = reshard_orchestrator({.from = src, .to = dst, .shards = bad});
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK_FALSE(fs::exists(dst));
  }
  {
    auto r = reshard_orchestrator({.from = (dir.path() / "nope").string(), .to = dst, .shards = 2});
    CHECK(r.status().code() == StatusCode::kNotFound);
    CHECK(contains(r.status().message(), "nope"));
    CHECK_FALSE(fs::exists(dir.path() / "nope"));
    CHECK_FALSE(fs::exists(dst));
  }
  {
    fs::create_directories(dst);
    { std::ofstream(dst + "/keep") << "x"; }
    auto r = reshard_orchestrator({.from = src, .to = dst, .shards = 2});
    CHECK(r.status().code() == StatusCode::kFailedPrecondition);
    CHECK(contains(r.status().message(), dst));
    CHECK(fs::exists(dst + "/keep"));  // untouched
    fs::remove_all(dst);
  }
  {
    // An empty folder is fine, and holds the store afterwards.
    fs::create_directories(dst);
    auto r = reshard_orchestrator({.from = src, .to = dst, .shards = 2});
    CHECK_MESSAGE(r.ok(), r.status().to_string());
    CHECK(fs::exists(dst + "/CURRENT"));
    CHECK_FALSE(fs::exists(dst + ".saga-reshard-partial"));
    fs::remove_all(dst);
  }
  {
    // What a killed run left is not taken over silently.
    fs::create_directories(dst + ".saga-reshard-partial");
    auto r = reshard_orchestrator({.from = src, .to = dst, .shards = 2});
    CHECK(r.status().code() == StatusCode::kFailedPrecondition);
    CHECK(contains(r.status().message(), "interrupted"));
    CHECK_FALSE(fs::exists(dst));
    fs::remove_all(dst + ".saga-reshard-partial");
  }
  {
    // A participant's store is not an orchestrator's, and is left as it was.
    const std::string part = (dir.path() / "participant").string();
    {
      auto s = internal::Store::open(part, internal::kParticipantFamilies, false,
                                     {.wanted = 2, .for_new_store = 2});
      REQUIRE(s.ok());
    }
    auto r = reshard_orchestrator({.from = part, .to = dst, .shards = 2});
    CHECK(r.status().code() == StatusCode::kFailedPrecondition);
    CHECK(contains(r.status().message(), "not an orchestrator store"));
    CHECK_FALSE(fs::exists(dst));
    auto s = internal::Store::open(part, internal::kParticipantFamilies, false, {.wanted = 0});
    REQUIRE(s.ok());  // still opens as a participant store of 2 shards
    CHECK((*s)->shards() == 2);
  }
  {
    const std::string logged = (dir.path() / "changelog").string();
    make_orchestrator_store(logged, 2, /*changelog=*/true);
    auto r = reshard_orchestrator({.from = logged, .to = dst, .shards = 4});
    CHECK(r.status().code() == StatusCode::kFailedPrecondition);
    CHECK(contains(r.status().message(), "changelog"));
    CHECK_FALSE(fs::exists(dst));
  }
  {
    // The source is in use by a running engine (RocksDB's lock).
    auto held = internal::Store::open(src, internal::kOrchestratorFamilies, false, {.wanted = 0});
    REQUIRE(held.ok());
    auto r = reshard_orchestrator({.from = src, .to = dst, .shards = 2});
    CHECK(r.status().code() == StatusCode::kFailedPrecondition);
    CHECK(contains(r.status().message(), "still running"));
    CHECK_FALSE(fs::exists(dst));
  }
}

TEST_CASE("a store that ran with the changelog moves only with drop_changelog, without its "
          "checkpoints, and the new store fills a recreated changelog") {
  TempDir dir;
  const std::string src = (dir.path() / "src").string();
  const std::string dst = (dir.path() / "dst").string();
  auto old_bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
  make_orchestrator_store(src, 2, /*changelog=*/true, old_bus, 6);

  auto refused = reshard_orchestrator({.from = src, .to = dst, .shards = 4});
  CHECK(refused.status().code() == StatusCode::kFailedPrecondition);
  CHECK(contains(refused.status().message(), "--drop-changelog"));
  CHECK_FALSE(fs::exists(dst));

  auto moved = reshard_orchestrator({.from = src, .to = dst, .shards = 4, .drop_changelog = true});
  REQUIRE_MESSAGE(moved.ok(), moved.status().to_string());
  CHECK(moved->records["instances"] == 6);
  {
    auto store = internal::Store::open(dst, internal::kOrchestratorFamilies, false, {.wanted = 4});
    REQUIRE(store.ok());
    for (uint32_t k = 0; k < 4; ++k) {
      auto checkpoint = internal::Keyspace(**store, k).get((*store)->meta(), internal::kCheckpointKey);
      REQUIRE(checkpoint.ok());
      CHECK_FALSE(checkpoint->has_value());
    }
  }
  // The old changelog (2 partitions) cannot serve 4 shards...
  auto stale = open_with_changelog(dst, 4, old_bus);
  CHECK(stale.status().code() == StatusCode::kFailedPrecondition);
  // ... a recreated one can: each shard's state becomes its first commit.
  auto fresh_bus = MemoryBus::create(std::make_shared<ManualClock>(), 2);
  auto reopened = open_with_changelog(dst, 4, fresh_bus);
  REQUIRE_MESSAGE(reopened.ok(), reopened.status().to_string());
  CHECK(list_all(**reopened).size() == 6);
  uint64_t records = 0;
  for (uint32_t k = 0; k < 4; ++k) records += fresh_bus->log_end("orchestrator.changelog", k);
  CHECK(records >= 6 * 4);  // each saga's instance and its three index keys at least
}

TEST_CASE("a participant key the callback cannot place fails the reshard and leaves no destination") {
  // The booking payment keeps a per-shard "balance": no key function can merge those.
  World w;
  w.open_orchestrator(2);
  w.open_inventory(2);
  w.open_payment(3);
  w.start(10);
  for (int i = 0; i < 40; ++i) w.step();
  w.orch.reset();
  w.inventory.reset();
  w.payment.reset();
  const std::string dst = w.new_dir("payment-2");
  auto refuse_balance = [](std::string_view key, std::string_view,
                           const ReshardSource&) -> StatusOr<std::string> {
    if (key == "balance") return Status::invalid_argument("a per-shard total");
    const size_t slash = key.find('/');
    return std::string(key.substr(slash + 1, key.find('/', slash + 1) - slash - 1));
  };
  auto r = reshard_participant({.from = w.payment_dir, .to = dst, .shards = 2}, refuse_balance);
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(contains(r.status().message(), "'balance'"));
  CHECK(contains(r.status().message(), "a per-shard total"));
  CHECK_FALSE(fs::exists(dst));
  CHECK_FALSE(fs::exists(dst + ".saga-reshard-partial"));

  // Placing each copy of "balance" in one shard would merge them: refused too.
  auto merge = [&](std::string_view key, std::string_view v,
                   const ReshardSource& s) -> StatusOr<std::string> {
    if (key == "balance") return std::string("one");
    return refuse_balance(key, v, s);
  };
  r = reshard_participant({.from = w.payment_dir, .to = dst, .shards = 2}, merge);
  CHECK(r.status().code() == StatusCode::kFailedPrecondition);
  CHECK(contains(r.status().message(), "cannot be merged"));
  CHECK_FALSE(fs::exists(dst));
}

TEST_CASE("the command line: flags, counts and kinds") {
  auto ok = parse_reshard_command({"--from", "a", "--to", "b", "--shards", "7"});
  REQUIRE(ok.ok());
  CHECK(ok->options.from == "a");
  CHECK(ok->options.to == "b");
  CHECK(ok->options.shards == 7);
  CHECK(ok->kind == "orchestrator");
  CHECK(parse_reshard_command({"--from", "a", "--to", "b", "--shards", "7", "--kind",
                               "participant"})
            ->kind == "participant");
  CHECK(parse_reshard_command({"-h"})->help);
  CHECK(parse_reshard_command({"--drop-changelog", "--from", "a", "--to", "b", "--shards", "2"})
            ->options.drop_changelog);
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {},
           {"--from", "a", "--to", "b"},
           {"--from", "a", "--to", "b", "--shards", "0"},
           {"--from", "a", "--to", "b", "--shards", "65536"},
           {"--from", "a", "--to", "b", "--shards", "7x"},
           {"--from", "a", "--to", "b", "--shards", "7", "--kind", "both"},
           {"--from", "a", "--from", "a", "--to", "b", "--shards", "7"},
           {"--from", "a", "--to", "b", "--shards"},
           {"--what", "a"}}) {
    CHECK(parse_reshard_command(bad).status().code() == StatusCode::kInvalidArgument);
  }
}

#ifdef SAGA_RESHARD_BIN
int run_tool(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> argv = {SAGA_RESHARD_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  testing::Process p(argv, log);
  return p.wait(std::chrono::seconds(60));
}

TEST_CASE("saga-reshard moves an orchestrator store and says why it will not") {
  TempDir dir;
  const std::string src = (dir.path() / "src").string();
  const std::string dst = (dir.path() / "dst").string();
  const std::string log = (dir.path() / "tool.log").string();
  make_orchestrator_store(src, 3);

  CHECK(run_tool({}, log) == 2);
  CHECK(run_tool({"--from", src, "--to", dst, "--shards", "zero"}, log) == 2);
  CHECK(run_tool({"--from", src, "--to", dst, "--shards", "4", "--kind", "participant"}, log) == 2);
  CHECK(contains(testing::read_file(log), "key function"));
  CHECK(run_tool({"--from", (dir.path() / "none").string(), "--to", dst, "--shards", "4"}, log) ==
        1);
  CHECK_FALSE(fs::exists(dst));
  CHECK(run_tool({"--help"}, log) == 0);

  REQUIRE(run_tool({"--from", src, "--to", dst, "--shards", "4"}, log) == 0);
  CHECK(contains(testing::read_file(log), "records copied"));
  CHECK(run_tool({"--from", src, "--to", dst, "--shards", "4"}, log) == 1);  // not empty now

  auto clock = std::make_shared<ManualClock>();
  auto bus = MemoryBus::create(clock, 1);
  Options o;
  o.data_dir = dst;
  o.shards = 4;
  o.clock = clock;
  auto orch = Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect("orchestrator")),
                                 {testing::booking_definition()});
  REQUIRE_MESSAGE(orch.ok(), orch.status().to_string());
  CHECK(list_all(**orch).size() == 1);
  CHECK((*orch)->stats().in_flight == 1);
}
#endif

}  // namespace
}  // namespace saga
