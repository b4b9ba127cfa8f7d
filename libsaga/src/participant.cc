// The participant engine: one iteration of a driver (an engine thread's
// shards) takes the commands the transport delivered to them, runs each
// through the inbox rules and its handler, stages state changes + inbox
// records + replies in one batch, writes it, and only then acks the commands
// and sends the replies.
#include "saga/participant.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "background_loop.h"
#include "changelog.h"
#include "inbox.h"
#include "outbox.h"
#include "owners.h"
#include "saga/json.h"
#include "saga/shard.h"
#include "store/codec.h"
#include "store/families.h"
#include "trace.h"
#include "store/store.h"
#include "sweep.h"

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
        !j["p"].is_string() || j["o"].get<int64_t>() < static_cast<int>(ReplyOutcome::kSuccess) ||
        j["o"].get<int64_t>() > static_cast<int>(ReplyOutcome::kRetry) ||
        (j.contains("v") && !j["v"].is_boolean())) {
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
const std::vector<std::string>& kColumnFamilies = kParticipantFamilies;

// State keys put with an expiry (StateTxn::put) have, in the inbox family,
// an expiry key 0x00 0x01 ‖ be64(expires_ms) ‖ state key (empty value) and a
// marker 0x00 0x02 ‖ state key -> be64(expires_ms) of the latest such put.
// Inbox expiry keys never collide: their be64 of a time starts with 0x00.
constexpr std::string_view kStateExpiryPrefix{"\0\x01", 2};
constexpr std::string_view kStateMarkerPrefix{"\0\x02", 2};

std::string state_expiry_key(int64_t expires_ms, std::string_view key) {
  std::string k(kStateExpiryPrefix);
  append_be64(k, static_cast<uint64_t>(std::max<int64_t>(0, expires_ms)));
  k += key;
  return k;
}

std::string state_marker_key(std::string_view key) {
  std::string k(kStateMarkerPrefix);
  k += key;
  return k;
}

using Overlay = std::map<std::string, std::optional<std::string>, std::less<>>;

// One command's (or local write's) transaction, layered on what earlier
// commands of the same batch wrote.
class Txn final : public StateTxn {
 public:
  Txn(const Keyspace& ks, const Overlay& batch_overlay, std::string event_id_prefix)
      : ks_(ks), batch_(batch_overlay), event_id_prefix_(std::move(event_id_prefix)) {}

  StatusOr<std::optional<std::string>> get(std::string_view key) override {
    if (auto it = mine_.find(key); it != mine_.end()) return it->second;
    if (auto it = batch_.find(key); it != batch_.end()) return it->second;
    return ks_.get(ks_.store().cf(kState), key);
  }
  void put(std::string_view key, std::string_view value) override {
    mine_[std::string(key)] = std::string(value);
  }
  void put(std::string_view key, std::string_view value, int64_t expires_ms) override {
    mine_[std::string(key)] = std::string(value);
    if (expires_ms > 0) expiries_[std::string(key)] = expires_ms;
  }
  void del(std::string_view key) override { mine_[std::string(key)] = std::nullopt; }
  void emit(Message event) override {
    event.kind = MessageKind::kEvent;
    if (event.id.empty()) event.id = event_id_prefix_ + "/e" + std::to_string(events_.size());
    events_.push_back(std::move(event));
  }

  // Moves the writes into `batch` and `overlay`; returns the events.
  std::vector<Message> commit(Batch& batch, Overlay& overlay) {
    rocksdb::ColumnFamilyHandle* const cf = ks_.store().cf(kState);
    for (auto& [k, v] : mine_) {
      if (v) {
        ks_.put(batch, cf, k, *v);
      } else {
        ks_.del(batch, cf, k);
      }
      overlay[k] = std::move(v);
    }
    rocksdb::ColumnFamilyHandle* const inbox = ks_.store().cf(kInbox);
    for (const auto& [k, expires] : expiries_) {
      const std::string at = be64(static_cast<uint64_t>(expires));
      ks_.put(batch, inbox, state_expiry_key(expires, k), "");
      ks_.put(batch, inbox, state_marker_key(k), at);
    }
    expiries_.clear();
    mine_.clear();
    return std::move(events_);
  }

 private:
  const Keyspace& ks_;
  const Overlay& batch_;
  std::string event_id_prefix_;
  Overlay mine_;
  std::map<std::string, int64_t> expiries_;  // key -> expires_ms, of puts with one
  std::vector<Message> events_;
};

// Per-batch counters, published only once the batch is durable.
struct BatchStats {
  uint64_t applied = 0, refused = 0, retried = 0, duplicates = 0, voided = 0, expired = 0,
           state_expired = 0;
};

// Inbox records expire by time: next to each, a key 0x00 ‖ be64(written_ms)
// ‖ command id (empty value) in the same family. Command ids start with a
// saga id, never with 0x00.
constexpr char kExpiryPrefix = '\0';

std::string expiry_key(int64_t written_ms, std::string_view command_id) {
  std::string k(1, kExpiryPrefix);
  append_be64(k, static_cast<uint64_t>(std::max<int64_t>(0, written_ms)));
  k += command_id;
  return k;
}

// Inbox records an iteration removes at most (over its driver's shards).
constexpr size_t kExpiryPerIteration = 4096;

struct Driver;

// One shard's engine state. Everything but the mailbox is touched only by the
// thread driving the shard, holding its driver's lock.
struct Shard {
  Shard(Store& store, uint32_t i) : ks(store, i), index_(i) {}
  uint32_t index() const { return index_; }
  const Keyspace ks;
  Driver* driver = nullptr;  // fixed after init()
  std::unique_ptr<Outbox> outbox;
  std::atomic<uint64_t> depth{0};  // the outbox's, published for stats()
  // With ParticipantOptions::replicas: whether the group assigned the shard
  // to this process (set by the transport's listener, under the driver's
  // lock), and whether it is claimed and restored (it then handles commands).
  // Without replicas every shard is both, always.
  bool assigned = true;
  std::atomic<bool> owned{true};
  bool outbox_recovered = false;
  Batch* batch = nullptr;          // the driver's batch, during an iteration
  // Commands taken from the mailbox, in arrival order, not yet handled (the
  // shard rests, or catches up with its log first).
  std::vector<std::pair<Message, Transport::Ack>> inbound;
  // What earlier commands of the current batch wrote, not yet in the store.
  Overlay overlay;
  std::unordered_map<std::string, InboxRecord> inbox_overlay;
  // With ParticipantOptions::changelog: the claim of the shard's changelog,
  // the batch's replies and events (they go out with the commit), and
  // whether a later claim fenced this one (the shard then does nothing more).
  std::unique_ptr<ShardLog> log;
  std::vector<Message> commit_messages;
  std::atomic<bool> lost{false};  // read by health() on any thread
  // With replicas: this process's ownership record still has to go out
  // (docs/replicas.md, "Routing"), with the shard's next commit.
  bool publish_owner = false;
  // The batch's commands and counts, released (acked, published) once the
  // batch is durable, or put back when the shard's commit fails.
  std::vector<std::pair<Message, Transport::Ack>> consumed;
  BatchStats stats;
  // After a commit that failed otherwise than fenced: rest until resume_ms;
  // the rest doubles while it fails. The failed commit may have reached the
  // log all the same (its answer was lost), so the shard then catches up
  // with its log before it works again.
  int64_t resume_ms = 0;
  bool resync = false;
  Duration commit_backoff{0};
  Sweep inbox_sweep;  // of inbox records past the de-duplication horizon
  Sweep state_sweep;  // of state keys past their expiry (StateTxn::put)

  // The mailbox: filled by the thread polling the transport (commands, send
  // confirmations), emptied by the driving thread.
  std::mutex mu;
  std::vector<std::pair<Message, Transport::Ack>> arrived;  // GUARDED_BY(mu)
  std::vector<std::function<void()>> deferred;              // GUARDED_BY(mu)

 private:
  uint32_t index_;
};

// An engine thread's share of the shards (shard k on driver k % T): one
// batch and one write per iteration for all of them. `mu` is held for an
// iteration, and by write() for a local transaction in one of its shards.
struct Driver {
  std::vector<Shard*> shards;
  std::mutex mu;
  Batch batch;         // GUARDED_BY(mu)
  std::string record;  // GUARDED_BY(mu): scratch for encode_inbox_record
  Bell bell;
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
    SAGA_ASSIGN_OR_RETURN(store_, Store::open(opts_.data_dir, kColumnFamilies, opts_.sync,
                                              {.wanted = opts_.shards,
                                               .for_new_store = kDefaultShards}));
    if (opts_.changelog) changelog_families_ = {store_->cf(kState), store_->cf(kInbox)};
    const uint32_t threads = std::clamp<uint32_t>(opts_.threads, 1, store_->shards());
    for (uint32_t t = 0; t < threads; ++t) drivers_.push_back(std::make_unique<Driver>());
    if (opts_.replicas && !opts_.changelog) {
      return Status::invalid_argument("participant '" + opts_.name +
                                      "': replicas need the changelog (ParticipantOptions::changelog)");
    }
    for (uint32_t k = 0; k < store_->shards(); ++k) {
      auto sh = std::make_unique<Shard>(*store_, k);
      sh->driver = drivers_[k % threads].get();
      sh->driver->shards.push_back(sh.get());
      Shard* raw = sh.get();
      sh->outbox = std::make_unique<Outbox>(
          sh->ks, store_->cf(kOutbox), *transport_, *opts_.clock, log_,
          [this, raw](std::function<void()> fn) { post(*raw, std::move(fn)); });
      if (opts_.replicas) {  // claimed when the group assigns it
        sh->assigned = false;
        sh->owned = false;
        if (!owners_) {
          owners_ = std::make_unique<OwnerTable>(opts_.name, store_->shards(),
                                                 opts_.advertised_address);
        }
      } else {
        SAGA_RETURN_IF_ERROR(activate(*sh));
      }
      keyspaces_.push_back(sh->ks);
      shards_.push_back(std::move(sh));
    }
    auto handler = [this](Message m, Transport::Ack ack) {
      Shard& sh = shard_for(m.key.empty() ? m.saga_id : m.key);
      if (inline_callbacks()) {
        sh.inbound.emplace_back(std::move(m), std::move(ack));
        return;
      }
      {
        std::lock_guard lock(sh.mu);
        sh.arrived.emplace_back(std::move(m), std::move(ack));
      }
      ring(sh);
    };
    if (opts_.standby && !opts_.replicas) {
      return Status::invalid_argument("participant '" + opts_.name +
                                      "': a standby copy needs replicas (ParticipantOptions::replicas)");
    }
    if (!opts_.replicas) return transport_->subscribe(opts_.name, handler);
    SAGA_RETURN_IF_ERROR(owners_->subscribe(*transport_));
    if (opts_.standby) {
      standby_ = std::make_unique<Standby>(*transport_, opts_.name + ".changelog", keyspaces_,
                                           changelog_families_, log_,
                                           "participant '" + opts_.name + "'");
      standby_->start();
    }
    PartitionedSubscription how;
    how.partitions = store_->shards();
    how.listener.assigned = [this](const std::vector<uint32_t>& ps) {
      for (uint32_t k : ps) {
        Shard& sh = *shards_.at(k);
        auto lock = lock_for_callback(sh);
        sh.assigned = true;  // claimed and restored by its thread's next iteration
        sh.resume_ms = 0;
        ring(sh);
      }
    };
    how.listener.revoked = [this](const std::vector<uint32_t>& ps) { release(ps, "revoked"); };
    how.listener.lost = [this](const std::vector<uint32_t>& ps) { release(ps, "lost"); };
    return transport_->subscribe_partitioned(opts_.name, handler, std::move(how));
  }

  Status on(std::string command_type, CommandHandler handler) override {
    if (command_type.empty() || !handler)
      return Status::invalid_argument("a handler needs a command type and a function");
    std::lock_guard lock(handlers_mu_);
    if (!handlers_.emplace(command_type, std::move(handler)).second) {
      return Status::invalid_argument("handler for '" + command_type + "' registered twice");
    }
    return ok_status();
  }

  Status write(std::string_view shard_key,
               const std::function<Status(StateTxn&)>& fn) override {
    return write_in(shard_for(shard_key), fn);
  }

  Status write(const std::function<Status(StateTxn&)>& fn) override {
    if (shards_.size() != 1) {
      return Status::invalid_argument("participant '" + opts_.name + "' has " +
                                      std::to_string(shards_.size()) +
                                      " shards: write(shard_key, fn) says which one");
    }
    return write_in(*shards_[0], fn);
  }

  StatusOr<std::optional<std::string>> get(std::string_view key) const override {
    for (const auto& sh : shards_) {
      SAGA_ASSIGN_OR_RETURN(auto v, sh->ks.get(store_->cf(kState), key));
      if (v) return v;
    }
    return std::optional<std::string>();
  }

  Status scan(std::string_view prefix,
              const std::function<bool(std::string_view, std::string_view)>& fn) const override {
    return scan_merged(keyspaces_, store_->cf(kState), prefix, prefix, fn);
  }

  // Polls the transport, then runs one iteration of every driver, holding
  // every driver's lock throughout: the transport's callbacks, which run
  // inside poll(), then act on the shards at once (see inline_callbacks()).
  size_t run_once(Duration max_wait) override {
    std::lock_guard run(run_mu_);
    if (!store_status().ok()) return 0;
    let_writers_in();
    std::vector<std::unique_lock<std::mutex>> locks;
    for (auto& d : drivers_) locks.emplace_back(d->mu);
    Duration wait = max_wait;
    for (auto& d : drivers_) wait = std::min(wait, idle_wait(*d, max_wait));
    transport_->poll(wait);
    size_t handled = 0;
    for (auto& d : drivers_) handled += iterate(*d);
    return handled;
  }

  // One driver: one thread that polls and iterates, as run_once. Several:
  // a thread per driver, woken by its bell, and a pump thread that polls
  // the transport and routes what arrives to the shards' mailboxes.
  void start_background() override {
    threads_.start(drivers_.size(), {[this] { run_once(kIdleWait); },
                                     [this](size_t i) { drive(*drivers_[i]); },
                                     [this] { transport_->poll(kIdleWait); },
                                     [this] {
                                       for (auto& d : drivers_) d->bell.ring();
                                       transport_->wake();
                                     }});
  }

  void stop() override { threads_.stop(); }

  ParticipantStats stats() const override {
    ParticipantStats s;
    s.applied = applied_;
    s.refused = refused_;
    s.retried = retried_;
    s.duplicates = duplicates_;
    s.voided = voided_;
    s.expired = expired_;
    s.state_expired = state_expired_;
    s.writes = writes_;
    for (const auto& sh : shards_) {
      s.outbox_depth += sh->depth;
      if (sh->owned) ++s.shards_owned;
    }
    s.restored_records = restored_records_;
    s.standby_records = standby_ ? standby_->records() : 0;
    const Store::Size size = store_->size();
    s.store_bytes = size.bytes;
    s.store_keys = size.keys;
    return s;
  }

  Status health() const override {
    if (Status s = store_status(); !s.ok()) return s;
    for (const auto& sh : shards_) {
      if (sh->lost) return lost_status(*sh);
    }
    if (owners_) SAGA_RETURN_IF_ERROR(owners_->readiness("participant '" + opts_.name + "'"));
    return transport_->health();
  }

  uint32_t shards() const override { return static_cast<uint32_t>(shards_.size()); }

  ShardOwner owner_of(std::string_view shard_key) const override {
    const Shard& sh = shard_for(shard_key);
    if (!owners_) return ShardOwner{ShardOwner::Where::kHere, sh.index(), {}};
    return owners_->lookup(sh.index(), sh.owned);
  }

  std::vector<ShardOwner> owners() const override {
    std::vector<ShardOwner> out;
    for (const auto& sh : shards_) {
      out.push_back(owners_ ? owners_->lookup(sh->index(), sh->owned)
                            : ShardOwner{ShardOwner::Where::kHere, sh->index(), {}});
    }
    return out;
  }

 private:

  Shard& shard_for(std::string_view key) const {
    return *shards_[shards_.size() == 1 ? 0 : shard_of(key, static_cast<uint32_t>(shards_.size()))];
  }

  // Whether the transport's callbacks run inside run_once(), which holds
  // every driver's lock while it polls, rather than on the pump thread of
  // several background drivers (they then go through the shards' mailboxes).
  bool inline_callbacks() const { return !threads_.threaded(); }
  // The lock a transport callback needs to touch `sh`: none inside run_once
  // (it holds them all), else the shard's driver's.
  std::unique_lock<std::mutex> lock_for_callback(Shard& sh) {
    if (inline_callbacks()) return {};
    return std::unique_lock<std::mutex>(sh.driver->mu);
  }

  // A background thread with nothing to do sleeps this long at most.
  static constexpr Duration kIdleWait{50};
  // How long run_once lets writers go first at most (let_writers_in()), so
  // that a stream of writes cannot stall the engine.
  static constexpr Duration kWritersFirst{2};

  // write() from another thread takes its shard's driver lock, which
  // run_once holds while it waits in poll(): the writer wakes that wait, and
  // the next run_once lets it in before locking again (std::mutex is not
  // fair: the loop would otherwise take the lock back at once).
  std::unique_lock<std::mutex> lock_for_write(Driver& d) {
    {
      std::lock_guard gate(gate_mu_);
      ++writers_waiting_;
    }
    if (!threads_.threaded()) transport_->wake();
    std::unique_lock<std::mutex> lock(d.mu);
    {
      std::lock_guard gate(gate_mu_);
      --writers_waiting_;
    }
    writers_in_.notify_all();
    return lock;
  }
  void let_writers_in() {
    std::unique_lock gate(gate_mu_);
    writers_in_.wait_for(gate, kWritersFirst, [this] { return writers_waiting_ == 0; });
  }

  Status store_status() const {
    std::lock_guard lock(status_mu_);
    return store_status_;
  }
  // The store failed: refuse everything from now on (reopen to recover).
  void fail_stop(const Status& s, std::string_view what) {
    std::lock_guard lock(status_mu_);
    store_status_ = s.with_context(std::string(what));
    log_->critical("{}", store_status_.to_string());
  }

  // Runs `fn` on the shard's driving thread in its next iteration (send
  // confirmations: they arrive on whichever thread polls).
  void post(Shard& sh, std::function<void()> fn) {
    if (inline_callbacks()) return fn();
    {
      std::lock_guard lock(sh.mu);
      sh.deferred.push_back(std::move(fn));
    }
    if (threads_.threaded()) sh.driver->bell.ring();
  }

  void run_deferred(Shard& sh) {
    std::vector<std::function<void()>> fns;
    {
      std::lock_guard lock(sh.mu);
      fns.swap(sh.deferred);
    }
    for (auto& fn : fns) fn();
  }

  std::string shard_name(const Shard& sh) const {
    return "participant '" + opts_.name + "' shard " + std::to_string(sh.index());
  }

  // Makes the shard this process's: claims its changelog (fencing earlier
  // owners), restores what others wrote since the local checkpoint, loads
  // what the outbox left unsent. REQUIRES: the shard's driver lock (or init).
  Status activate(Shard& sh) {
    if (standby_) standby_->hold(sh.index());  // its copy stops before the claim
    if (opts_.changelog) {
      SAGA_ASSIGN_OR_RETURN(sh.log, transport_->claim_shard(opts_.name + ".changelog",
                                                            sh.index(), store_->shards()));
      auto restored = restore_shard(sh.ks, changelog_families_, *sh.log, *log_, shard_name(sh));
      if (!restored.ok()) {
        sh.log.reset();
        return restored.status();
      }
      restored_records_ += restored->records;
    }
    if (!sh.outbox_recovered) {
      SAGA_RETURN_IF_ERROR(sh.outbox->recover());
      sh.outbox_recovered = true;
    }
    sh.depth = sh.outbox->depth();
    sh.resync = false;
    sh.commit_backoff = Duration{0};
    sh.owned = true;
    if (opts_.replicas) {
      sh.publish_owner = true;
      log_->info("{}: owned", shard_name(sh));
    }
    return ok_status();
  }

  // With replicas: claims and restores the assigned shards that are not
  // owned yet; one that fails rests and is tried again. REQUIRES: d.mu.
  void activate_assigned(Driver& d, int64_t now) {
    for (Shard* sh : d.shards) {
      if (sh->owned || !sh->assigned || sh->resume_ms > now) continue;
      Status s = activate(*sh);
      if (!s.ok()) {
        rest(*sh);
        log_->warn("{}: cannot take the shard ({}); next try in {} ms", shard_name(*sh),
                   s.to_string(), sh->commit_backoff.count());
      }
    }
  }

  // The group took these shards away (revoked: another member gets them once
  // this returns; lost: another may have them already). Nothing more is done
  // or emitted for them here; their queued commands stay unacked for the
  // next owner; their local data stays (the next restore starts from it).
  void release(const std::vector<uint32_t>& ps, const char* why) {
    for (uint32_t k : ps) {
      Shard& sh = *shards_.at(k);
      auto lock = lock_for_callback(sh);
      drop(sh);
      sh.assigned = false;
      log_->info("{}: {}", shard_name(sh), why);
    }
  }

  // Forgets the shard's work in memory. REQUIRES: the shard's driver lock.
  void drop(Shard& sh) {
    sh.owned = false;
    sh.publish_owner = false;
    sh.log.reset();
    sh.inbound.clear();
    sh.consumed.clear();
    sh.commit_messages.clear();
    sh.overlay.clear();
    sh.inbox_overlay.clear();
    sh.stats = {};
    {
      std::lock_guard lock(sh.mu);
      sh.arrived.clear();
    }
    if (standby_) standby_->release(sh.index());  // nothing here writes to it any more
  }

  // Moves the mailbox's commands behind the ones already queued.
  void take_arrived(Shard& sh) {
    std::lock_guard lock(sh.mu);
    if (sh.inbound.empty()) {
      sh.inbound.swap(sh.arrived);
    } else {
      sh.inbound.insert(sh.inbound.end(), std::make_move_iterator(sh.arrived.begin()),
                        std::make_move_iterator(sh.arrived.end()));
      sh.arrived.clear();
    }
  }

  // Whether an iteration of `d` would do something now. REQUIRES: d.mu.
  bool has_work(Driver& d) {
    const int64_t now = to_millis(opts_.clock->now());
    for (Shard* sh : d.shards) {
      if (sh->lost) continue;
      if (!sh->owned) {
        if (sh->assigned && sh->resume_ms <= now) return true;
        continue;
      }
      if (sh->outbox->has_unsent()) return true;
      if (!sh->inbound.empty() && sh->resume_ms <= now) return true;
      std::lock_guard lock(sh->mu);
      if (!sh->arrived.empty() || !sh->deferred.empty()) return true;
    }
    return false;
  }

  // How long the driver may wait for work, at most `limit`: 0 when it has
  // some now, else until the end of a shard's rest. REQUIRES: d.mu.
  Duration idle_wait(Driver& d, Duration limit) {
    if (has_work(d)) return Duration{0};
    Duration wait = limit;
    const int64_t now = to_millis(opts_.clock->now());
    for (Shard* sh : d.shards) {
      if (!sh->lost && (!sh->inbound.empty() || (sh->assigned && !sh->owned)))
        wait = std::min(wait, Duration{std::max<int64_t>(1, sh->resume_ms - now)});
    }
    return wait;
  }

  // Wakes the thread driving `sh`: its bell when it has a thread of its
  // own, else the transport's poll() that the one engine thread waits in.
  void ring(Shard& sh) {
    if (threads_.threaded()) {
      sh.driver->bell.ring();
    } else {
      transport_->wake();
    }
  }

  // One pass of a driver's own thread: waits for its bell while there is
  // nothing to do (bounded by the end of a shard's rest), then iterates.
  void drive(Driver& d) {
    Duration wait{0};
    {
      std::lock_guard lock(d.mu);
      wait = idle_wait(d, kIdleWait);
    }
    if (wait.count() > 0) d.bell.wait(wait);
    std::lock_guard lock(d.mu);
    iterate(d);
  }

  // One iteration of `d`: handles its shards' queued commands into one
  // batch, commits it (with the changelog: each shard's part to its log
  // first), then acks the commands and releases the replies. REQUIRES: d.mu.
  size_t iterate(Driver& d) {
    if (!store_status().ok()) return 0;
    const int64_t now = to_millis(opts_.clock->now());
    if (opts_.replicas) activate_assigned(d, now);
    for (Shard* sh : d.shards) {
      run_deferred(*sh);
      take_arrived(*sh);
      sh->outbox->retry_failed();
      sh->batch = &d.batch;
      sh->outbox->stage_confirmed(d.batch);
    }
    size_t handled = 0;
    for (Shard* shp : d.shards) {
      Shard& sh = *shp;
      if (sh.lost || (!sh.owned && !sh.assigned)) {
        sh.inbound.clear();  // not ours any more: unacked, for the new owner
        continue;
      }
      if (!sh.owned) continue;  // assigned, not restored yet: its commands wait
      if (sh.inbound.empty() || sh.resume_ms > now || !caught_up(sh)) continue;
      for (auto& in : sh.inbound) {
        trace::point("p.stage", in.first.saga_id, in.first.id);
        handle(sh, in.first);
        sh.consumed.push_back(std::move(in));
        ++handled;
      }
      sh.inbound.clear();
    }
    size_t expiry_budget = kExpiryPerIteration;
    for (Shard* sh : d.shards) {
      if (sh->owned && !sh->lost && sh->resume_ms <= now) {
        expire_inbox(*sh, now, expiry_budget);
        expire_state(*sh, now, expiry_budget);
      }
    }
    Status committed = opts_.changelog ? commit_changelogs(d) : ok_status();
    // The batch is now written or gone (a rolled-back shard's part is dropped
    // from it): either way its overlays are no longer what the store will hold.
    for (Shard* sh : d.shards) {
      sh->overlay.clear();
      sh->inbox_overlay.clear();
      sh->batch = nullptr;
    }
    if (!committed.ok() || !d.batch.empty()) {
      Status s = committed.ok() ? store_->write(d.batch)
                                : committed.with_context("changelog commit failed");
      d.batch.clear();
      if (!s.ok()) {
        fail_stop(s, "participant store write failed; reopen it");
        for (Shard* sh : d.shards) {
          sh->outbox->discard_staged();
          sh->stats = {};  // counts of this batch never happened
          sh->consumed.clear();
        }
        return 0;
      }
      ++writes_;
    }
    for (Shard* sh : d.shards) {
      if (sh->lost) continue;
      commit_stats(sh->stats);
      for (auto& [cmd, ack] : sh->consumed) {
        trace::point("p.durable", cmd.saga_id, cmd.id);
        ack();
      }
      sh->consumed.clear();
      sh->outbox->release();
      sh->depth = sh->outbox->depth();
    }
    return handled;
  }

  Status write_in(Shard& sh, const std::function<Status(StateTxn&)>& fn) {
    std::unique_lock<std::mutex> lock = lock_for_write(*sh.driver);
    SAGA_RETURN_IF_ERROR(store_status());
    if (sh.lost) return lost_status(sh);
    if (!sh.owned) {
      return Status::unavailable(shard_name(sh) + " is not owned by this replica")
          .with_retry_after(Duration{1000});
    }
    if (sh.resume_ms > to_millis(opts_.clock->now()) || !caught_up(sh)) {
      return Status::unavailable("shard " + std::to_string(sh.index()) + " of participant '" +
                                 opts_.name + "' rests after a failed changelog commit")
          .with_retry_after(sh.commit_backoff);
    }
    // The nonce keeps event ids unique across restarts, even when the clock
    // has not moved (or moved back) since the last run.
    Txn txn(sh.ks, sh.overlay,
            "local/" + instance_nonce_ + "/" + std::to_string(local_writes_++));
    SAGA_RETURN_IF_ERROR(fn(txn));
    Batch batch;
    Overlay scratch;
    for (Message& e : txn.commit(batch, scratch)) stage_send(sh, batch, std::move(e));
    if (sh.log) {
      std::vector<ShardPart> parts;
      parts.push_back(ShardPart{&sh.ks, sh.index(), sh.log.get(), std::move(sh.commit_messages), {}});
      sh.commit_messages.clear();
      SAGA_RETURN_IF_ERROR(
          commit_shards(batch, changelog_families_, store_->shards(), parts));
      if (parts[0].result && !parts[0].result->ok()) {
        const Status failed = parts[0].result->status();
        if (failed.code() != StatusCode::kAborted) {  // nothing written locally
          roll_back(sh, failed);
          return failed;
        }
        lose(sh, failed);
        return lost_status(sh);
      }
    }
    Status s = store_->write(batch);
    if (!s.ok()) {
      sh.outbox->discard_staged();
      return s;
    }
    ++writes_;
    sh.outbox->release();
    sh.depth = sh.outbox->depth();
    return ok_status();
  }

  // Inbox records written before now - dedup_horizon are removed, oldest
  // first: a sweep starts every dedup_sweep_interval and removes up to
  // `budget` per iteration (the driver's shards together) until none is
  // left, going on from where it stopped.
  void expire_inbox(Shard& sh, int64_t now, size_t& budget) {
    if (opts_.dedup_horizon.count() <= 0) return;
    auto* inbox = store_->cf(kInbox);
    bool done = false;
    auto removed = sweep_step(sh.ks, inbox, sh.inbox_sweep, std::string(1, kExpiryPrefix),
                              expiry_key(now - opts_.dedup_horizon.count(), ""), now,
                              opts_.dedup_sweep_interval.count(), budget, done,
                              [&](std::string_view key, std::string_view) {
                                sh.ks.del(*sh.batch, inbox, key.substr(9));
                                sh.ks.del(*sh.batch, inbox, key);
                              });
    if (!removed.ok()) log_->warn("inbox expiry scan failed: {}", removed.status().to_string());
    if (removed.ok()) sh.stats.expired += *removed;
    if (done) sh.inbox_sweep.removed = 0;
  }

  // State keys put with an expiry (StateTxn::put) are removed once it has
  // passed, as inbox records are, unless a later put gave them a later one.
  void expire_state(Shard& sh, int64_t now, size_t& budget) {
    auto* inbox = store_->cf(kInbox);
    bool done = false;
    uint64_t deleted = 0;
    auto removed = sweep_step(
        sh.ks, inbox, sh.state_sweep, kStateExpiryPrefix, state_expiry_key(now + 1, ""), now,
        opts_.dedup_sweep_interval.count(), budget, done,
        [&](std::string_view key, std::string_view) {
          const std::string_view state_key = key.substr(kStateExpiryPrefix.size() + 8);
          // Written in this batch: the next sweep decides, on the store.
          if (sh.overlay.find(state_key) != sh.overlay.end()) return;
          sh.ks.del(*sh.batch, inbox, key);
          const std::string marker = state_marker_key(state_key);
          StatusOr<std::optional<std::string>> current = sh.ks.get(inbox, marker);
          if (!current.ok() || !*current || **current != key.substr(kStateExpiryPrefix.size(), 8))
            return;  // put again with another expiry: that one decides
          sh.ks.del(*sh.batch, inbox, marker);
          sh.ks.del(*sh.batch, store_->cf(kState), state_key);
          ++deleted;
        });
    if (!removed.ok()) log_->warn("state expiry scan failed: {}", removed.status().to_string());
    sh.stats.state_expired += deleted;
    if (done) sh.state_sweep.removed = 0;
  }

  void commit_stats(BatchStats& b) {
    applied_ += b.applied;
    refused_ += b.refused;
    retried_ += b.retried;
    duplicates_ += b.duplicates;
    voided_ += b.voided;
    expired_ += b.expired;
    state_expired_ += b.state_expired;
    b = {};
  }

  StatusOr<std::optional<InboxRecord>> lookup(Shard& sh, const std::string& command_id) {
    if (auto it = sh.inbox_overlay.find(command_id); it != sh.inbox_overlay.end())
      return std::optional(it->second);
    SAGA_ASSIGN_OR_RETURN(auto bytes, sh.ks.get(store_->cf(kInbox), command_id));
    if (!bytes) return std::optional<InboxRecord>();
    SAGA_ASSIGN_OR_RETURN(InboxRecord r, decode_inbox_record(*bytes));
    return std::optional(std::move(r));
  }

  void remember(Shard& sh, const std::string& command_id, InboxRecord r) {
    std::string& record = sh.driver->record;
    encode_inbox_record(r, record);
    sh.ks.put(*sh.batch, store_->cf(kInbox), command_id, record);
    if (opts_.dedup_horizon.count() > 0) {
      sh.ks.put(*sh.batch, store_->cf(kInbox),
                expiry_key(to_millis(opts_.clock->now()), command_id), "");
    }
    sh.inbox_overlay[command_id] = std::move(r);
  }

  void reply(Shard& sh, const Message& cmd, ReplyOutcome outcome, std::string payload) {
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
    stage_send(sh, *sh.batch, std::move(r));
  }

  // Replies and events: with the changelog they go out with the shard's
  // commit, else through the outbox.
  void stage_send(Shard& sh, Batch& batch, Message m) {
    if (sh.log) {
      sh.commit_messages.push_back(std::move(m));
    } else {
      sh.outbox->stage(batch, std::move(m));
    }
  }

  Status lost_status(const Shard& sh) const {
    return Status::aborted("shard " + std::to_string(sh.index()) + " of participant '" +
                           opts_.name + "' was claimed by another owner");
  }

  // A later claim fenced the shard: it handles, answers and sends nothing more
  // (with replicas: until the group assigns it here again).
  void lose(Shard& sh, const Status& why) {
    if (opts_.replicas) {
      drop(sh);
      sh.assigned = false;  // claimed again only when the group assigns it again
      log_->warn("{}: fenced ({}); dropped until assigned again", shard_name(sh), why.to_string());
      return;
    }
    sh.lost = true;
    sh.commit_messages.clear();
    sh.consumed.clear();  // unacked, for the new owner
    sh.stats = {};
    log_->error("participant '{}' shard {} stops: {}", opts_.name, sh.index(), why.to_string());
  }

  // Commits each shard's part of d.batch to its changelog before the local
  // write. A fenced shard is dropped; any other error is returned.
  Status commit_changelogs(Driver& d) {
    std::vector<ShardPart> parts;
    const int64_t now = to_millis(opts_.clock->now());
    for (Shard* sh : d.shards) {
      if (sh->lost || !sh->owned) continue;
      if (sh->publish_owner && sh->resume_ms <= now && !sh->resync)
        sh->commit_messages.push_back(owners_->claim_record(sh->index(), now));
      parts.push_back(
          ShardPart{&sh->ks, sh->index(), sh->log.get(), std::move(sh->commit_messages), {}});
      sh->commit_messages.clear();
    }
    SAGA_RETURN_IF_ERROR(commit_shards(d.batch, changelog_families_, store_->shards(), parts));
    for (ShardPart& part : parts) {
      if (!part.result) continue;
      Shard& sh = *shards_[part.shard];
      if (part.result->ok()) {
        sh.commit_backoff = Duration{0};
        sh.publish_owner = false;
      } else if (part.result->status().code() == StatusCode::kAborted) {
        lose(sh, part.result->status());
      } else {
        roll_back(sh, part.result->status());
      }
    }
    return ok_status();
  }

  // A commit failed but the shard is still ours (the fabric is away, or the
  // commit's answer was lost): none of its part was written locally, and
  // perhaps none was appended or sent. Its commands go back to the queue,
  // unacked, and it rests (100 ms, doubling up to 5 s), then catches up with
  // its log (caught_up()) before it works again.
  void roll_back(Shard& sh, const Status& why) {
    rest(sh);
    sh.resync = true;
    sh.inbox_sweep.from.clear();  // its deletes were dropped: the next sweeps start over
    sh.state_sweep.from.clear();
    log_->warn("participant '{}' shard {}: changelog commit failed ({}); rolled back, next try in "
               "{} ms",
               opts_.name, sh.index(), why.to_string(), sh.commit_backoff.count());
    sh.inbound.insert(sh.inbound.begin(), std::make_move_iterator(sh.consumed.begin()),
                      std::make_move_iterator(sh.consumed.end()));
    sh.consumed.clear();
    sh.stats = {};
  }

  void rest(Shard& sh) {
    sh.commit_backoff = std::min(Duration{5'000}, std::max(Duration{100}, sh.commit_backoff * 2));
    sh.resume_ms = to_millis(opts_.clock->now()) + sh.commit_backoff.count();
  }

  // False while the shard must catch up with its log after a rollback and
  // cannot (the log is unreadable: it rests again). Applying what the log
  // holds past the local checkpoint brings in the failed commit when it was
  // appended after all. A store error there is fail-stop.
  bool caught_up(Shard& sh) {
    if (!sh.resync) return true;
    auto r = restore_shard(sh.ks, changelog_families_, *sh.log, *log_,
                           "participant '" + opts_.name + "' shard " + std::to_string(sh.index()));
    if (r.ok()) {
      sh.resync = false;
      return true;
    }
    if (r.status().code() == StatusCode::kAborted) {  // fenced meanwhile
      lose(sh, r.status());
    } else if (r.status().code() == StatusCode::kUnavailable) {
      rest(sh);
      log_->warn("participant '{}' shard {}: cannot catch up with its changelog ({}); next try "
                 "in {} ms",
                 opts_.name, sh.index(), r.status().to_string(), sh.commit_backoff.count());
    } else {
      fail_stop(r.status(), "participant store broken; reopen it");
    }
    return false;
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

  void handle(Shard& sh, const Message& cmd) {
    if (cmd.kind != MessageKind::kCommand || cmd.id.empty()) {
      log_->warn("ignoring non-command message '{}' of type '{}'", cmd.id, cmd.type);
      return;
    }
    StatusOr<std::optional<InboxRecord>> seen = lookup(sh, cmd.id);
    if (!seen.ok()) {
      // Cannot tell whether it was applied: answer retry, never guess.
      log_->error("inbox lookup of {} failed: {}", cmd.id, seen.status().to_string());
      return reply(sh, cmd, ReplyOutcome::kRetry, error_payload(seen.status().to_string()));
    }
    if (*seen) {
      ++sh.stats.duplicates;
      const InboxRecord& r = **seen;
      return reply(sh, cmd, r.outcome, r.payload);
    }

    Json action_reply;
    if (!cmd.compensates.empty()) {
      StatusOr<std::optional<InboxRecord>> action = lookup(sh, cmd.compensates);
      if (!action.ok())
        return reply(sh, cmd, ReplyOutcome::kRetry, error_payload(action.status().to_string()));
      if (!*action) {
        // The compensation overtook its action: void the action so that it is
        // refused if it ever arrives, and report the undo as done.
        ++sh.stats.voided;
        remember(sh, cmd.compensates, {ReplyOutcome::kFailure,
                                   error_payload("cancelled by compensation " + cmd.id), true});
        remember(sh, cmd.id, {ReplyOutcome::kSuccess, "{}"});
        return reply(sh, cmd, ReplyOutcome::kSuccess, "{}");
      }
      if ((*action)->outcome != ReplyOutcome::kSuccess) {
        remember(sh, cmd.id, {ReplyOutcome::kSuccess, "{}"});  // nothing was applied, nothing to undo
        return reply(sh, cmd, ReplyOutcome::kSuccess, "{}");
      }
      action_reply = parse_json((*action)->payload).value_or(Json(Json::value_t::discarded));
      if (action_reply.is_discarded()) action_reply = Json();
    }

    auto h = handlers_.find(cmd.type);
    if (h == handlers_.end()) {
      ++sh.stats.refused;
      const std::string err =
          "participant '" + opts_.name + "' has no handler for command '" + cmd.type + "'";
      log_->error("{}", err);
      remember(sh, cmd.id, {ReplyOutcome::kFailure, error_payload(err)});
      return reply(sh, cmd, ReplyOutcome::kFailure, error_payload(err));
    }
    Json payload = cmd.payload.empty()
                       ? Json()
                       : parse_json(cmd.payload).value_or(Json(Json::value_t::discarded));
    if (payload.is_discarded()) {
      ++sh.stats.refused;
      const std::string err = "command " + cmd.id + " has a payload that is not JSON";
      remember(sh, cmd.id, {ReplyOutcome::kFailure, error_payload(err)});
      return reply(sh, cmd, ReplyOutcome::kFailure, error_payload(err));
    }
    Txn txn(sh.ks, sh.overlay, cmd.id);
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
        ++sh.stats.applied;
        for (Message& e : txn.commit(*sh.batch, sh.overlay)) {
          if (e.saga_id.empty()) e.saga_id = cmd.saga_id;
          if (e.key.empty()) e.key = cmd.key;
          if (e.traceparent.empty()) e.traceparent = cmd.traceparent;
          stage_send(sh, *sh.batch, std::move(e));
        }
        std::string body = result.reply.is_null() ? "{}" : dump_lenient(result.reply);
        remember(sh, cmd.id, {ReplyOutcome::kSuccess, body});
        return reply(sh, cmd, ReplyOutcome::kSuccess, std::move(body));
      }
      case ReplyOutcome::kFailure:
        ++sh.stats.refused;
        remember(sh, cmd.id, {ReplyOutcome::kFailure, error_payload(result.error)});
        return reply(sh, cmd, ReplyOutcome::kFailure, error_payload(result.error));
      case ReplyOutcome::kRetry:
        ++sh.stats.retried;
        return reply(sh, cmd, ReplyOutcome::kRetry, error_payload(result.error));
    }
  }

  ParticipantOptions opts_;
  std::shared_ptr<Transport> transport_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<OwnerTable> owners_;  // with replicas: who owns which shard
  std::vector<std::unique_ptr<Shard>> shards_;  // fixed after init()
  std::vector<Keyspace> keyspaces_;             // shards_[k]->ks, for scans across shards
  ChangelogFamilies changelog_families_;        // with ParticipantOptions::changelog
  std::unique_ptr<Standby> standby_;            // with ParticipantOptions::standby
  std::atomic<uint64_t> restored_records_{0};

  std::vector<std::unique_ptr<Driver>> drivers_;  // fixed after init()

  std::mutex handlers_mu_;  // on(): handlers are registered before the engine runs
  std::unordered_map<std::string, CommandHandler> handlers_;
  std::atomic<uint64_t> local_writes_{0};
  const std::string instance_nonce_ = make_nonce();
  mutable std::mutex status_mu_;
  Status store_status_;  // GUARDED_BY(status_mu_)

  std::mutex run_mu_;         // run_once(): one caller at a time (poll() is not re-entrant)
  std::mutex gate_mu_;        // lock_for_write() and let_writers_in()
  std::condition_variable writers_in_;
  size_t writers_waiting_ = 0;  // GUARDED_BY(gate_mu_)
  EngineThreads threads_;  // start_background() .. stop()

  std::atomic<uint64_t> applied_{0}, refused_{0}, retried_{0}, duplicates_{0}, voided_{0},
      expired_{0}, state_expired_{0}, writes_{0};
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
