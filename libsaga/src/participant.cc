// The participant engine: one iteration takes the commands the transport
// delivered, runs each through the inbox rules and its handler, stages state
// changes + inbox records + replies in one batch, writes it, and only then
// acks the commands and sends the replies.
#include "saga/participant.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "background_loop.h"
#include "inbox.h"
#include "outbox.h"
#include "saga/json.h"
#include "store/codec.h"
#include "store/store.h"

namespace saga {
namespace internal {

namespace {
// First byte of a binary inbox record. Older records are JSON objects, which
// start with '{'.
constexpr uint8_t kBinaryInboxRecord = 0x01;
}  // namespace

void encode_inbox_record(const InboxRecord& r, std::string& out) {
  out.clear();
  out.reserve(8 + r.payload.size());
  out.push_back(static_cast<char>(kBinaryInboxRecord));
  out.push_back(static_cast<char>(r.outcome));
  out.push_back(r.voided ? 1 : 0);
  put_bytes(out, r.payload);
}

StatusOr<InboxRecord> decode_inbox_record(std::string_view bytes) {
  if (bytes.empty() || static_cast<uint8_t>(bytes[0]) != kBinaryInboxRecord) {
    // A JSON object written by an older version.
    Json j = parse_json(bytes).value_or(Json(Json::value_t::discarded));
    if (!j.is_object() || !j.contains("o") || !j.contains("p") || !j["o"].is_number_integer() ||
        !j["p"].is_string()) {
      return Status::data_loss("undecodable inbox record");
    }
    return InboxRecord{static_cast<ReplyOutcome>(j["o"].get<int>()), j["p"].get<std::string>(),
                       j.value("v", false)};
  }
  RecordReader r(bytes.substr(1));
  InboxRecord rec;
  const uint8_t outcome = r.byte();
  const uint8_t voided = r.byte();
  rec.payload = r.bytes();
  if (!r.ok() || !r.done() || voided > 1 ||
      outcome < static_cast<uint8_t>(ReplyOutcome::kSuccess) ||
      outcome > static_cast<uint8_t>(ReplyOutcome::kRetry)) {
    return Status::data_loss("undecodable inbox record");
  }
  rec.outcome = static_cast<ReplyOutcome>(outcome);
  rec.voided = voided == 1;
  return rec;
}

namespace {

enum Cf : size_t { kState = 0, kInbox, kOutbox };
const std::vector<std::string> kColumnFamilies = {"state", "inbox", "outbox"};

using Overlay = std::map<std::string, std::optional<std::string>, std::less<>>;

// One command's (or local write's) transaction, layered on what earlier
// commands of the same batch wrote.
class Txn final : public StateTxn {
 public:
  Txn(const Store& store, const Overlay& batch_overlay, std::string event_id_prefix)
      : store_(store), batch_(batch_overlay), event_id_prefix_(std::move(event_id_prefix)) {}

  StatusOr<std::optional<std::string>> get(std::string_view key) override {
    if (auto it = mine_.find(key); it != mine_.end()) return it->second;
    if (auto it = batch_.find(key); it != batch_.end()) return it->second;
    return store_.get(store_.cf(kState), key);
  }
  void put(std::string_view key, std::string_view value) override {
    mine_[std::string(key)] = std::string(value);
  }
  void del(std::string_view key) override { mine_[std::string(key)] = std::nullopt; }
  void emit(Message event) override {
    event.kind = MessageKind::kEvent;
    if (event.id.empty()) event.id = event_id_prefix_ + "/e" + std::to_string(events_.size());
    events_.push_back(std::move(event));
  }

  // Moves the writes into `batch` and `overlay`; returns the events.
  std::vector<Message> commit(Batch& batch, Overlay& overlay) {
    for (auto& [k, v] : mine_) {
      if (v) {
        batch.put(store_.cf(kState), k, *v);
      } else {
        batch.del(store_.cf(kState), k);
      }
      overlay[k] = std::move(v);
    }
    mine_.clear();
    return std::move(events_);
  }

