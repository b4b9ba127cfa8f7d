#include "saga/mypage/mypage.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <filesystem>
#include <optional>
#include <system_error>
#include <utility>

#include "domain/fields.h"
#include "domain/paging.h"
#include "saga/json.h"
#include "saga/service/http_message.h"
#include "saga/service/identity.h"
#include "saga/service/standard_routes.h"

namespace saga::mypage {
namespace {

using Json = nlohmann::json;
using service::Request;
using service::Response;

// Keys: the view row, the per-user index entry, the applied-message mark.
std::string row_key(std::string_view id) { return "r/" + std::string(id); }
std::string user_prefix(std::string_view user) { return "u/" + std::string(user) + "/"; }
std::string mark_key(std::string_view message_id) { return "m/" + std::string(message_id); }
// A mark's expiry: "x/" ‖ be64(written ms) ‖ message id; empty value.
std::string mark_expiry_key(int64_t written_ms, std::string_view message_id) {
  std::string k = "x/";
  for (int shift = 56; shift >= 0; shift -= 8)
    k.push_back(
        static_cast<char>((static_cast<uint64_t>(std::max<int64_t>(written_ms, 0)) >> shift) & 0xff));
  k.append(message_id);
  return k;
}
// Present once every mark has an expiry key (index_old_marks ran).
constexpr char kMarksIndexedKey[] = "meta/marks-expire";
constexpr size_t kMarksPerSweep = 4096;

Status from_rocksdb(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return ok_status();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsCorruption()) return Status::data_loss(std::move(msg));
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain() || s.IsIOError())
    return Status::unavailable(std::move(msg));
  return Status::internal(std::move(msg));
}

// Ranks: a status only ever moves to a higher rank; 0 = not a status of that kind.
int reservation_rank(std::string_view s) {
  if (s == "PENDING") return 1;
  if (s == "CONFIRMED") return 2;
  if (s == "REJECTED" || s == "CANCELLED") return 3;
  return 0;
}
int payment_rank(std::string_view s) {
  if (s == "APPROVED") return 1;
  if (s == "REFUNDED") return 2;
  return 0;
}
int rooms_rank(std::string_view s) {
  if (s == "CONFIRMED") return 1;
  if (s == "RELEASED") return 2;
  return 0;
}

std::string string_or(const Json& obj, std::string_view name, std::string fallback = {}) {
  auto it = obj.find(name);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::move(fallback);
}

// Copies event field `from` to row field `to` when present and not null.
void copy_field(Json& row, std::string_view to, const Json& ev, std::string_view from) {
  auto it = ev.find(from);
  if (it != ev.end() && !it->is_null()) row[std::string(to)] = *it;
}

// Fills row field `to` from event field `from` only when the row lacks it.
void fill_field(Json& row, std::string_view to, const Json& ev, std::string_view from) {
  if (!row.contains(to)) copy_field(row, to, ev, from);
}

// The event's user id when it carries a usable one.
std::optional<std::string> user_of(const Json& ev) {
  if (!ev.contains("usrId") || ev["usrId"].is_null()) return std::nullopt;
  auto id = domain::id_field(ev, "usrId");
  if (!id.ok()) {
    spdlog::warn("mypage: ignoring usrId: {}", id.status().message());
    return std::nullopt;
  }
  return *id;
}

// The reservation an event is about: orderId, else the message key, else its saga id.
StatusOr<std::string> reservation_of(const Json& ev, const Message& m) {
  if (ev.contains("orderId") && !ev["orderId"].is_null()) return domain::id_field(ev, "orderId");
  const std::string& id = !m.key.empty() ? m.key : m.saga_id;
  if (id.empty()) return Status::invalid_argument("event without orderId, key or saga id");
  SAGA_RETURN_IF_ERROR(domain::check_id(id, "key"));
  return id;
}

// Merges a reservation event (from the orchestrator) into `row`.
void merge_reservation(Json& row, const std::string& type, const Json& ev) {
  copy_field(row, "placeId", ev, "placeId");
  copy_field(row, "placeNm", ev, "placeNm");
  copy_field(row, "checkIn", ev, "strDt");
  copy_field(row, "checkOut", ev, "endDt");
  copy_field(row, "qty", ev, "qty");
  copy_field(row, "amount", ev, "amount");
  copy_field(row, "currency", ev, "currency");
  if (auto user = user_of(ev)) row["userId"] = *user;
  std::string status = string_or(ev, "status");
  if (reservation_rank(status) == 0) {
    status = type == "ReservationPlaced"          ? "PENDING"
             : type == "ReservationStatusChanged" ? "CONFIRMED"
                                                  : "CANCELLED";
  }
  if (reservation_rank(status) > reservation_rank(string_or(row, "status"))) row["status"] = status;
}

