// Test support: a fake participant on a MemoryBus that answers commands from
// a script, so orchestrator tests decide every reply without writing handlers.
//
// It behaves like the participant SDK on the wire: an inbox keyed by command
// id answers a duplicate with the first final (success or failure) reply, the
// reply ids follow the SDK ("<command>/r" for final replies,
// "<command>/retry<attempt>" for retry replies), and replies echo the
// command's attempt. It keeps its state in memory only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "saga/definition.h"
#include "saga/memory_transport.h"
#include "saga/message.h"

namespace saga::testing {

/// What the participant does with one command.
struct Response {
  enum class Act { kSucceed, kFail, kRetry, kSwallow };
  Act act = Act::kSucceed;
  /// kSucceed: the reply payload. kFail, kRetry: {"error": ...}.
  Json payload = Json::object();
  /// How many commands of the type this response answers before the next
  /// one in the script takes over; 0 = every remaining one.
  uint32_t times = 0;
};

/// Applies the command and replies success with `payload`.
inline Response succeed(Json payload = Json::object()) {
  return {Response::Act::kSucceed, std::move(payload), 0};
}
/// Refuses the command for good (remembered in the inbox).
inline Response fail(std::string error = "refused") {
  return {Response::Act::kFail, Json{{"error", std::move(error)}}, 0};
}
/// Asks for the command again later (not remembered).
inline Response ask_retry(std::string error = "busy") {
  return {Response::Act::kRetry, Json{{"error", std::move(error)}}, 0};
}
/// Neither applies nor answers the command (not remembered): a lost reply.
inline Response swallow() { return {Response::Act::kSwallow, Json::object(), 0}; }
/// `r` for the next `n` commands of its type only.
inline Response first(uint32_t n, Response r) {
  r.times = n;
  return r;
}

/// A command as the participant received it.
struct ReceivedCommand {
  std::string id;
  std::string type;
  uint32_t attempt = 0;
  std::string compensates;
  Json payload;
};

/// A scripted participant named `name`. Not thread-safe; single test thread.
/// Neither copyable nor movable (its subscription points at it).
class ScriptedParticipant {
 public:
  /// Subscribes to `name` on `bus`. When given, `journal` gets
  /// "<name>:<command type>" for every command received, so that tests see
  /// the order across participants.
  ScriptedParticipant(std::string name, const std::shared_ptr<MemoryBus>& bus,
                      std::vector<std::string>* journal = nullptr)
      : name_(std::move(name)), journal_(journal), transport_(bus->connect(name_)) {
    Status s = transport_->subscribe(name_, [this](Message m, Transport::Ack ack) {
      handle(std::move(m));
      ack();
    });
    if (!s.ok()) throw std::runtime_error("ScriptedParticipant: " + s.to_string());
  }
  ScriptedParticipant(const ScriptedParticipant&) = delete;
  ScriptedParticipant& operator=(const ScriptedParticipant&) = delete;

  /// Replaces the script of `command_type` and restarts its count. Types
  /// without a script succeed with {}; a script whose limited responses are
  /// used up succeeds with {} as well.
  void script(const std::string& command_type, std::vector<Response> responses) {
    scripts_[command_type] = std::move(responses);
    handled_[command_type] = 0;
  }

  /// While paused, poll() leaves messages waiting on the bus.
  void set_paused(bool paused) { paused_ = paused; }

  /// Handles the commands waiting on the bus. Returns how many it handled.
  size_t poll() { return paused_ ? 0 : transport_->poll(Duration{0}); }

  /// Every command received, duplicates included, in order.
  const std::vector<ReceivedCommand>& received() const { return received_; }
  /// The commands of one type received, in order.
  std::vector<ReceivedCommand> received(std::string_view type) const {
    std::vector<ReceivedCommand> out;
    for (const ReceivedCommand& c : received_) {
      if (c.type == type) out.push_back(c);
    }
    return out;
  }
  /// Types of the commands received, in order ("reserve", "release", ...).
  std::vector<std::string> received_types() const {
    std::vector<std::string> out;
    for (const ReceivedCommand& c : received_) out.push_back(c.type);
    return out;
  }

  /// Times `command_id` was applied (its first final success): 0 or 1 when
  /// the inbox works.
  uint32_t applied(const std::string& command_id) const {
    auto it = applied_.find(command_id);
    return it == applied_.end() ? 0 : it->second;
  }

  /// Every reply sent, in order (to deliver one again in a test).
  const std::vector<Message>& replies() const { return replies_; }

  /// Sends `m` from this participant's endpoint (a duplicate or forged reply).
  void send_raw(Message m) { transport_->send(std::move(m), nullptr); }

 private:
  void handle(Message cmd) {
    if (journal_) journal_->push_back(name_ + ":" + cmd.type);
    received_.push_back({cmd.id, cmd.type, cmd.attempt, cmd.compensates,
                         Json::parse(cmd.payload, nullptr, /*allow_exceptions=*/false)});
    if (auto it = inbox_.find(cmd.id); it != inbox_.end()) {
      return reply(cmd, it->second.first, it->second.second);  // a duplicate
    }
    const Response r = next_response(cmd.type);
    switch (r.act) {
      case Response::Act::kSucceed:
        ++applied_[cmd.id];
        inbox_[cmd.id] = {ReplyOutcome::kSuccess, r.payload};
        return reply(cmd, ReplyOutcome::kSuccess, r.payload);
      case Response::Act::kFail:
        inbox_[cmd.id] = {ReplyOutcome::kFailure, r.payload};
        return reply(cmd, ReplyOutcome::kFailure, r.payload);
      case Response::Act::kRetry:
        return reply(cmd, ReplyOutcome::kRetry, r.payload);
      case Response::Act::kSwallow:
        return;
    }
  }

  Response next_response(const std::string& type) {
    const uint32_t n = handled_[type]++;  // 0-based index of this command of its type
    auto it = scripts_.find(type);
    if (it == scripts_.end()) return succeed();
    uint32_t covered = 0;
    for (const Response& r : it->second) {
      if (r.times == 0) return r;
      covered += r.times;
      if (n < covered) return r;
    }
    return succeed();
  }

  void reply(const Message& cmd, ReplyOutcome outcome, const Json& payload) {
    Message r;
    const bool retry = outcome == ReplyOutcome::kRetry;
    r.id = cmd.id + (retry ? "/retry" + std::to_string(cmd.attempt) : std::string("/r"));
    r.kind = MessageKind::kReply;
    r.type = "reply";
    r.destination = cmd.reply_to;
    r.key = cmd.saga_id;
    r.saga_id = cmd.saga_id;
    r.in_reply_to = cmd.id;
    r.attempt = cmd.attempt;
    r.outcome = outcome;
    r.traceparent = cmd.traceparent;
    r.payload = payload.dump();
    replies_.push_back(r);
    transport_->send(std::move(r), nullptr);
  }

  std::string name_;
  std::vector<std::string>* journal_;
  std::unique_ptr<Transport> transport_;
  bool paused_ = false;
  std::map<std::string, std::vector<Response>> scripts_;
  std::map<std::string, uint32_t> handled_;  // commands of each type answered by the script
  std::map<std::string, std::pair<ReplyOutcome, Json>> inbox_;  // final replies by command id
  std::map<std::string, uint32_t> applied_;
  std::vector<ReceivedCommand> received_;
  std::vector<Message> replies_;
};

}  // namespace saga::testing