 private:
  const Store& store_;
  const Overlay& batch_;
  std::string event_id_prefix_;
  Overlay mine_;
  std::vector<Message> events_;
};

class ParticipantImpl final : public Participant {
 public:
  ParticipantImpl(ParticipantOptions options, std::shared_ptr<Transport> transport)
      : opts_(std::move(options)), transport_(std::move(transport)) {
    const std::string name = opts_.logger.empty() ? opts_.name : opts_.logger;
    log_ = spdlog::get(name);
    if (!log_) log_ = spdlog::default_logger()->clone(name);
  }
  ~ParticipantImpl() override { stop(); }

  Status init() {
    SAGA_ASSIGN_OR_RETURN(store_, Store::open(opts_.data_dir, kColumnFamilies, opts_.sync));
    outbox_ =
        std::make_unique<Outbox>(Keyspace(*store_, 0), store_->cf(kOutbox), *transport_,
                                 *opts_.clock, log_);
    SAGA_RETURN_IF_ERROR(outbox_->recover());
    return transport_->subscribe(opts_.name, [this](Message m, Transport::Ack ack) {
      inbound_.emplace_back(std::move(m), std::move(ack));
    });
  }

  Status on(std::string command_type, CommandHandler handler) override {
    if (command_type.empty() || !handler)
      return Status::invalid_argument("a handler needs a command type and a function");
    std::lock_guard lock(engine_mu_);
    if (!handlers_.emplace(command_type, std::move(handler)).second) {
      return Status::invalid_argument("handler for '" + command_type + "' registered twice");
    }
    return ok_status();
  }

  Status write(const std::function<Status(StateTxn&)>& fn) override {
    std::lock_guard lock(engine_mu_);
    SAGA_RETURN_IF_ERROR(store_status_);
    // The nonce keeps event ids unique across restarts, even when the clock
    // has not moved (or moved back) since the last run.
    Txn txn(*store_, overlay_, "local/" + instance_nonce_ + "/" + std::to_string(local_writes_++));
    SAGA_RETURN_IF_ERROR(fn(txn));
    Batch batch;
    Overlay scratch;
    for (Message& e : txn.commit(batch, scratch)) outbox_->stage(batch, std::move(e));
    Status s = store_->write(batch);
    if (!s.ok()) {
      outbox_->discard_staged();
      return s;
    }
    ++writes_;
    outbox_->release();
    return ok_status();
  }

  StatusOr<std::optional<std::string>> get(std::string_view key) const override {
    return store_->get(store_->cf(kState), key);
  }

  Status scan(std::string_view prefix,
              const std::function<bool(std::string_view, std::string_view)>& fn) const override {
    return store_->scan(store_->cf(kState), prefix, prefix, fn);
  }

  size_t run_once(Duration max_wait) override {
    std::lock_guard lock(engine_mu_);
    if (!store_status_.ok()) return 0;
    outbox_->retry_failed();
    transport_->poll(outbox_->has_unsent() ? Duration{0} : max_wait);
    outbox_->stage_confirmed(batch_);
    std::vector<Transport::Ack> acks;
    const size_t handled = inbound_.size();
    for (auto& [msg, ack] : inbound_) {
      handle(msg);
      acks.push_back(std::move(ack));
    }
    inbound_.clear();
    if (!batch_.empty()) {
      Status s = store_->write(batch_);
      batch_.clear();
      overlay_.clear();
      inbox_overlay_.clear();
      if (!s.ok()) {
        store_status_ = s.with_context("participant store write failed; reopen it");
        log_->critical("{}", store_status_.to_string());
        outbox_->discard_staged();
        stats_ = {};  // counts of this batch never happened
        return 0;
      }
      ++writes_;
    }
    commit_stats();
    for (auto& ack : acks) ack();
    outbox_->release();
    return handled;
  }

  void start_background() override {
    loop_.start([this] { run_once(Duration{2}); });
  }

  void stop() override { loop_.stop(); }

  ParticipantStats stats() const override {
    ParticipantStats s;
    s.applied = applied_;
    s.refused = refused_;
    s.retried = retried_;
    s.duplicates = duplicates_;
    s.voided = voided_;
    s.writes = writes_;
    s.outbox_depth = outbox_depth_;
    return s;
  }

  Status health() const override {
    if (!store_status_.ok()) return store_status_;
    return transport_->health();
  }

 private:
  // Per-batch counters, published only once the batch is durable.
  struct BatchStats {
    uint64_t applied = 0, refused = 0, retried = 0, duplicates = 0, voided = 0;
  };