// Merges a payment event into `row["payment"]`.
void merge_payment(Json& row, const std::string& type, const Json& ev) {
  std::string status = string_or(ev, "status");
  if (payment_rank(status) == 0) status = type == "PaymentApproved" ? "APPROVED" : "REFUNDED";
  Json& pay = row["payment"];
  if (!pay.is_object()) pay = Json::object();
  if (payment_rank(status) >= payment_rank(string_or(pay, "status"))) {
    pay["status"] = status;
    copy_field(pay, "payId", ev, "payId");
  } else {
    fill_field(pay, "payId", ev, "payId");
  }
  if (!row.contains("userId")) {
    if (auto user = user_of(ev)) row["userId"] = *user;
  }
  if (type == "PaymentCancelApproved") {  // its amount is what went back (a part, after a late cancel)
    copy_field(pay, "refundedAmount", ev, "amount");
  } else {
    fill_field(row, "amount", ev, "amount");
  }
  fill_field(row, "currency", ev, "currency");
}

// Merges an inventory event into `row["rooms"]`.
void merge_rooms(Json& row, const std::string& type, const Json& ev) {
  const std::string status = type == "ReservationConfirmed" ? "CONFIRMED" : "RELEASED";
  Json& rooms = row["rooms"];
  if (!rooms.is_object()) rooms = Json::object();
  if (rooms_rank(status) >= rooms_rank(string_or(rooms, "status"))) {
    rooms["status"] = status;
    copy_field(rooms, "stock", ev, "stock");
  } else {
    fill_field(rooms, "stock", ev, "stock");
  }
  fill_field(row, "placeId", ev, "placeId");
}

// Merges event `ev` of type `type` into `row`; false for a type it does not know.
bool merge(Json& row, const std::string& type, const Json& ev) {
  if (type == "ReservationPlaced" || type == "ReservationStatusChanged" ||
      type == "ReservationCanceled") {
    merge_reservation(row, type, ev);
  } else if (type == "PaymentApproved" || type == "PaymentCancelApproved") {
    merge_payment(row, type, ev);
  } else if (type == "ReservationConfirmed" || type == "ReservationCancelConfirmed") {
    merge_rooms(row, type, ev);
  } else {
    return false;
  }
  return true;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void metric(std::string& out, std::string_view type, std::string_view name, std::string_view help,
            uint64_t value) {
  out += "# HELP " + std::string(name) + " " + std::string(help) + "\n";
  out += "# TYPE " + std::string(name) + " " + std::string(type) + "\n";
  out += std::string(name) + " " + std::to_string(value) + "\n";
}
void counter(std::string& out, std::string_view name, std::string_view help, uint64_t value) {
  metric(out, "counter", name, help, value);
}

}  // namespace

// ---- ReadModel ---------------------------------------------------------------

ReadModel::ReadModel(std::unique_ptr<rocksdb::DB> db, ReadModelOptions options)
    : db_(std::move(db)), options_(std::move(options)) {}

ReadModel::~ReadModel() {
  if (db_) {
    rocksdb::Status s = db_->Close();
    if (!s.ok()) spdlog::warn("mypage: closing the store: {}", s.ToString());
  }
}

StatusOr<std::unique_ptr<ReadModel>> ReadModel::open(const std::string& dir,
                                                     ReadModelOptions options) {
  if (dir.empty()) return Status::invalid_argument("store directory is empty");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::unavailable("cannot create store directory " + dir + ": " + ec.message());
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  // Table files Debian's RocksDB reads too, whichever RocksDB this is built
  // with (libsaga/src/store/store.cc says why).
  rocksdb::BlockBasedTableOptions table;
  table.format_version = 5;
  db_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::DB* raw = nullptr;
  SAGA_RETURN_IF_ERROR(from_rocksdb(rocksdb::DB::Open(db_options, dir, &raw), "open " + dir));
  std::unique_ptr<ReadModel> model(
      new ReadModel(std::unique_ptr<rocksdb::DB>(raw), std::move(options)));
  SAGA_RETURN_IF_ERROR(model->index_old_marks());
  return model;
}

int64_t ReadModel::now() const { return options_.now_ms ? options_.now_ms() : now_ms(); }

