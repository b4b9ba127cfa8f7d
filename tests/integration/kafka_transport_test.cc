// saga::KafkaTransport against the fixture's real Apache Kafka broker: the
// envelope round-trips, order per key holds, unacked messages come back to the
// next member of the group and acked ones do not, foreign records are skipped,
// and the factory fails cleanly on bad configuration or a missing broker.
// The first cases need no broker: header mapping and offset bookkeeping.
#include "saga/kafka_transport.h"

#include <doctest/doctest.h>
#include <librdkafka/rdkafkacpp.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kafka/envelope_headers.h"
#include "kafka/kafka_options.h"
#include "kafka/offset_tracker.h"
#include "kafka/rdkafka_util.h"
#include "support/kafka_test_env.h"
#include "support/line_sink.h"

namespace saga {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

// ---------------------------------------------------------------- helpers

// A topic prefix no other test (or run against the same broker) uses.
std::string unique_prefix() {
  static std::mt19937_64 rng{std::random_device{}()};
  return "t" + std::to_string(rng() % 1'000'000'000) + ".";
}

KafkaOptions test_options(const std::string& prefix, const std::string& endpoint) {
  KafkaOptions o;
  o.brokers = testing::kafka_bootstrap();
  o.topic_prefix = prefix;
  o.group_id = prefix + endpoint;  // groups must not be shared between tests either
  o.partitions = 3;
  o.properties = {{"session.timeout.ms", "6000"}, {"heartbeat.interval.ms", "500"}};
  return o;
}

std::unique_ptr<Transport> connect(const std::string& prefix, const std::string& endpoint,
                                   bool from_beginning = false) {
  KafkaOptions o = test_options(prefix, endpoint);
  o.from_beginning = from_beginning;
  auto t = make_kafka_transport(endpoint, o);
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(*t);
}

// Polls every transport (100 ms each at most) until `done` or the deadline.
bool poll_until(const std::vector<Transport*>& transports, const std::function<bool()>& done,
                std::chrono::seconds limit = 60s) {
  const auto deadline = Steady::now() + limit;
  while (!done()) {
    if (Steady::now() > deadline) return false;
    for (Transport* t : transports) t->poll(transports.size() == 1 ? 100ms : 20ms);
  }
  return true;
}

struct Inbox {
  std::vector<Message> messages;
  std::vector<Transport::Ack> acks;

  Transport::Handler handler() {
    return [this](Message m, Transport::Ack ack) {
      messages.push_back(std::move(m));
      acks.push_back(std::move(ack));
    };
  }
  bool has(const std::string& id) const {
    for (const Message& m : messages) {
      if (m.id == id) return true;
    }
    return false;
  }
};

struct SendLog {
  std::vector<Status> results;
  Transport::SendCallback callback() {
    return [this](Status s) { results.push_back(std::move(s)); };
  }
  bool all_ok() const {
    for (const Status& s : results) {
      if (!s.ok()) return false;
    }
    return true;
  }
};

Message command(std::string id, std::string destination, std::string key) {
  Message m;
  m.id = std::move(id);
  m.kind = MessageKind::kCommand;
  m.type = "reserve";
  m.destination = std::move(destination);
  m.key = key;
  m.saga_id = std::move(key);
  m.payload = R"({"qty":1})";
  return m;
}

// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
int unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

using testing::LineSink;

// ---------------------------------------------------------------- no broker needed

TEST_CASE("envelope headers: every field maps to a header and back") {
  Message m;
  m.id = "s1/2/c";
  m.kind = MessageKind::kReply;
  m.type = "reply";
  m.saga_id = "s1";
  m.reply_to = "orchestrator.replies";
  m.in_reply_to = "s1/2/a";
  m.compensates = "s1/1/a";
  m.attempt = 4'000'000'000u;
  m.outcome = ReplyOutcome::kRetry;
  m.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  m.created_ms = -5;
  const auto headers = internal::kafka::encode_headers(m);
  CHECK(headers.size() == 11);
  auto back = internal::kafka::decode_headers(headers, "dest", "key", "payload");
  REQUIRE_MESSAGE(back.ok(), back.status().to_string());
  Message expected = m;
  expected.destination = "dest";
  expected.key = "key";
  expected.payload = "payload";
  CHECK(*back == expected);
}

TEST_CASE("envelope headers: malformed records are refused with the header's name") {
  using internal::kafka::decode_headers;
  using internal::kafka::Header;
  const std::vector<Header> good = {{"saga-message-id", "x"}, {"saga-kind", "command"}};
  CHECK(decode_headers(good, "d", "", "").ok());
  SUBCASE("no id") {
    auto r = decode_headers({{"saga-kind", "command"}}, "d", "", "");
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(r.status().message().find("saga-message-id") != std::string::npos);
  }
  SUBCASE("no headers at all") { CHECK_FALSE(decode_headers({}, "d", "", "").ok()); }
  SUBCASE("unknown kind") {
    CHECK_FALSE(
        decode_headers({{"saga-message-id", "x"}, {"saga-kind", "order"}}, "d", "", "").ok());
  }
  SUBCASE("bad numbers") {
    for (const char* bad : {"", "-1", "1x", " 1", "4294967296"}) {
      auto h = good;
      h.emplace_back("saga-attempt", bad);
      auto r = decode_headers(h, "d", "", "");
      CHECK_MESSAGE(r.status().message().find("saga-attempt") != std::string::npos, bad);
    }
    auto h = good;
    h.emplace_back("saga-created-ms", "12.5");
    CHECK_FALSE(decode_headers(h, "d", "", "").ok());
  }
  SUBCASE("the last of repeated headers wins") {
    auto h = good;
    h.emplace_back("saga-message-id", "y");
    auto r = decode_headers(h, "d", "", "");
    REQUIRE(r.ok());
    CHECK(r->id == "y");
  }
}

TEST_CASE("offset tracker: the commit position never passes an unacked message") {
  std::vector<int64_t> stored;
  internal::kafka::OffsetTracker tracker([&](const std::string&, int32_t, int64_t next) {
    stored.push_back(next);
    return ok_status();
  });
  tracker.assign({{"t", 0}});
  auto m10 = tracker.delivered("t", 0, 10);
  auto m11 = tracker.delivered("t", 0, 11);
  auto m12 = tracker.delivered("t", 0, 12);
  tracker.ack(m11);
  CHECK(stored.empty());  // 10 is still open
  tracker.ack(m10);
  CHECK(stored == std::vector<int64_t>{12});  // 10 and 11 done, 12 open
  tracker.ack(m10);                           // a repeated ack changes nothing
  tracker.ack(m12);
  CHECK(stored == std::vector<int64_t>{12, 13});

  SUBCASE("acks from an earlier assignment are void") {
    auto m13 = tracker.delivered("t", 0, 13);
    tracker.revoke({{"t", 0}});
    tracker.assign({{"t", 0}});
    tracker.ack(m13);
    CHECK(stored.size() == 2);
  }
  SUBCASE("after detach nothing is stored") {
    auto m13 = tracker.delivered("t", 0, 13);
    tracker.detach();
    tracker.ack(m13);
    CHECK(stored.size() == 2);
  }
}

TEST_CASE("kafka_options_from_env reads every variable") {
  ::setenv("KAFKA_BROKERS", "10.0.0.1:9092,10.0.0.2:9092", 1);
  ::setenv("KAFKA_CLIENT_ID", "pay-1", 1);
  ::setenv("KAFKA_TOPIC_PREFIX", "prod.", 1);
  ::setenv("KAFKA_PARTITIONS", "12", 1);
  ::setenv("KAFKA_REPLICATION_FACTOR", "3", 1);
  ::setenv("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL", 1);
  ::setenv("KAFKA_PROPERTY_SASL_MECHANISMS", "PLAIN", 1);
  ::unsetenv("KAFKA_GROUP_ID");
  KafkaOptions o = kafka_options_from_env("payment");
  CHECK(o.brokers == "10.0.0.1:9092,10.0.0.2:9092");
  CHECK(o.client_id == "pay-1");
  CHECK(o.group_id == "payment");  // unset: the endpoint
  CHECK(o.topic_prefix == "prod.");
  CHECK(o.partitions == 12);
  CHECK(o.replication_factor == 3);
  CHECK(o.properties.at("security.protocol") == "SASL_SSL");
  CHECK(o.properties.at("sasl.mechanisms") == "PLAIN");
  CHECK(o.startup_timeout == 30s);

  ::setenv("KAFKA_GROUP_ID", "payments", 1);
  ::setenv("KAFKA_PARTITIONS", "many", 1);
  o = kafka_options_from_env("payment");
  CHECK(o.group_id == "payments");
  CHECK(o.partitions == 0);
  auto t = make_kafka_transport("payment", o);
  CHECK(t.status().code() == StatusCode::kInvalidArgument);
  CHECK(t.status().message().find("KAFKA_PARTITIONS") != std::string::npos);

  for (const char* v : {"KAFKA_BROKERS", "KAFKA_CLIENT_ID", "KAFKA_GROUP_ID", "KAFKA_TOPIC_PREFIX",
                        "KAFKA_PARTITIONS", "KAFKA_REPLICATION_FACTOR",
                        "KAFKA_PROPERTY_SECURITY_PROTOCOL", "KAFKA_PROPERTY_SASL_MECHANISMS"}) {
    ::unsetenv(v);
  }
  o = kafka_options_from_env("inventory");
  CHECK(o.brokers.empty());
  CHECK(o.group_id == "inventory");
  CHECK(o.topic_prefix == "saga.");
  CHECK(o.partitions == 6);
  CHECK(o.properties.empty());
}

TEST_CASE("consumer properties: manual offsets, a short fetch wait, ids from the options") {
  KafkaOptions o;
  o.brokers = "127.0.0.1:9092";
  o.client_id = "pay-1";
  o.group_id = "payments";
  const auto props = internal::kafka::consumer_properties(o);
  CHECK(props.at("bootstrap.servers") == "127.0.0.1:9092");
  CHECK(props.at("client.id") == "pay-1");
  CHECK(props.at("group.id") == "payments");
  CHECK(props.at("enable.auto.offset.store") == "false");
  CHECK(props.at("enable.auto.commit") == "true");
  // Not librdkafka's 500 ms: partitions that become fetchable while a fetch is
  // in flight wait for it to time out (docs/kafka.md).
  CHECK(props.at("fetch.wait.max.ms") == "50");
  // A user's tuning wins over the default (properties are applied afterwards),
  // and librdkafka accepts the value.
  o.properties["fetch.wait.max.ms"] = "500";
  o.startup_timeout = 1s;
  o.brokers = "127.0.0.1:1";
  auto t = make_kafka_transport("x", o);
  CHECK(t.status().code() == StatusCode::kUnavailable);  // no broker: config was accepted
}

TEST_CASE("wait timeouts round up, so a wait never ends before its deadline") {
  using internal::kafka::wait_timeout_ms;
  using std::chrono::microseconds;
  CHECK(wait_timeout_ms(Steady::duration::zero()) == 0);
  CHECK(wait_timeout_ms(-5ms) == 0);
  // A remainder under a millisecond used to round to 0: consume(0) returns at
  // once, and poll() spun through the rest of every wait.
  CHECK(wait_timeout_ms(microseconds(1)) == 1);
  CHECK(wait_timeout_ms(microseconds(300)) == 1);
  CHECK(wait_timeout_ms(1ms) == 1);
  CHECK(wait_timeout_ms(microseconds(1200)) == 2);
  CHECK(wait_timeout_ms(std::chrono::hours(24 * 365 * 100)) == INT32_MAX);
}

TEST_CASE("bad configuration is refused with InvalidArgument") {
  KafkaOptions o;
  o.brokers = "127.0.0.1:1";
  o.startup_timeout = 1s;
  SUBCASE("no brokers") { o.brokers.clear(); }
  SUBCASE("an unknown librdkafka property") { o.properties["no.such.property"] = "1"; }
  SUBCASE("a bad property value") { o.properties["linger.ms"] = "soon"; }
  SUBCASE("a property the transport manages") { o.properties["enable.auto.commit"] = "false"; }
  SUBCASE("no partitions") { o.partitions = 0; }
  auto t = make_kafka_transport("x", o);
  CHECK(t.status().code() == StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------- real broker

TEST_CASE("make_kafka_transport reports Unavailable when no broker answers in time") {
  KafkaOptions o;
  o.brokers = "127.0.0.1:" + std::to_string(unused_port());
  o.startup_timeout = 3s;
  const auto start = Steady::now();
  auto t = make_kafka_transport("lonely", o);
  const auto took = Steady::now() - start;
  REQUIRE_FALSE(t.ok());
  CHECK(t.status().code() == StatusCode::kUnavailable);
  CHECK(t.status().message().find(o.brokers) != std::string::npos);
  MESSAGE("error after ", std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
          " ms: ", t.status().to_string());
  CHECK(took < 3s + 5s);  // the timeout plus slack for a loaded machine
}

TEST_CASE("every envelope field round-trips through the broker and sends are confirmed") {
  const std::string prefix = unique_prefix();
  auto a = connect(prefix, "a");
  auto b = connect(prefix, "b");
  CHECK(a->health().ok());
  CHECK(b->health().ok());
  Inbox inbox;
  REQUIRE(b->subscribe("inbox", inbox.handler()).ok());
  CHECK(b->subscribe("inbox", inbox.handler()).code() == StatusCode::kAlreadyExists);

  Message full;
  full.id = "saga-1/2/c";
  full.kind = MessageKind::kReply;
  full.type = "reply";
  full.destination = "inbox";
  full.key = "place-42";
  full.saga_id = "saga-1";
  full.reply_to = "orchestrator.replies";
  full.in_reply_to = "saga-1/2/a";
  full.compensates = "saga-1/1/a";
  full.attempt = 3;
  full.outcome = ReplyOutcome::kFailure;
  full.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  full.payload = R"({"error":"no availability","note":"caf\u00e9 ☕"})";
  full.created_ms = 1'700'000'000'123;

  Message minimal;  // empty key: the saga id becomes the record key
  minimal.id = "e1";
  minimal.kind = MessageKind::kEvent;
  minimal.type = "ReservationPlaced";
  minimal.destination = "inbox";
  minimal.saga_id = "saga-2";

  SendLog sends;
  bool called_inside_send = false;
  a->send(full, sends.callback());
  a->send(minimal, sends.callback());
  called_inside_send = !sends.results.empty();
  CHECK_FALSE(called_inside_send);

  REQUIRE(poll_until({a.get(), b.get()},
                     [&] { return sends.results.size() == 2 && inbox.messages.size() == 2; }));
  CHECK(sends.all_ok());
  for (auto& ack : inbox.acks) ack();

  REQUIRE(inbox.has("saga-1/2/c"));
  const Message& got_full = inbox.messages[0].id == full.id ? inbox.messages[0] : inbox.messages[1];
  const Message& got_min = inbox.messages[0].id == full.id ? inbox.messages[1] : inbox.messages[0];
  CHECK(got_full == full);
  Message expected_min = minimal;
  expected_min.key = "saga-2";
  CHECK(got_min == expected_min);
  CHECK(a->health().ok());
  CHECK(b->health().ok());
}

// Runs t->poll(an hour) on another thread; true when it returned within a
// minute, calling `nudge` (if any) every 50 ms meanwhile.
bool poll_returns(Transport& t, const std::function<void()>& nudge = nullptr) {
  auto polled = std::async(std::launch::async, [&] { return t.poll(std::chrono::hours(1)); });
  const auto deadline = Steady::now() + 60s;
  while (polled.wait_for(50ms) != std::future_status::ready) {
    if (Steady::now() > deadline) {
      t.wake();  // let the thread end; the test has failed already
      return false;
    }
    if (nudge) nudge();
  }
  return true;
}

TEST_CASE("poll() ends when woken, when a record arrives and when a send is confirmed") {
  const std::string prefix = unique_prefix();
  auto a = connect(prefix, "a");
  auto b = connect(prefix, "b");
  Inbox inbox;
  REQUIRE(b->subscribe("inbox", inbox.handler()).ok());

  // wake() before a poll ends the next one; from another thread, the one
  // waiting (an engine's start arriving from an HTTP thread).
  b->wake();
  CHECK(poll_returns(*b));
  CHECK(poll_returns(*b, [&] { b->wake(); }));
  CHECK(poll_returns(*a, [&] { a->wake(); }));  // not subscribed: waits on the producer alone

  // A delivery report ends the sender's wait (it is not subscribed to anything).
  SendLog sends;
  a->send(command("w1", "inbox", "k"), sends.callback());
  const auto deadline = Steady::now() + 60s;
  while (sends.results.empty() && Steady::now() < deadline) REQUIRE(poll_returns(*a));
  REQUIRE(sends.results.size() == 1);
  CHECK(sends.all_ok());
  // The record ends the receiver's wait.
  while (inbox.messages.empty() && Steady::now() < deadline) REQUIRE(poll_returns(*b));
  REQUIRE(inbox.messages.size() == 1);
  CHECK(inbox.messages[0].id == "w1");
  for (auto& ack : inbox.acks) ack();
}

TEST_CASE("messages with the same key arrive in send order") {
  const std::string prefix = unique_prefix();
  auto a = connect(prefix, "a");
  auto b = connect(prefix, "b");
  Inbox inbox;
  REQUIRE(b->subscribe("ordered", inbox.handler()).ok());

  constexpr int kPerKey = 40;
  const std::vector<std::string> keys = {"k1", "k2", "k3", "k4", "k5"};
  SendLog sends;
  for (int i = 0; i < kPerKey; ++i) {
    for (const std::string& k : keys)
      a->send(command(k + "/" + std::to_string(i), "ordered", k), sends.callback());
  }
  const size_t total = kPerKey * keys.size();
  REQUIRE(poll_until({a.get(), b.get()}, [&] {
    return sends.results.size() == total && inbox.messages.size() >= total;
  }));
  CHECK(sends.all_ok());
  std::map<std::string, int> next;
  for (const Message& m : inbox.messages) {
    const int i = std::stoi(m.id.substr(m.id.find('/') + 1));
    CHECK_MESSAGE(i == next[m.key], m.id);
    next[m.key] = i + 1;
  }
  for (const std::string& k : keys) CHECK(next[k] == kPerKey);
  for (auto& ack : inbox.acks) ack();
}

TEST_CASE(
    "an unacked message is redelivered to the next member of the group; an acked one is not") {
  const std::string prefix = unique_prefix();
  auto sender = connect(prefix, "sender");
  SendLog sends;
  // One key, so one partition and a fixed order: m1, m2, m3.
  for (const char* id : {"m1", "m2", "m3"})
    sender->send(command(id, "work", "saga-7"), sends.callback());
  REQUIRE(poll_until({sender.get()}, [&] { return sends.results.size() == 3; }));
  REQUIRE(sends.all_ok());

  Transport::Ack late_ack;
  {
    auto first = connect(prefix, "worker");
    Inbox inbox;
    REQUIRE(first->subscribe("work", inbox.handler()).ok());
    REQUIRE(poll_until({first.get()}, [&] { return inbox.messages.size() == 3; }));
    CHECK(inbox.messages[0].id == "m1");
    SUBCASE("acked in order") {
      inbox.acks[0]();  // m1 is done; m2 and m3 are not
    }
    SUBCASE("acked out of order") {
      inbox.acks[0]();
      inbox.acks[2]();  // m3 done, but m2 is not: m2 and m3 both come back
    }
    late_ack = inbox.acks[1];
  }  // destroyed: closes the consumer, committing what was acked

  late_ack();  // the transport is gone: harmless, and m2 stays unacked

  auto second = connect(prefix, "worker");
  Inbox inbox;
  REQUIRE(second->subscribe("work", inbox.handler()).ok());
  sender->send(command("m4", "work", "saga-7"), sends.callback());
  REQUIRE(poll_until({sender.get(), second.get()}, [&] { return inbox.has("m4"); }));
  std::vector<std::string> ids;
  for (const Message& m : inbox.messages) ids.push_back(m.id);
  CHECK(ids == std::vector<std::string>{"m2", "m3", "m4"});
  for (auto& ack : inbox.acks) ack();
}

TEST_CASE("from_beginning: a member that lost its state reads its partitions from the start, once") {
  const std::string prefix = unique_prefix();
  auto sender = connect(prefix, "sender");
  SendLog sends;
  for (const char* id : {"m1", "m2", "m3"})
    sender->send(command(id, "work", "saga-7"), sends.callback());
  REQUIRE(poll_until({sender.get()}, [&] { return sends.results.size() == 3; }));
  REQUIRE(sends.all_ok());
  // Reads the partition as member of the group "worker" until message `last`
  // arrives (sent now), acks everything and leaves; returns the ids it got.
  auto read_all = [&](bool from_beginning, const std::string& last) {
    auto worker = connect(prefix, "worker", from_beginning);
    Inbox inbox;
    REQUIRE(worker->subscribe("work", inbox.handler()).ok());
    sender->send(command(last, "work", "saga-7"), sends.callback());
    REQUIRE(poll_until({sender.get(), worker.get()}, [&] { return inbox.has(last); }));
    for (auto& ack : inbox.acks) ack();
    std::vector<std::string> ids;
    for (const Message& m : inbox.messages) ids.push_back(m.id);
    return ids;
  };  // each worker is destroyed on return: it commits what it acked
  CHECK(read_all(false, "m4") == std::vector<std::string>{"m1", "m2", "m3", "m4"});
  CHECK(read_all(false, "m5") == std::vector<std::string>{"m5"});  // the group's commit
  CHECK(read_all(true, "m6") ==
        std::vector<std::string>{"m1", "m2", "m3", "m4", "m5", "m6"});  // state lost
  CHECK(read_all(false, "m7") == std::vector<std::string>{"m7"});  // and committed again
}

TEST_CASE("a topic created after the consumer joined its group is read within seconds") {
  // A worker that subscribes (without creating topics) before its topic
  // exists: it must find the topic once someone creates it, within seconds.
  const std::string prefix = unique_prefix();
  KafkaOptions o = test_options(prefix, "worker");
  o.create_topics = false;
  auto made = make_kafka_transport("worker", o);
  REQUIRE_MESSAGE(made.ok(), made.status().to_string());
  std::unique_ptr<Transport> worker = std::move(*made);
  Inbox inbox;
  REQUIRE(worker->subscribe("late", inbox.handler()).ok());
  const auto joined = Steady::now() + 3s;  // the broker's initial rebalance delay is 0
  while (Steady::now() < joined) worker->poll(100ms);
  REQUIRE(inbox.messages.empty());

  auto sender = connect(prefix, "sender");
  REQUIRE(sender->subscribe("late", [](Message, Transport::Ack) {}).ok());  // creates the topic
  SendLog sends;
  sender->send(command("m1", "late", "saga-1"), sends.callback());
  CHECK(poll_until({sender.get(), worker.get()}, [&] { return inbox.has("m1"); }, 60s));
  CHECK(sends.all_ok());
}

TEST_CASE("members of one group share the partitions; when one leaves the other takes over") {
  const std::string prefix = unique_prefix();
  auto sender = connect(prefix, "sender");
  auto w1 = connect(prefix, "worker");
  auto w2 = connect(prefix, "worker");
  std::map<std::string, int> seen1, seen2;
  auto counting = [](std::map<std::string, int>& seen) {
    return [&seen](Message m, Transport::Ack ack) {
      ++seen[m.id];
      ack();  // acking inside the handler is allowed
    };
  };
  REQUIRE(w1->subscribe("jobs", counting(seen1)).ok());
  REQUIRE(w2->subscribe("jobs", counting(seen2)).ok());

  // Keep sending rounds over many keys until both members have work, which
  // proves the group split the partitions between them.
  SendLog sends;
  std::vector<std::string> sent;
  const auto deadline = Steady::now() + 60s;
  while ((seen1.empty() || seen2.empty()) && Steady::now() < deadline) {
    for (int k = 0; k < 12; ++k) {
      const std::string id = "r" + std::to_string(sent.size());
      sender->send(command(id, "jobs", "key-" + std::to_string(k)), sends.callback());
      sent.push_back(id);
    }
    for (Transport* t : {sender.get(), w1.get(), w2.get()}) t->poll(50ms);
  }
  CHECK_FALSE(seen1.empty());
  CHECK_FALSE(seen2.empty());
  auto got_all = [&](const std::vector<std::string>& ids) {
    for (const std::string& id : ids) {
      if (!seen1.count(id) && !seen2.count(id)) return false;
    }
    return true;
  };
  REQUIRE(poll_until({sender.get(), w1.get(), w2.get()}, [&] { return got_all(sent); }));

  w1.reset();  // leaves the group; its partitions move to w2
  std::vector<std::string> second;
  for (int i = 0; i < 60; ++i) {
    second.push_back("late" + std::to_string(i));
    sender->send(command(second.back(), "jobs", "key-" + std::to_string(i % 12)), sends.callback());
  }
  REQUIRE(poll_until({sender.get(), w2.get()}, [&] {
    for (const std::string& id : second) {
      if (!seen2.count(id)) return false;
    }
    return true;
  }));
  CHECK(sends.all_ok());
  // Everything w1 acked was committed when it left: none of it comes back to w2.
  for (const auto& [id, n] : seen1) CHECK_MESSAGE(seen2.count(id) == 0, id);
}

TEST_CASE("a record without saga headers is skipped and does not hold back the partition") {
  const std::string prefix = unique_prefix();
  auto sender = connect(prefix, "sender");
  auto receiver = connect(prefix, "receiver");
  Inbox inbox;
  REQUIRE(receiver->subscribe("mixed", inbox.handler()).ok());  // creates the topic

  // A foreign producer writes a plain record (no headers) to the same partition.
  {
    std::string err;
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    REQUIRE(conf->set("bootstrap.servers", testing::kafka_bootstrap(), err) ==
            RdKafka::Conf::CONF_OK);
    REQUIRE(conf->set("partitioner", "murmur2_random", err) == RdKafka::Conf::CONF_OK);
    std::unique_ptr<RdKafka::Producer> raw(RdKafka::Producer::create(conf.get(), err));
    REQUIRE_MESSAGE(raw, err);
    std::string value = "not a saga message";
    std::string key = "saga-9";
    REQUIRE(raw->produce(prefix + "mixed", RdKafka::Topic::PARTITION_UA,
                         RdKafka::Producer::RK_MSG_COPY, value.data(), value.size(), key.data(),
                         key.size(), 0, nullptr) == RdKafka::ERR_NO_ERROR);
    REQUIRE(raw->flush(30'000) == RdKafka::ERR_NO_ERROR);
  }
  SendLog sends;
  sender->send(command("good", "mixed", "saga-9"), sends.callback());
  REQUIRE(poll_until({sender.get(), receiver.get()}, [&] { return inbox.has("good"); }));
  CHECK(inbox.messages.size() == 1);
  inbox.acks[0]();
  receiver.reset();

  // Both the foreign record and "good" are committed: a new member sees only what comes next.
  auto again = connect(prefix, "receiver");
  Inbox later;
  REQUIRE(again->subscribe("mixed", later.handler()).ok());
  sender->send(command("next", "mixed", "saga-9"), sends.callback());
  REQUIRE(poll_until({sender.get(), again.get()}, [&] { return later.has("next"); }));
  CHECK(later.messages.size() == 1);
}

TEST_CASE("a sender may start before the receiver: its first send creates the topic") {
  const std::string prefix = unique_prefix();
  auto sender = connect(prefix, "sender");
  SendLog sends;
  sender->send(command("early", "late-receiver", "s"), sends.callback());
  REQUIRE(poll_until({sender.get()}, [&] { return !sends.results.empty(); }));
  CHECK_MESSAGE(sends.results[0].ok(), sends.results[0].to_string());

  auto receiver = connect(prefix, "late-receiver");
  Inbox inbox;
  REQUIRE(receiver->subscribe("late-receiver", inbox.handler()).ok());
  REQUIRE(poll_until({receiver.get()}, [&] { return inbox.has("early"); }));
  for (auto& ack : inbox.acks) ack();
}

// Measures (prints, never asserts) how long the first message between two
// transports takes compared with the next one, and checks what makes the
// first one quick: send() asks for a topic's metadata the moment the topic is
// first named, instead of leaving the message to librdkafka's next periodic
// scan of unknown topics (once a second), which cost every first hop between
// services up to a second or more.
TEST_CASE("the first send to a topic asks for its metadata at once; first-hop latency printed") {
  const std::string prefix = unique_prefix();
  // The requester's librdkafka debug logs, captured: the evidence of when its
  // producer asked for metadata.
  auto sink = std::make_shared<LineSink>();
  sink->set_pattern("%H:%M:%S.%e %v");
  auto logger = std::make_shared<spdlog::logger>(prefix + "requester", sink);
  logger->set_level(spdlog::level::debug);
  spdlog::register_logger(logger);
  struct Unregister {
    std::string name;
    ~Unregister() { spdlog::drop(name); }
  } unregister{logger->name()};
  KafkaOptions ro = test_options(prefix, "requester");
  ro.logger = logger->name();
  ro.properties["debug"] = "metadata,topic";
  auto made = make_kafka_transport("requester", ro);
  REQUIRE_MESSAGE(made.ok(), made.status().to_string());
  std::unique_ptr<Transport> requester = std::move(*made);
  auto responder = connect(prefix, "responder");

  Inbox replies;
  REQUIRE(requester->subscribe("requester.replies", replies.handler()).ok());
  SendLog reply_sends;
  REQUIRE(responder
              ->subscribe("responder",
                          [&](Message m, Transport::Ack ack) {
                            Message reply = command(m.id + "/reply", m.reply_to, m.saga_id);
                            reply.kind = MessageKind::kReply;
                            reply.in_reply_to = m.id;
                            responder->send(std::move(reply), reply_sends.callback());
                            ack();
                          })
              .ok());

  // Both groups get their partitions (and both consumers reach the end of
  // their empty topics) before anything is measured: a third transport's
  // records prove it. What follows is then only the first produce of the
  // requester to "responder" and of the responder to "requester.replies".
  {
    auto primer = connect(prefix, "primer");
    SendLog sends;
    primer->send(command("prime-1", "responder", "p"), sends.callback());
    Message to_requester = command("prime-2", "requester.replies", "p");
    to_requester.kind = MessageKind::kReply;
    primer->send(to_requester, sends.callback());
    REQUIRE(poll_until({primer.get(), requester.get(), responder.get()}, [&] {
      return sends.results.size() == 2 && replies.has("prime-2") && reply_sends.results.size() == 1;
    }));
    REQUIRE(sends.all_ok());
  }
  // The responder answered prime-1 to its reply_to, which is empty: refused.
  REQUIRE(replies.messages.size() == 1);
  reply_sends.results.clear();

  // Lines the requester logged during its last send() call.
  std::vector<std::string> logged_in_send;
  const auto round_trip = [&](const std::string& id, SendLog& sends) {
    Message c = command(id, "responder", "s-" + id);
    c.reply_to = "requester.replies";
    const auto start = Steady::now();
    const size_t mark = sink->size();
    requester->send(c, sends.callback());
    logged_in_send = sink->lines(mark);
    REQUIRE(
        poll_until({requester.get(), responder.get()}, [&] { return replies.has(id + "/reply"); }));
    return std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - start);
  };
  const auto logged = [&](const std::string& text) {
    for (const std::string& line : logged_in_send) {
      if (line.find(text) != std::string::npos) return true;
    }
    return false;
  };
  SendLog first_sends;
  const auto first = round_trip("first", first_sends);
  // The lookup started inside the first send(), synchronously: librdkafka
  // (2.0.2) logs the metadata request made for a topic handle it creates as
  // a "leader query". Without it the producer asked only at its next periodic
  // scan ("refresh unavailable topics"), up to a second later.
  CHECK(logged("New local topic: " + prefix + "responder"));
  CHECK(logged("leader query"));
  SendLog second_sends;
  const auto second = round_trip("second", second_sends);
  REQUIRE(poll_until({requester.get(), responder.get()}, [&] {
    return first_sends.results.size() == 1 && second_sends.results.size() == 1 &&
           reply_sends.results.size() == 2;
  }));
  CHECK(first_sends.all_ok());
  CHECK(second_sends.all_ok());
  CHECK(reply_sends.all_ok());
  for (auto& ack : replies.acks) ack();
  MESSAGE("first round trip (first produce to each topic): ", first.count(),
          " ms; second round trip: ", second.count(), " ms");
  if (std::getenv("SAGA_TEST_PRINT_KAFKA_LOG")) {
    for (const std::string& line : sink->lines(0)) MESSAGE(line);
  }
}

TEST_CASE("topic overrides route a destination to a named topic, both ways") {
  const std::string prefix = unique_prefix();
  const std::string events_topic = prefix + "reserveplace";
  KafkaOptions so = test_options(prefix, "sender");
  so.topic_prefix = prefix + "other.";
  so.topic_overrides = {{"events", events_topic}};
  auto sender = make_kafka_transport("sender", so);
  REQUIRE(sender.ok());
  KafkaOptions ro = test_options(prefix, "readmodel");
  ro.topic_overrides = {{"events", events_topic}};
  auto reader = make_kafka_transport("readmodel", ro);
  REQUIRE(reader.ok());
  Inbox inbox;
  REQUIRE((*reader)->subscribe("events", inbox.handler()).ok());
  Message e = command("ev1", "events", "s1");
  e.kind = MessageKind::kEvent;
  e.type = "ReservationPlaced";
  SendLog sends;
  (*sender)->send(e, sends.callback());
  REQUIRE(poll_until({sender->get(), reader->get()}, [&] { return inbox.has("ev1"); }));
  CHECK(inbox.messages[0].destination == "events");
  CHECK(sends.all_ok());
}

TEST_CASE("send failures are reported through the callback during a later poll") {
  const std::string prefix = unique_prefix();
  auto a = connect(prefix, "a");
  SendLog sends;
  a->send(command("x", "", "s"), sends.callback());
  a->send(command("y", "bad/name", "s"), sends.callback());
  CHECK(sends.results.empty());
  a->poll(0ms);
  REQUIRE(sends.results.size() == 2);
  CHECK(sends.results[0].code() == StatusCode::kInvalidArgument);
  CHECK(sends.results[1].code() == StatusCode::kInvalidArgument);
  Inbox inbox;
  CHECK(a->subscribe("bad/name", inbox.handler()).code() == StatusCode::kInvalidArgument);
  CHECK(a->subscribe("", inbox.handler()).code() == StatusCode::kInvalidArgument);

  // A callback that throws: the exception reaches the caller, and the outcomes
  // not reported yet are kept for the next poll().
  int later = 0;
  a->send(command("z", "", "s"), [](Status) { throw std::runtime_error("boom"); });
  a->send(command("w", "", "s"), [&](Status) { ++later; });
  CHECK_THROWS_AS(a->poll(0ms), std::runtime_error);
  CHECK(later == 0);
  a->poll(0ms);
  CHECK(later == 1);
}

// A broker of this test's own (the fixture's is shared with other tests), so
// that it can be stopped and started again. Stopped when the guard goes.
class PrivateBroker {
 public:
  PrivateBroker()
      : dir_(std::filesystem::temp_directory_path() /
             ("saga-kafka-outage-" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(dir_);
    start();
    std::ifstream in(dir_ / "bootstrap");
    in >> bootstrap_;
    REQUIRE_FALSE(bootstrap_.empty());
  }
  ~PrivateBroker() {
    stop();
    std::filesystem::remove_all(dir_);
  }
  // Starts the broker; a second start brings it back with the same port and data.
  void start() { REQUIRE(run("start") == 0); }
  void stop() { (void)run("stop"); }
  const std::string& bootstrap() const { return bootstrap_; }

 private:
  int run(const std::string& verb) const {
    const std::string cmd = std::string("'") + SAGA_SOURCE_DIR + "/scripts/kafka' " + verb +
                            " --dir '" + dir_.string() + "' >/dev/null";
    return std::system(cmd.c_str());
  }
  std::filesystem::path dir_;
  std::string bootstrap_;
};

TEST_CASE(
    "while the broker is down health is Unavailable and sends fail; afterwards both recover") {
  PrivateBroker broker;
  KafkaOptions o;
  o.brokers = broker.bootstrap();
  o.topic_prefix = unique_prefix();
  o.group_id = o.topic_prefix + "echo";
  o.properties = {{"session.timeout.ms", "6000"},
                  {"heartbeat.interval.ms", "500"},
                  {"message.timeout.ms", "3000"},  // fail undeliverable sends quickly
                  {"reconnect.backoff.max.ms", "500"}};
  auto made = make_kafka_transport("echo", o);
  REQUIRE_MESSAGE(made.ok(), made.status().to_string());
  std::unique_ptr<Transport> t = std::move(*made);
  Inbox inbox;
  REQUIRE(t->subscribe("echo", inbox.handler()).ok());
  SendLog sends;
  t->send(command("before", "echo", "s"), sends.callback());
  REQUIRE(poll_until({t.get()}, [&] { return inbox.has("before"); }));
  REQUIRE(sends.all_ok());
  for (auto& ack : inbox.acks) ack();
  CHECK(t->health().ok());

  broker.stop();
  REQUIRE(poll_until(
      {t.get()}, [&] { return !t->health().ok(); }, 30s));
  CHECK(t->health().code() == StatusCode::kUnavailable);
  MESSAGE("while down: ", t->health().to_string());
  t->send(command("during", "echo", "s"), sends.callback());
  REQUIRE(poll_until(
      {t.get()}, [&] { return sends.results.size() == 2; }, 30s));
  CHECK(sends.results[1].code() == StatusCode::kUnavailable);
  MESSAGE("send while down: ", sends.results[1].to_string());

  broker.start();
  REQUIRE(poll_until(
      {t.get()}, [&] { return t->health().ok(); }, 60s));
  // The sender keeps what failed and sends it again (as the outbox does).
  t->send(command("during", "echo", "s"), sends.callback());
  REQUIRE(poll_until(
      {t.get()}, [&] { return inbox.has("during"); }, 60s));
  REQUIRE(sends.results.size() == 3);
  CHECK(sends.results[2].ok());
  for (auto& ack : inbox.acks) ack();

  // Shutting down with the broker gone must not hang.
  broker.stop();
  t->send(command("never", "echo", "s"), sends.callback());
  const auto start = Steady::now();
  t.reset();
  const auto took = Steady::now() - start;
  MESSAGE("destroyed without a broker in ",
          std::chrono::duration_cast<std::chrono::milliseconds>(took).count(), " ms");
  CHECK(took < 30s);
}

}  // namespace
}  // namespace saga