  void commit_stats() {
    applied_ += stats_.applied;
    refused_ += stats_.refused;
    retried_ += stats_.retried;
    duplicates_ += stats_.duplicates;
    voided_ += stats_.voided;
    stats_ = {};
    outbox_depth_ = outbox_->depth();
  }

  StatusOr<std::optional<InboxRecord>> lookup(const std::string& command_id) {
    if (auto it = inbox_overlay_.find(command_id); it != inbox_overlay_.end())
      return std::optional(it->second);
    SAGA_ASSIGN_OR_RETURN(auto bytes, store_->get(store_->cf(kInbox), command_id));
    if (!bytes) return std::optional<InboxRecord>();
    SAGA_ASSIGN_OR_RETURN(InboxRecord r, decode_inbox_record(*bytes));
    return std::optional(std::move(r));
  }

  void remember(const std::string& command_id, InboxRecord r) {
    encode_inbox_record(r, record_);
    batch_.put(store_->cf(kInbox), command_id, record_);
    inbox_overlay_[command_id] = std::move(r);
  }

  void reply(const Message& cmd, ReplyOutcome outcome, std::string payload) {
    if (cmd.reply_to.empty()) {
      log_->warn("command {} has no reply_to; no reply sent", cmd.id);
      return;
    }
    Message r;
    r.id =
        cmd.id + (outcome == ReplyOutcome::kRetry ? "/retry" + std::to_string(cmd.attempt) : "/r");
    r.kind = MessageKind::kReply;
    r.type = "reply";
    r.destination = cmd.reply_to;
    r.key = cmd.saga_id.empty() ? cmd.key : cmd.saga_id;
    r.saga_id = cmd.saga_id;
    r.in_reply_to = cmd.id;
    r.attempt = cmd.attempt;
    r.outcome = outcome;
    r.traceparent = cmd.traceparent;
    r.payload = std::move(payload);
    outbox_->stage(batch_, std::move(r));
  }

  // Error texts may carry bytes from the wire or from handlers that are not
  // UTF-8; they must still make a reply, never an exception.
  static std::string error_payload(const std::string& error) {
    return dump_lenient(Json{{"error", error}});
  }
  static std::string dump_lenient(const Json& j) {
    return j.dump(-1, ' ', false, Json::error_handler_t::replace);
  }
  static std::string make_nonce() {
    std::random_device rd;
    char buf[17];
    std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
    return buf;
  }