Status ReadModel::index_old_marks() {
  std::string flag;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kMarksIndexedKey, &flag);
  if (s.ok()) return ok_status();
  if (!s.IsNotFound()) return from_rocksdb(s, "read " + std::string(kMarksIndexedKey));
  const int64_t written = now();
  rocksdb::WriteBatch batch;
  size_t marks = 0;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek("m/"); it->Valid() && it->key().starts_with("m/"); it->Next()) {
      batch.Put(mark_expiry_key(written, it->key().ToString().substr(2)), "");
      ++marks;
    }
    SAGA_RETURN_IF_ERROR(from_rocksdb(it->status(), "scan marks"));
  }
  batch.Put(kMarksIndexedKey, "");
  rocksdb::WriteOptions wo;
  wo.sync = true;
  SAGA_RETURN_IF_ERROR(from_rocksdb(db_->Write(wo, &batch), "index marks"));
  if (marks > 0)
    spdlog::info("mypage: {} message-id marks of an earlier version now expire after the horizon",
                 marks);
  return ok_status();
}

void ReadModel::expire_marks() {
  if (options_.dedup_horizon.count() <= 0) return;
  const int64_t t = now();
  if (t < next_sweep_ms_) return;
  const std::string upto = mark_expiry_key(t - options_.dedup_horizon.count(), "");
  rocksdb::WriteBatch batch;
  size_t removed = 0;
  bool more = false;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek("x/"); it->Valid() && it->key().starts_with("x/") && it->key().ToString() < upto;
         it->Next()) {
      if (removed == kMarksPerSweep) {
        more = true;
        break;
      }
      const std::string key = it->key().ToString();
      batch.Delete(key);
      batch.Delete(mark_key(key.substr(10)));
      ++removed;
    }
    if (!it->status().ok()) {
      spdlog::warn("mypage: scanning mark expiries failed: {}", it->status().ToString());
      return;
    }
  }
  if (removed > 0) {
    rocksdb::Status s = db_->Write(rocksdb::WriteOptions(), &batch);
    if (!s.ok()) {
      spdlog::warn("mypage: removing expired marks failed: {}", s.ToString());
      return;
    }
    marks_expired_ += removed;
  }
  // Go on at the next apply while some are left; else wait an interval.
  next_sweep_ms_ = more ? t : t + options_.sweep_interval.count();
}

bool ReadModel::empty() const {  // no view row (metadata does not count)
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  it->Seek("r/");
  return !it->Valid() || !it->key().starts_with("r/");
}

Status ReadModel::write_failed(Status s) {
  ++errors_;
  std::lock_guard lock(health_mu_);
  last_write_ = s;
  return s;
}

Status ReadModel::apply(const Message& m) {
  const Json ev = parse_json(m.payload).value_or(Json());
  if (!ev.is_object()) {
    ++invalid_;
    return Status::invalid_argument("event " + m.id + ": payload is not a JSON object");
  }
  const std::string type = string_or(ev, "eventType", m.type);
  auto id = reservation_of(ev, m);
  if (type.empty() || !id.ok()) {
    ++invalid_;
    return Status::invalid_argument("event " + m.id + ": " +
                                    (type.empty() ? "no eventType" : id.status().message()));
  }

  std::lock_guard lock(apply_mu_);
  try {
    std::string value;
    if (!m.id.empty()) {
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), mark_key(m.id), &value);
      if (s.ok()) {
        ++duplicates_;
        return ok_status();
      }
      if (!s.IsNotFound()) return write_failed(from_rocksdb(s, "read message mark"));
    }
    Json row;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), row_key(*id), &value);
    if (s.ok()) {
      row = parse_json(value).value_or(Json());
      if (!row.is_object())
        return write_failed(Status::data_loss("stored row of " + *id + " is not a JSON object"));
    } else if (s.IsNotFound()) {
      row = {{"id", *id}, {"status", "PENDING"}, {"events", Json::array()}};
    } else {
      return write_failed(from_rocksdb(s, "read row"));
    }

    const std::string old_user = string_or(row, "userId");
    const bool known = merge(row, type, ev);
    Json& events = row["events"];
    if (!events.is_array()) events = Json::array();
    if (std::find(events.begin(), events.end(), Json(type)) == events.end()) events.push_back(type);
    int64_t ts = 0;
    if (auto it = ev.find("timestamp"); it != ev.end() && it->is_number_integer())
      ts = it->get<int64_t>();
    if (ts <= 0) ts = m.created_ms > 0 ? m.created_ms : now_ms();
    row["updatedMs"] = std::max(row.value("updatedMs", int64_t{0}), ts);

    rocksdb::WriteBatch batch;
    batch.Put(row_key(*id), row.dump());
    const std::string user = string_or(row, "userId");
    if (!old_user.empty() && old_user != user) batch.Delete(user_prefix(old_user) + *id);
    if (!user.empty()) batch.Put(user_prefix(user) + *id, "");
    if (!m.id.empty()) {
      batch.Put(mark_key(m.id), std::to_string(ts));
      if (options_.dedup_horizon.count() > 0) batch.Put(mark_expiry_key(now(), m.id), "");
    }
    rocksdb::WriteOptions wo;
    wo.sync = true;
    if (Status w = from_rocksdb(db_->Write(wo, &batch), "write"); !w.ok())
      return write_failed(std::move(w));
    {
      std::lock_guard health_lock(health_mu_);
      last_write_ = ok_status();
    }
    ++applied_;
    if (!known) ++unknown_;
    expire_marks();
    return ok_status();
  } catch (const std::exception& e) {
    return write_failed(Status::internal(std::string("apply: ") + e.what()));
  }
}

