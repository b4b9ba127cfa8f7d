// Test support: a reference participant service (its handlers and HTTP routes)
// in-process, over a MemoryBus whose "orch" endpoint plays the orchestrator
// and collects replies and domain events, with its HTTP server on 127.0.0.1:0.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "saga/clock.h"
#include "saga/memory_transport.h"
#include "saga/participant.h"
#include "saga/reshard.h"
#include "saga/service/http_client.h"
#include "saga/service/http_server.h"
#include "saga/service/router.h"
#include "support/identity.h"
#include "support/temp_dir.h"

namespace saga::testing {

/// A command for `participant` as the orchestrator would send it (attempt 1,
/// replies to "orch.replies"); a compensation when `compensates` is set.
inline Message participant_command(const std::string& participant, const std::string& saga,
                                   const std::string& type, const Json& payload,
                                   const std::string& compensates = {}) {
  Message m;
  m.id = saga + "/" + type + (compensates.empty() ? "/a" : "/c");
  m.kind = MessageKind::kCommand;
  m.type = type;
  m.destination = participant;
  m.key = saga;
  m.saga_id = saga;
  m.reply_to = "orch.replies";
  m.attempt = 1;
  m.compensates = compensates;
  m.payload = payload.dump();
  return m;
}

class ParticipantServiceHarness {
 public:
  static constexpr char kReplyTo[] = "orch.replies";

  ParticipantServiceHarness(const std::string& name, const std::string& event_destination,
                            const std::function<Status(Participant&)>& register_handlers,
                            const std::function<void(service::Router&, Participant&)>& add_routes)
      : name_(name), register_handlers_(register_handlers), add_routes_(add_routes) {
    for (const std::string& d : {std::string(kReplyTo), event_destination}) {
      std::vector<Message>* sink = d == kReplyTo ? &replies : &events;
      REQUIRE(orch->subscribe(d,
                              [sink](Message m, Transport::Ack ack) {
                                sink->push_back(std::move(m));
                                ack();
                              })
                  .ok());
    }
    open_participant(dir.path().string(), 0);
  }

  /// Stops the participant and its HTTP server, moves its store to `shards`
  /// shards with `shard_key` (saga/reshard.h) into `moved`, and starts both
  /// again on the new store (the HTTP port changes; clients are made anew).
  void reshard(uint32_t shards, const ShardKeyFn& shard_key) {
    http->close();
    server->stop();
    p->stop();
    p.reset();
    const std::string to = (moved.path() / "store").string();
    auto done = reshard_participant({.from = dir.path().string(), .to = to, .shards = shards},
                                    shard_key);
    REQUIRE_MESSAGE(done.ok(), done.status().to_string());
    open_participant(to, shards);
  }

  /// A client of this service whose requests come from `who`.
  std::unique_ptr<service::HttpClient> client_as(const service::Identity& who) const {
    return testing::client_as(server->port(), who);
  }
  /// A client sending no identity headers (as if the gateway were bypassed).
  std::unique_ptr<service::HttpClient> anonymous() const {
    return std::make_unique<service::HttpClient>("127.0.0.1", server->port());
  }
  ~ParticipantServiceHarness() {
    http->close();
    server->stop();
    p->stop();
  }

  /// A command to this participant as the orchestrator would send it.
  Message command(const std::string& saga, const std::string& type, const Json& payload,
                  const std::string& compensates = {}) const {
    return participant_command(name_, saga, type, payload, compensates);
  }

  /// Drives the participant and the orchestrator's endpoint until `done` or 10 s.
  bool run_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      p->run_once(Duration{1});
      orch->poll(Duration{0});
    }
    return true;
  }

  /// Sends `cmd` and returns its reply.
  Message roundtrip(Message cmd) {
    const size_t before = replies.size();
    const std::string id = cmd.id;
    orch->send(std::move(cmd), nullptr);
    REQUIRE_MESSAGE(run_until([&] { return replies.size() > before; }), "no reply to " << id);
    CHECK(replies.back().in_reply_to == id);
    return replies.back();
  }

  /// Lets whatever is already on the bus be delivered, waiting for nothing.
  void settle() {
    for (int i = 0; i < 3; ++i) {
      p->run_once(Duration{0});
      orch->poll(Duration{0});
    }
  }

  /// Waits until `n` events arrived.
  void await_events(size_t n) {
    REQUIRE_MESSAGE(run_until([&] { return events.size() >= n; }),
                    "expected " << n << " events, got " << events.size());
  }

  service::ClientResponse post(const std::string& target, const Json& body) {
    auto r = http->post_json(target, body);
    REQUIRE(r.ok());
    return *r;
  }
  service::ClientResponse put(const std::string& target, const Json& body) {
    auto r = http->put_json(target, body);
    REQUIRE(r.ok());
    return *r;
  }
  service::ClientResponse get(const std::string& target) {
    auto r = http->get(target);
    REQUIRE(r.ok());
    return *r;
  }
  Json get_json(const std::string& target, int status = 200) {
    service::ClientResponse r = get(target);
    REQUIRE_MESSAGE(r.status == status, target << " -> " << r.status << " " << r.body);
    auto j = r.json();
    REQUIRE(j.ok());
    return *j;
  }

 private:
  // Opens the participant on `data_dir` (`shards`: 0 = the store's or the
  // default), registers its handlers and starts its HTTP server.
  void open_participant(const std::string& data_dir, uint32_t shards) {
    ParticipantOptions o;
    o.name = name_;
    o.data_dir = data_dir;
    o.sync = false;
    o.shards = shards;
    o.clock = clock;
    auto opened = Participant::open(o, std::shared_ptr<Transport>(bus->connect(name_)));
    REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
    p = std::move(*opened);
    REQUIRE(register_handlers_(*p).ok());
    service::Router router;
    add_routes_(router, *p);
    service::ServerOptions so;
    so.host = "127.0.0.1";
    so.port = 0;
    server = std::make_unique<service::HttpServer>(so, std::move(router));
    REQUIRE(server->start().ok());
    // Acting as an admin: tests of who may do what use client_as().
    http = testing::client_as(server->port(), admin_identity());
  }

  std::string name_;
  std::function<Status(Participant&)> register_handlers_;
  std::function<void(service::Router&, Participant&)> add_routes_;

 public:
  TempDir dir;
  TempDir moved;  // the store after reshard()
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<MemoryBus> bus = MemoryBus::create(clock, 7);
  std::unique_ptr<Transport> orch = bus->connect("orch");
  std::unique_ptr<Participant> p;
  std::unique_ptr<service::HttpServer> server;
  std::unique_ptr<service::HttpClient> http;
  std::vector<Message> replies;
  std::vector<Message> events;
};

}  // namespace saga::testing