  void handle(const Message& cmd) {
    if (cmd.kind != MessageKind::kCommand || cmd.id.empty()) {
      log_->warn("ignoring non-command message '{}' of type '{}'", cmd.id, cmd.type);
      return;
    }
    StatusOr<std::optional<InboxRecord>> seen = lookup(cmd.id);
    if (!seen.ok()) {
      // Cannot tell whether it was applied: answer retry, never guess.
      log_->error("inbox lookup of {} failed: {}", cmd.id, seen.status().to_string());
      return reply(cmd, ReplyOutcome::kRetry, error_payload(seen.status().to_string()));
    }
    if (*seen) {
      ++stats_.duplicates;
      const InboxRecord& r = **seen;
      return reply(cmd, r.outcome, r.payload);
    }

    Json action_reply;
    if (!cmd.compensates.empty()) {
      StatusOr<std::optional<InboxRecord>> action = lookup(cmd.compensates);
      if (!action.ok())
        return reply(cmd, ReplyOutcome::kRetry, error_payload(action.status().to_string()));
      if (!*action) {
        // The compensation overtook its action: void the action so that it is
        // refused if it ever arrives, and report the undo as done.
        ++stats_.voided;
        remember(cmd.compensates, {ReplyOutcome::kFailure,
                                   error_payload("cancelled by compensation " + cmd.id), true});
        remember(cmd.id, {ReplyOutcome::kSuccess, "{}"});
        return reply(cmd, ReplyOutcome::kSuccess, "{}");
      }
      if ((*action)->outcome != ReplyOutcome::kSuccess) {
        remember(cmd.id, {ReplyOutcome::kSuccess, "{}"});  // nothing was applied, nothing to undo
        return reply(cmd, ReplyOutcome::kSuccess, "{}");
      }
      action_reply = parse_json((*action)->payload).value_or(Json(Json::value_t::discarded));
      if (action_reply.is_discarded()) action_reply = Json();
    }

    auto h = handlers_.find(cmd.type);
    if (h == handlers_.end()) {
      ++stats_.refused;
      const std::string err =
          "participant '" + opts_.name + "' has no handler for command '" + cmd.type + "'";
      log_->error("{}", err);
      remember(cmd.id, {ReplyOutcome::kFailure, error_payload(err)});
      return reply(cmd, ReplyOutcome::kFailure, error_payload(err));
    }
    Json payload = cmd.payload.empty()
                       ? Json()
                       : parse_json(cmd.payload).value_or(Json(Json::value_t::discarded));
    if (payload.is_discarded()) {
      ++stats_.refused;
      const std::string err = "command " + cmd.id + " has a payload that is not JSON";
      remember(cmd.id, {ReplyOutcome::kFailure, error_payload(err)});
      return reply(cmd, ReplyOutcome::kFailure, error_payload(err));
    }
    Txn txn(*store_, overlay_, cmd.id);
    CommandContext ctx{cmd, std::move(payload), std::move(action_reply), txn};
    HandlerResult result;
    try {
      result = h->second(ctx);
    } catch (const std::exception& e) {
      // A throwing handler is a bug; applying nothing and asking for a retry
      // keeps money and stock safe while someone looks.
      log_->error("handler '{}' threw on {}: {}", cmd.type, cmd.id, e.what());
      result = HandlerResult::retry(std::string("handler threw: ") + e.what());
    } catch (...) {
      log_->error("handler '{}' threw a non-standard exception on {}", cmd.type, cmd.id);
      result = HandlerResult::retry("handler threw a non-standard exception");
    }
    switch (result.outcome) {
      case ReplyOutcome::kSuccess: {
        ++stats_.applied;
        for (Message& e : txn.commit(batch_, overlay_)) {
          if (e.saga_id.empty()) e.saga_id = cmd.saga_id;
          if (e.key.empty()) e.key = cmd.key;
          if (e.traceparent.empty()) e.traceparent = cmd.traceparent;
          outbox_->stage(batch_, std::move(e));
        }
        std::string body = result.reply.is_null() ? "{}" : dump_lenient(result.reply);
        remember(cmd.id, {ReplyOutcome::kSuccess, body});
        return reply(cmd, ReplyOutcome::kSuccess, std::move(body));
      }
      case ReplyOutcome::kFailure:
        ++stats_.refused;
        remember(cmd.id, {ReplyOutcome::kFailure, error_payload(result.error)});
        return reply(cmd, ReplyOutcome::kFailure, error_payload(result.error));
      case ReplyOutcome::kRetry:
        ++stats_.retried;
        return reply(cmd, ReplyOutcome::kRetry, error_payload(result.error));
    }
  }

  ParticipantOptions opts_;
  std::shared_ptr<Transport> transport_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Outbox> outbox_;

  std::mutex engine_mu_;
  std::unordered_map<std::string, CommandHandler> handlers_;
  std::vector<std::pair<Message, Transport::Ack>> inbound_;
  Batch batch_;
  Overlay overlay_;
  std::string record_;  // scratch for encode_inbox_record
  std::unordered_map<std::string, InboxRecord> inbox_overlay_;
  BatchStats stats_;
  uint64_t local_writes_ = 0;
  std::string instance_nonce_ = make_nonce();
  Status store_status_;

  BackgroundLoop loop_;

  std::atomic<uint64_t> applied_{0}, refused_{0}, retried_{0}, duplicates_{0}, voided_{0},
      writes_{0}, outbox_depth_{0};
};

}  // namespace
}  // namespace internal

StatusOr<std::unique_ptr<Participant>> Participant::open(ParticipantOptions options,
                                                         std::shared_ptr<Transport> transport) {
  if (options.name.empty()) return Status::invalid_argument("ParticipantOptions::name is required");
  if (options.data_dir.empty())
    return Status::invalid_argument("ParticipantOptions::data_dir is required");
  if (!transport) return Status::invalid_argument("a transport is required");
  if (!options.clock) options.clock = std::make_shared<SystemClock>();
  auto impl = std::make_unique<internal::ParticipantImpl>(std::move(options), std::move(transport));
  SAGA_RETURN_IF_ERROR(impl->init());
  return std::unique_ptr<Participant>(std::move(impl));
}

}  // namespace saga