StatusOr<Json> ReadModel::get(std::string_view id) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), row_key(id), &value);
  if (s.IsNotFound()) return Status::not_found("no reservation '" + std::string(id) + "'");
  SAGA_RETURN_IF_ERROR(from_rocksdb(s, "read row"));
  Json row = parse_json(value).value_or(Json());
  if (!row.is_object())
    return Status::data_loss("stored row of " + std::string(id) + " is corrupt");
  return row;
}

StatusOr<std::vector<Json>> ReadModel::list_by_user(std::string_view user_id,
                                                     std::string_view after, size_t limit) const {
  const std::string prefix = user_prefix(user_id);
  const std::string cursor = prefix + std::string(after);
  rocksdb::ReadOptions ro;
  ro.snapshot = db_->GetSnapshot();
  std::vector<Json> rows;
  Status result;
  {
    // From the cursor on, and no further than `limit` rows: a page costs its
    // own rows, not all of the user's.
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    it->Seek(cursor);
    if (!after.empty() && it->Valid() && it->key() == cursor) it->Next();
    for (; rows.size() < limit && it->Valid() && it->key().starts_with(prefix); it->Next()) {
      const std::string id = it->key().ToString().substr(prefix.size());
      std::string value;
      result = from_rocksdb(db_->Get(ro, row_key(id), &value), "read row " + id);
      if (!result.ok()) break;
      Json row = parse_json(value).value_or(Json());
      if (row.is_object()) rows.push_back(std::move(row));
    }
    if (result.ok()) result = from_rocksdb(it->status(), "scan user index");
  }
  db_->ReleaseSnapshot(ro.snapshot);
  if (!result.ok()) return result;
  return rows;
}

ReadModelStats ReadModel::stats() const {
  ReadModelStats s;
  s.applied = applied_;
  s.duplicates = duplicates_;
  s.unknown_types = unknown_;
  s.invalid = invalid_;
  s.errors = errors_;
  s.marks_expired = marks_expired_;
  uint64_t sst = 0, memtables = 0;
  db_->GetIntProperty(rocksdb::DB::Properties::kTotalSstFilesSize, &sst);
  db_->GetIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables, &memtables);
  db_->GetIntProperty(rocksdb::DB::Properties::kEstimateNumKeys, &s.store_keys);
  s.store_bytes = sst + memtables;
  return s;
}

Status ReadModel::health() const {
  std::lock_guard lock(health_mu_);
  return last_write_;
}

std::string ReadModel::metrics_text() const {
  const ReadModelStats s = stats();
  std::string out;
  counter(out, "mypage_events_applied_total", "Events written to the view.", s.applied);
  counter(out, "mypage_events_duplicate_total", "Events dropped as already applied.", s.duplicates);
  counter(out, "mypage_events_unknown_type_total", "Applied events of an unknown type.",
          s.unknown_types);
  counter(out, "mypage_events_invalid_total", "Events refused as malformed.", s.invalid);
  counter(out, "mypage_store_errors_total", "Events the store failed to apply.", s.errors);
  counter(out, "mypage_marks_expired_total", "Message-id marks removed past the horizon.",
          s.marks_expired);
  metric(out, "gauge", "mypage_store_bytes", "The store's SST files and memtables (estimate).",
         s.store_bytes);
  metric(out, "gauge", "mypage_store_keys", "The store's live keys (estimate).", s.store_keys);
  return out;
}

// ---- EventRunner -------------------------------------------------------------

EventRunner::EventRunner(ReadModel& model, std::unique_ptr<Transport> transport,
                         RunnerOptions options)
    : model_(model), options_(std::move(options)), transport_(std::move(transport)) {}

EventRunner::~EventRunner() { stop(); }

Status EventRunner::start() {
  std::lock_guard lock(mu_);
  if (started_) return Status::failed_precondition("the event runner was already started");
  if (!transport_) return Status::failed_precondition("the event runner has no transport");
  started_ = true;
  SAGA_RETURN_IF_ERROR(
      transport_->subscribe(options_.destination, [this](Message m, Transport::Ack ack) {
        // Apply, then ack. A store failure is retried with backoff until it
        // applies or the runner stops (then the event stays unacked).
        std::chrono::milliseconds backoff{100};
        while (true) {
          Status s = model_.apply(m);
          if (s.ok()) {
            ack();
            return;
          }
          if (s.code() == StatusCode::kInvalidArgument) {
            spdlog::warn("mypage: dropping event {}: {}", m.id, s.message());
            ack();
            return;
          }
          spdlog::error("mypage: event {} not applied: {}", m.id, s.to_string());
          std::unique_lock wait_lock(wait_mu_);
          if (wait_cv_.wait_for(wait_lock, backoff, [this] { return stop_.load(); })) return;
          backoff = std::min(backoff * 2, std::chrono::milliseconds(5'000));
        }
      }));
  thread_ = std::thread([this] { run(); });
  return ok_status();
}

void EventRunner::run() {
  while (!stop_.load()) {
    try {
      transport_->poll(options_.poll_wait);
    } catch (const std::exception& e) {
      spdlog::error("mypage: consumer poll: {}", e.what());
    }
  }
}

void EventRunner::stop() {
  {
    std::lock_guard wait_lock(wait_mu_);
    stop_.store(true);
  }
  wait_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::unique_ptr<Transport> closing;
  {
    std::lock_guard lock(mu_);
    closing = std::move(transport_);
  }
  closing.reset();  // Kafka: closes the consumer, committing acked offsets
}

Status EventRunner::health() const {
  std::lock_guard lock(mu_);
  if (!transport_ || !started_ || stop_.load())
    return Status::unavailable("the event consumer is not running");
  return transport_->health();
}

// ---- HTTP --------------------------------------------------------------------

void add_routes(service::Router& router, ReadModel& model,
                std::function<Status()> consumer_health) {
  // A row is its customer's (or an admin's) to see; anyone else's, and a row
  // whose user no event has named yet, is 404 with the message of a missing one.
  router.get("/mypages/{id}",
             service::authenticated([&model](const Request& req, const service::Identity& who) {
               const std::string id(req.param("id"));
               auto row = model.get(id);
               if (row.ok() && !who.may_act_as(row->value("userId", "")))
                 return Response::from_status(Status::not_found("no reservation '" + id + "'"));
               return row.ok() ? Response::json(200, *row) : Response::from_status(row.status());
             }));
  router.get("/mypages",
             service::authenticated([&model](const Request& req, const service::Identity& who) {
               // Without userId: the caller's own rows. Another user's are 404 (admin: any).
               const std::string user = req.query("userId").value_or(who.subject);
               if (user.empty())
                 return Response::problem(400, "Bad Request",
                                          "query parameter 'userId' must not be empty");
               if (Status s = domain::check_id(user, "userId"); !s.ok())
                 return Response::from_status(s);
               if (!who.may_act_as(user))
                 return Response::from_status(Status::not_found("no rows of user " + user));
               auto page = domain::page_request(req);
               if (!page.ok()) return Response::from_status(page.status());
               // Rows come in id order: a page is the rows after the token (the
               // last id of the page before); one more row than the page says
               // whether there is a next one.
               auto rows = model.list_by_user(user, page->token, page->limit + 1);
               if (!rows.ok()) return Response::from_status(rows.status());
               Json out = Json::array();
               std::string next;
               for (Json& row : *rows) {
                 if (out.size() == page->limit) {
                   next = out.back().value("id", "");
                   break;
                 }
                 out.push_back(std::move(row));
               }
               Response r = Response::json(200, out);
               domain::set_next_page_token(r, next);
               return r;
             }));
  service::add_standard_routes(
      router, {.readiness =
                   [&model, consumer_health = std::move(consumer_health)] {
                     return std::vector<service::ReadinessCheck>{
                         {"store", model.health()},
                         {"consumer", consumer_health ? consumer_health() : ok_status()}};
                   },
               .metrics = [&model] { return model.metrics_text(); }});
}

}  // namespace saga::mypage
