#include "saga/reservation/reservation.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "domain/dates.h"
#include "domain/fields.h"
#include "domain/paging.h"
#include "saga/json.h"
#include "saga/message.h"
#include "saga/service/admin_routes.h"
#include "saga/service/http_client.h"
#include "saga/service/http_message.h"
#include "saga/service/identity.h"
#include "saga/service/routing.h"
#include "saga/service/standard_routes.h"
#include "key_claims.h"

namespace saga::reservation {
namespace {

using service::Identity;
using service::Request;
using service::Response;

std::function<int64_t()> clock_of(const Options& o) {
  return o.now_ms ? o.now_ms : std::function<int64_t()>([] { return domain::now_ms(); });
}

std::string str(const Json& data, const char* name) {
  auto it = data.find(name);
  return it != data.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const RetryPolicy kStepRetry{5, Duration{200}, 2.0, Duration{5'000}, 0.2};
const RetryPolicy kForever{0, Duration{200}, 2.0, Duration{10'000}, 0.2};
const Duration kStepTimeout{10'000};

Json empty_payload(const Json&) { return Json::object(); }

Json stay_payload(const Json& d) {
  return {{"reservationId", d.at("reservationId")},
          {"placeId", d.at("placeId")},
          {"userId", d.at("userId")},
          {"checkIn", d.at("checkIn")},
          {"checkOut", d.at("checkOut")},
          {"qty", d.at("qty")}};
}

Json charge_payload(const Json& d) {
  Json out = {{"reservationId", d.at("reservationId")},
              {"userId", d.at("userId")},
              {"amount", d.at("amount")}};
  if (d.contains("currency")) out["currency"] = d.at("currency");
  return out;
}

Json booking_ref_payload(const Json& d) { return {{"bookingId", d.at("bookingId")}}; }

// A cancellation's refund: the policy's amount (cancellations started before
// the policy existed carry none, and the payment refunds the whole charge).
Json refund_payload(const Json& d) {
  Json out = booking_ref_payload(d);
  if (d.contains("refundAmount")) out["amount"] = d.at("refundAmount");
  return out;
}

// The inventory's commands are keyed by place: all of a place's holds land in
// one shard of the inventory (docs/sharding.md), where capacity is checked.
std::string place_key(const Json& d) { return str(d, "placeId"); }
// A cancellation's refund is keyed by the booking it cancels, as the booking's
// charge was (by its saga id): the payment of a booking lives in one shard.
std::string booking_key(const Json& d) { return str(d, "bookingId"); }

void merge_hold(Json& d, const Json& r) {
  if (r.is_object() && r.contains("holdId")) d["holdId"] = r["holdId"];
}

void merge_payment(Json& d, const Json& r) {
  if (r.is_object() && r.contains("paymentId")) d["paymentId"] = r["paymentId"];
}

// A booking's saga data under the seed's field names, as its events and its
// booking route show them.
Json seed_fields(const Json& d) {
  return {{"placeId", str(d, "placeId")},   {"usrId", str(d, "userId")},
          {"strDt", str(d, "checkIn")},     {"endDt", str(d, "checkOut")},
          {"qty", d.value("qty", int64_t{0})}, {"amount", d.value("amount", int64_t{0})}};
}

Json event_payload(const std::string& type, int64_t ts, const Json& d, const std::string& status) {
  Json out = seed_fields(d);
  out["eventType"] = type;
  out["timestamp"] = ts;
  out["orderId"] = str(d, "reservationId");
  out["status"] = status;
  if (d.contains("currency")) out["currency"] = str(d, "currency");
  if (d.contains("placeNm")) out["placeNm"] = str(d, "placeNm");
  if (d.contains("refundAmount")) {
    out["refundAmount"] = d.value("refundAmount", int64_t{0});
    out["refundKind"] = str(d, "refundKind");
  }
  return out;
}

Message event_message(const std::string& type, const std::string& key, Json payload) {
  Message m;
  m.kind = MessageKind::kEvent;
  m.type = type;
  m.destination = kEventDestination;
  m.key = key;
  m.payload = payload.dump();
  return m;
}

// Events of a booking or seed-booking saga: placed, confirmed, rejected or
// cancelled while running.
EventsFn booking_events(std::function<int64_t()> now) {
  return [now](const SagaView& saga, std::optional<SagaState> previous) {
    std::vector<Message> out;
    std::string type;
    std::string status;
    if (!previous) {
      type = "ReservationPlaced";
      status = "PENDING";
    } else if (saga.state == SagaState::kCompleted) {
      type = "ReservationStatusChanged";
      status = "CONFIRMED";
    } else if (saga.state == SagaState::kCompensated) {
      type = "ReservationCanceled";
      status = saga.cancel_requested ? "CANCELLED" : "REJECTED";
    } else {
      return out;
    }
    out.push_back(event_message(type, saga.id, event_payload(type, now(), saga.data, status)));
    return out;
  };
}

// Events of a cancellation saga, keyed by the reservation it cancels.
EventsFn cancellation_events(std::function<int64_t()> now) {
  return [now](const SagaView& saga, std::optional<SagaState> previous) {
    std::vector<Message> out;
    const std::string reservation = str(saga.data, "reservationId");
    if (!previous) {
      out.push_back(event_message(
          "ReservationCancelRequested", reservation,
          event_payload("ReservationCancelRequested", now(), saga.data, "CANCELLING")));
    } else if (saga.state == SagaState::kCompleted) {
      out.push_back(
          event_message("ReservationCanceled", reservation,
                        event_payload("ReservationCanceled", now(), saga.data, "CANCELLED")));
    }
    return out;
  };
}

bool is_booking_type(std::string_view type) { return type == kSagaType || type == kSeedSagaType; }

Response bad_request(const Status& s) { return Response::problem(400, "Bad Request", s.message()); }

// ------------------------------------------------------------ booking records
// The records each booking keeps (reservation.h): its own, its history, the
// user's index entry and its Idempotency-Key. A user's bookings share the
// user's shard (new_booking_id), so the user's records are in it too.

std::string digits16(int64_t v) {
  char out[24];
  std::snprintf(out, sizeof out, "%016lld", static_cast<long long>(std::max<int64_t>(v, 0)));
  return out;
}
std::string booking_key_of(std::string_view id) { return "booking/" + std::string(id); }
std::string history_prefix(std::string_view id) { return booking_key_of(id) + "/h/"; }
// A status change at `at_ms`; `rank` (0..9) orders the changes of one
// millisecond: a booking's PENDING 0, its outcome 1, its cancellation's
// CANCELLING 2, the cancellation's outcome 3.
std::string history_key(std::string_view id, int64_t at_ms, int rank, const std::string& status) {
  return history_prefix(id) + digits16(at_ms) + std::to_string(rank) + "/" + status;
}
std::string user_prefix(const std::string& user) { return "user/" + user + "/"; }
// The page token of an index entry: "<createdMs, 16 digits>.<id>" (check_id: no '/').
std::string user_entry(const std::string& user, const std::string& token) {
  return user_prefix(user) + token.substr(0, 16) + "/" + token.substr(17);
}
std::string user_token(int64_t created_ms, const std::string& id) {
  return digits16(created_ms) + "." + id;
}
std::string idempotency_key_of(const std::string& user, const std::string& key) {
  return "key/" + user + "/" + key;
}

// When a booking's records may go: `retention` after its check-out date
// (its creation when the date is unreadable).
int64_t booking_expiry(const Json& data, std::chrono::milliseconds retention) {
  auto out = domain::parse_iso_date(str(data, "checkOut"), "checkOut");
  const int64_t from =
      out.ok() ? std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::sys_days(*out).time_since_epoch())
                     .count()
               : data.value("createdMs", int64_t{0});
  return from + retention.count();
}

// The status of a booking saga in `state`, without a cancellation.
std::string booking_status(SagaState state, bool cancel_requested) {
  switch (state) {
    case SagaState::kRunning:
    case SagaState::kCompensating:
      return "PENDING";
    case SagaState::kCompleted:
      return "CONFIRMED";
    case SagaState::kCompensated:
      return cancel_requested ? "CANCELLED" : "REJECTED";
    case SagaState::kFailed:
      return "NEEDS_ATTENTION";
    case SagaState::kAborted:
      return "ABORTED";
  }
  return "UNKNOWN";
}

// The status of a confirmed booking whose cancellation is in `state`.
std::string cancelled_status(SagaState state) {
  switch (state) {
    case SagaState::kCompleted:
      return "CANCELLED";
    case SagaState::kFailed:
      return "NEEDS_ATTENTION";
    default:
      return "CANCELLING";
  }
}

// `reservation` (as reservation_json shows a confirmed booking) once its
// cancellation `c` is as it is: its status, refund, reason and steps.
Json with_cancellation(Json reservation, const SagaView& c) {
  reservation["status"] = cancelled_status(c.state);
  if (c.data.contains("refundAmount")) {
    reservation["refundAmount"] = c.data.value("refundAmount", int64_t{0});
    reservation["refundKind"] = str(c.data, "refundKind");
  }
  reservation.erase("reason");
  if (c.state == SagaState::kFailed && !c.last_error.empty()) reservation["reason"] = c.last_error;
  Json steps = Json::array();
  for (const Json& step : reservation.value("steps", Json::array()))  // not the cancellation's
    if (step.value("name", "").rfind("cancel-", 0) != 0) steps.push_back(step);
  for (const StepView& s : c.steps)
    steps.push_back({{"name", "cancel-" + s.name}, {"status", std::string(to_string(s.status))}});
  reservation["steps"] = std::move(steps);
  return reservation;
}

// The records a booking (or seed-booking) saga writes when its state changes.
RecordsFn booking_records(std::chrono::milliseconds retention) {
  return [retention](const SagaView& saga, std::optional<SagaState> previous) {
    const int64_t expires = booking_expiry(saga.data, retention);
    const std::string status = booking_status(saga.state, saga.cancel_requested);
    std::vector<Record> out;
    out.push_back({booking_key_of(saga.id),
                   Json{{"reservation", reservation_json(saga)}, {"data", saga.data}}.dump(),
                   expires, ""});
    if (!previous || booking_status(*previous, saga.cancel_requested) != status)
      out.push_back(
          {history_key(saga.id, saga.updated_ms, status == "PENDING" ? 0 : 1, status), "", expires,
           ""});
    if (!previous) {
      const std::string user = str(saga.data, "userId");
      const int64_t created = saga.data.value("createdMs", saga.created_ms);
      out.push_back(
          {user_entry(user, user_token(created, saga.id)), "", expires, user});
      if (saga.data.contains("idempotencyKey"))
        out.push_back({idempotency_key_of(user, str(saga.data, "idempotencyKey")),
                       Json{{"id", saga.id}, {"requestHash", str(saga.data, "requestHash")}}.dump(),
                       expires, user});
    }
    return out;
  };
}

// The records a cancellation writes: its booking's, from the booking's
// record it started with (data.booking). A cancellation started before
// bookings had records has none, and writes nothing.
RecordsFn cancellation_records(std::chrono::milliseconds retention) {
  return [retention](const SagaView& c, std::optional<SagaState> previous) {
    std::vector<Record> out;
    auto booking = c.data.find("booking");
    if (booking == c.data.end() || !booking->is_object()) return out;
    const std::string id = str(c.data, "bookingId");
    const Json& data = (*booking)["data"];
    const int64_t expires = booking_expiry(data, retention);
    Json reservation = with_cancellation((*booking)["reservation"], c);
    const std::string status = reservation["status"];
    out.push_back({booking_key_of(id),
                   Json{{"reservation", std::move(reservation)}, {"data", data},
                        {"cancellationId", c.id}}
                       .dump(),
                   expires, id});
    if (!previous || cancelled_status(*previous) != status)
      out.push_back(
          {history_key(id, c.updated_ms, status == "CANCELLING" ? 2 : 3, status), "", expires, id});
    return out;
  };
}


// The stay, quantity and stated amount of a booking request, validated.
struct Stay {
  std::string check_in, check_out;
  int64_t nights = 0;
  int64_t qty = 0;
  std::optional<int64_t> amount;  // what the client says it expects to pay
};

// Our API takes dates as "YYYY-MM-DD" strings; the seed's call (`seed`)
// takes "YYYYMMDD" (or ISO) as a string or a number, and may leave out the
// amount. An amount is an integer (minor units): a float is refused.
StatusOr<Stay> parse_stay(const Json& body, const char* in_field, const char* out_field,
                          bool seed) {
  auto date = [&](const char* field) -> StatusOr<domain::Date> {
    const char* format = seed ? "YYYYMMDD" : "YYYY-MM-DD";
    auto it = body.find(field);
    const bool usable = it != body.end() && (it->is_string() || (seed && it->is_number_unsigned()));
    if (!usable) return Status::invalid_argument(std::string(field) + " must be a date " + format);
    if (!seed) return domain::parse_iso_date(it->get_ref<const std::string&>(), field);
    return domain::parse_date(it->is_string() ? it->get<std::string>() : it->dump(), field);
  };
  SAGA_ASSIGN_OR_RETURN(domain::Date in, date(in_field));
  SAGA_ASSIGN_OR_RETURN(domain::Date out, date(out_field));
  const long nights = domain::days_between(in, out);
  if (nights <= 0)
    return Status::invalid_argument(std::string(out_field) + " must be after " + in_field);
  if (nights > kMaxNights)
    return Status::invalid_argument("at most " + std::to_string(kMaxNights) +
                                    " nights per reservation");
  Stay s;
  s.check_in = domain::format_date(in);
  s.check_out = domain::format_date(out);
  s.nights = nights;
  SAGA_ASSIGN_OR_RETURN(s.qty, domain::int_field(body, "qty", 1, 1'000'000));
  auto amount = body.find("amount");
  if (!seed || (amount != body.end() && !amount->is_null())) {
    SAGA_ASSIGN_OR_RETURN(s.amount, domain::money_field(body, "amount"));
  }
  return s;
}

// A booking as its record holds it (or, before bookings had records, as its
// sagas tell it).
struct Booking {
  Json reservation;           // as GET shows it, without its history
  Json data;                  // the booking saga's data
  bool cancellation = false;  // its customer cancelled it once confirmed
  Json history = Json::array();  // {status, atMs}, oldest first (load_history)

  std::string status() const { return reservation.value("status", std::string("UNKNOWN")); }
  std::string user() const { return str(data, "userId"); }
  Json to_json() const {
    Json out = reservation;
    out["history"] = history;
    return out;
  }
  // What a cancellation carries of it, and writes its record from.
  Json record() const { return {{"reservation", reservation}, {"data", data}}; }
};

// The booking of saga `id` and its cancellation from the sagas themselves:
// for bookings made before bookings had records, while their sagas last.
StatusOr<Booking> booking_from_sagas(Orchestrator& orch, std::string_view id) {
  auto view = orch.get(id);
  if (!view.ok()) {
    if (view.status().code() == StatusCode::kNotFound)
      return Status::not_found("reservation " + std::string(id) + " not found");
    return view.status();
  }
  if (!is_booking_type(view->type))
    return Status::not_found("reservation " + std::string(id) + " not found");
  std::optional<SagaView> cancellation;
  if (view->state == SagaState::kCompleted) {
    // Its cancellation's id; before cancellations shared their booking's
    // shard, always "<id>.cancel" (found too: still the booking's).
    std::vector<std::string> ids = {cancellation_id(orch, id)};
    if (ids[0] != std::string(id) + ".cancel") ids.push_back(std::string(id) + ".cancel");
    for (const std::string& cid : ids) {
      auto cancel = orch.get(cid);
      if (cancel.ok()) {
        cancellation = std::move(*cancel);
        break;
      }
      if (cancel.status().code() != StatusCode::kNotFound) return cancel.status();
    }
  }
  Booking b{reservation_json(*view, cancellation ? &*cancellation : nullptr), view->data,
            cancellation.has_value()};
  // Its history as far as the sagas know it: made, and where it is now.
  b.history.push_back({{"status", "PENDING"}, {"atMs", view->created_ms}});
  const int64_t last = cancellation ? cancellation->updated_ms : view->updated_ms;
  if (b.status() != "PENDING") b.history.push_back({{"status", b.status()}, {"atMs", last}});
  return b;
}

StatusOr<Booking> load_booking(Orchestrator& orch, std::string_view id) {
  SAGA_ASSIGN_OR_RETURN(std::optional<Record> r, orch.record(id, booking_key_of(id)));
  if (!r) return booking_from_sagas(orch, id);
  auto j = parse_json(r->value);
  if (!j.ok() || !j->is_object() || !j->contains("reservation"))
    return Status::data_loss("reservation " + std::string(id) + ": undecodable record");
  if (j->value("legacy", false)) {  // backfilled: its sagas are fresher while they last
    auto b = booking_from_sagas(orch, id);
    if (b.status().code() != StatusCode::kNotFound) return b;
  }
  Booking b{(*j)["reservation"], (*j)["data"], j->contains("cancellationId")};
  SAGA_ASSIGN_OR_RETURN(std::vector<Record> changes,
                        orch.records(id, history_prefix(id), "", 1000));
  for (const Record& c : changes) {
    const std::string_view rest = std::string_view(c.key).substr(history_prefix(id).size());
    if (rest.size() < 19) continue;  // not one of ours: <ms, 16 digits><rank>/<status>
    b.history.push_back({{"status", std::string(rest.substr(18))},
                         {"atMs", std::stoll(std::string(rest.substr(0, 16)))}});
  }
  return b;
}

// The answer to a cancel: the booking's status, and the refund when a
// cancellation saga decided one.
Json cancel_answer(const std::string& id, const Booking& b) {
  Json out = {{"id", id}, {"status", b.status()}};
  if (b.reservation.contains("refundAmount")) out["refundAmount"] = b.reservation["refundAmount"];
  return out;
}

// The booking `id` when `who` may see it (its customer, or an admin). Someone
// else's booking is NotFound with the very message of a missing one, so that
// ids leak nothing.
StatusOr<Booking> load_visible_booking(Orchestrator& orch, std::string_view id,
                                       const Identity& who) {
  auto b = load_booking(orch, id);
  if (b.ok() && !who.may_act_as(b->user()))
    return Status::not_found("reservation " + std::string(id) + " not found");
  return b;
}

// Records for the bookings of the shards this replica owns that were made
// before bookings had records (marked legacy: read through their sagas while
// those last), so that every booking is listed and keeps its key. Idempotent:
// a booking with a record keeps it.
Status backfill(Orchestrator& orch, std::chrono::milliseconds retention) {
  size_t written = 0;
  for (const char* type : {kSagaType, kSeedSagaType}) {
    ListQuery q;
    q.type = type;
    q.limit = 1000;
    for (;;) {
      SAGA_ASSIGN_OR_RETURN(auto page, orch.list(q));
      for (const SagaView& v : page.items) {
        if (orch.owner_of(v.id).where != ShardOwner::Where::kHere) continue;
        SAGA_ASSIGN_OR_RETURN(auto held, orch.record(v.id, booking_key_of(v.id)));
        if (held) continue;
        auto b = booking_from_sagas(orch, v.id);
        if (!b.ok()) continue;  // removed meanwhile
        const int64_t expires = booking_expiry(v.data, retention);
        Json record = b->record();
        record["legacy"] = true;
        if (b->cancellation) record["cancellationId"] = "";
        std::vector<Record> own = {{booking_key_of(v.id), record.dump(), expires, ""}};
        for (size_t i = 0; i < b->history.size(); ++i) {
          const Json& h = b->history[i];
          own.push_back(
              {history_key(v.id, h["atMs"], static_cast<int>(i), h["status"]), "", expires, ""});
        }
        // The user's records go to the user's shard (older ids may be in another).
        const std::string user = str(v.data, "userId");
        std::vector<Record> users = {
            {user_entry(user, user_token(v.data.value("createdMs", v.created_ms), v.id)), "",
             expires, user}};
        if (v.data.contains("idempotencyKey"))
          users.push_back({idempotency_key_of(user, str(v.data, "idempotencyKey")),
                           Json{{"id", v.id}, {"requestHash", str(v.data, "requestHash")}}.dump(),
                           expires, user});
        Status s = orch.write_records(user, std::move(users), true);
        if (s.ok()) s = orch.write_records(v.id, std::move(own), true);
        if (!s.ok()) {
          spdlog::warn("reservation: no record for booking {} yet: {}", v.id, s.to_string());
          continue;
        }
        ++written;
      }
      if (page.next_page_token.empty()) break;
      q.page_token = page.next_page_token;
    }
  }
  if (written > 0) spdlog::info("reservation: wrote the records of {} earlier bookings", written);
  return ok_status();
}

// 403 unless `who` may book for `user`.
std::optional<Response> refuse_other_user(const Identity& who, const std::string& user,
                                          const char* field) {
  if (who.may_act_as(user)) return std::nullopt;
  return service::forbidden(std::string(field) +
                            " must be your own user id (the token's sub): you may only book "
                            "as yourself");
}

Response unprocessable(const std::string& detail) {
  return Response::problem(422, "Unprocessable Content", detail);
}

// The amount of a stay, priced by the server.
struct Priced {
  int64_t amount = 0;
  int64_t nightly = 0;
  std::string currency;
};

// Prices `stay` at `place` with the inventory's nightly price. A refusal:
// 503 + Retry-After when the inventory cannot be asked (no price, no amount:
// accepting would charge a guess), 422 for an unknown or unpriced place, a
// total beyond kMaxMoney, or a client amount other than the server's.
std::variant<Priced, Response> price_stay(const Options& options, const std::string& place,
                                          const Stay& stay) {
  auto unavailable = [](const std::string& why) {
    Response r = Response::problem(503, "Service Unavailable",
                                   "cannot price the booking now: " + why + "; try again");
    r.set_header("Retry-After", std::to_string(kInventoryRetryAfterSeconds));
    return r;
  };
  if (!options.place_lookup) return unavailable("no price source is configured");
  auto info = options.place_lookup(place);
  if (!info.ok()) {
    spdlog::warn("cannot ask the inventory about place {} ({}); refusing the booking (503)",
                 place, info.status().message());
    return unavailable("the inventory cannot be reached");
  }
  if (!*info) return unprocessable("place " + place + " does not exist");
  if (!(*info)->priced) return unprocessable("place " + place + " has no price yet");
  Priced p{0, (*info)->price, (*info)->currency};
  int64_t per_night = 0;
  if (__builtin_mul_overflow(stay.qty, p.nightly, &per_night) ||
      __builtin_mul_overflow(per_night, stay.nights, &p.amount) || p.amount > domain::kMaxMoney)
    return unprocessable("the amount of this booking is too large");
  if (stay.amount && *stay.amount != p.amount)
    return unprocessable("amount " + std::to_string(*stay.amount) + " does not match the price: " +
                         std::to_string(stay.nights) + " nights x " + std::to_string(stay.qty) +
                         " rooms x " + std::to_string(p.nightly) + " " + p.currency + " = " +
                         std::to_string(p.amount));
  return p;
}

// The SHA-256 of a booking request: its route and its canonical JSON body
// (parsed, keys sorted), so that spacing and key order do not matter.
std::string request_hash(std::string_view route, const Json& body) {
  return domain::sha256_hex(std::string(route) + '\n' + body.dump());
}

// How a booking request is to proceed with its Idempotency-Key, if any.
struct Admission {
  std::string id;                      // the reservation id to start (fresh) or answer
  std::string key;                     // the Idempotency-Key ("" without)
  bool replay = false;                 // the key's booking exists: answer it
  std::optional<Response> refusal;     // 400 bad key, 422 other body
};

// A request without a key gets a new random id. With a key, the key's
// booking when it was made by the same request (replay), 422 when it was made
// by another, else a new random id claimed for the key. Ids never derive from keys.
// A new booking id in the shard of `user`, so that one replica drives all
// of a user's bookings and holds their index and Idempotency-Keys
// (docs/replicas.md, "Routing").
std::string new_booking_id(const Orchestrator& orch, const std::string& user) {
  const uint32_t shard = orch.owner_of(user).shard;
  for (;;) {
    std::string id = domain::new_id("r-");
    if (orch.owner_of(id).shard == shard) return id;
  }
}

Admission admit(const Request& req, Orchestrator& orch, KeyClaims& claims,
                const std::string& user, const std::string& hash) {
  Admission a;
  auto key = req.header("Idempotency-Key");
  if (!key) {
    a.id = new_booking_id(orch, user);
    return a;
  }
  if (Status s = domain::check_id(*key, "Idempotency-Key"); !s.ok()) {
    a.refusal = bad_request(s);
    return a;
  }
  a.key = std::string(*key);
  // A started booking's key is in its key record, in the user's shard.
  auto stored = [&orch](const std::string& user, const std::string& key)
      -> StatusOr<std::optional<KeyClaims::Keyed>> {
    std::optional<KeyClaims::Keyed> none;
    SAGA_ASSIGN_OR_RETURN(std::optional<Record> r,
                          orch.record(user, idempotency_key_of(user, key)));
    if (!r) return none;
    auto j = parse_json(r->value);
    if (!j.ok() || !j->is_object())
      return Status::data_loss("the record of Idempotency-Key " + key + " is undecodable");
    return std::optional<KeyClaims::Keyed>({str(*j, "id"), str(*j, "requestHash"), false});
  };
  auto claimed = claims.claim(user, a.key, hash, new_booking_id(orch, user), stored);
  if (!claimed.ok()) {
    a.refusal = Response::from_status(claimed.status());
    return a;
  }
  const KeyClaims::Keyed& k = *claimed;
  a.id = k.id;
  if (k.fresh) return a;
  if (k.request_hash != hash) {
    a.refusal = unprocessable("Idempotency-Key already used for a different request");
    return a;
  }
  a.replay = true;
  return a;
}

// The answer to a replayed request whose booking is still being started by
// the first one.
Response in_progress() {
  Response r = Response::problem(409, "Conflict",
                                 "a request with this Idempotency-Key is in progress; try again");
  r.set_header("Retry-After", "1");
  return r;
}

// A validated booking request, as both booking routes make one.
struct BookingRequest {
  const char* route;      // "POST /reservations": hashed with the body
  const char* saga_type;  // kSagaType or kSeedSagaType
  std::string user;
  std::string place;
  Stay stay;
  Json fields = Json::object();  // the route's own saga data (placeNm)
};

// How a route names the fields every booking has.
struct BookingFieldNames {
  const char* user;       // "userId" / the seed's "usrId"
  const char* check_in;   // "checkIn" / "strDt"
  const char* check_out;  // "checkOut" / "endDt"
  bool compact_dates;     // YYYYMMDD (the seed) rather than YYYY-MM-DD
};

// The place, the user (the caller itself only: 403 otherwise) and the stay
// of a booking body, or the response that refuses them.
std::variant<Response, BookingRequest> read_booking(const Json& body, const Identity& who,
                                                    const BookingFieldNames& names) {
  BookingRequest b{};
  auto place = domain::id_field(body, "placeId");
  if (!place.ok()) return bad_request(place.status());
  auto user = domain::id_field(body, names.user);
  if (!user.ok()) return bad_request(user.status());
  if (auto refused = refuse_other_user(who, *user, names.user)) return *refused;
  auto stay = parse_stay(body, names.check_in, names.check_out, names.compact_dates);
  if (!stay.ok()) return bad_request(stay.status());
  b.place = std::move(*place);
  b.user = std::move(*user);
  b.stay = *stay;
  return b;
}

// Starts the booking `b` with its Idempotency-Key (admit), or answers the
// key's booking: the same body, the same booking (409 while its first request
// still starts it); another body, 422. A fresh booking is priced (price_stay:
// 503 / 422 refusals release the key) and started; `answer` makes the response
// for the booking's id.
Response book(Orchestrator& orch, KeyClaims& claims, const Options& options,
              const std::function<int64_t()>& now, const Request& req, const Json& body,
              const BookingRequest& b, const std::function<Response(const std::string&)>& answer) {
  const std::string hash = request_hash(b.route, body);
  Admission a = admit(req, orch, claims, b.user, hash);
  if (a.refusal) return *a.refusal;
  if (a.replay) {
    if (!load_booking(orch, a.id).ok()) return in_progress();
    return answer(a.id);
  }
  // A fresh claim ends here, whatever happens: its booking is then in the
  // store (its key record with it), or was not started.
  struct Release {
    KeyClaims& claims;
    const std::string& user;
    const std::string& key;
    ~Release() {
      if (!key.empty()) claims.release(user, key);
    }
  } release{claims, b.user, a.key};
  auto priced = price_stay(options, b.place, b.stay);
  if (auto* refused = std::get_if<Response>(&priced)) return *refused;
  const Priced& p = std::get<Priced>(priced);
  Json data = b.fields;
  data.update({{"reservationId", a.id},
               {"placeId", b.place},
               {"userId", b.user},
               {"checkIn", b.stay.check_in},
               {"checkOut", b.stay.check_out},
               {"qty", b.stay.qty},
               {"amount", p.amount},
               {"currency", p.currency},
               {"nightlyPrice", p.nightly},
               {"createdMs", now()}});
  if (!a.key.empty()) {
    data["idempotencyKey"] = a.key;
    data["requestHash"] = hash;
  }
  StartOptions so;
  so.id = a.id;
  so.traceparent = req.traceparent();
  auto started = orch.start(b.saga_type, std::move(data), so);
  if (!started.ok()) return Response::from_status(started.status());
  return answer(*started);
}

// The payment step of both booking sagas: charge, undone by refund.
DefinitionBuilder& add_pay_step(DefinitionBuilder& b) {
  return b.command("pay", kPayment, "charge")
      .payload(charge_payload)
      .on_reply(merge_payment)
      .compensate(kPayment, "refund", empty_payload)
      .timeout(kStepTimeout)
      .retry(kStepRetry)
      .compensation_retry(kForever);
}

}  // namespace

std::string cancellation_id(const Orchestrator& orch, std::string_view id) {
  const uint32_t shard = orch.owner_of(id).shard;
  std::string out = std::string(id) + ".cancel";
  for (int n = 1; orch.owner_of(out).shard != shard; ++n)
    out = std::string(id) + ".cancel." + std::to_string(n);
  return out;
}

StatusOr<DefinitionPtr> booking_definition(Options options) {
  DefinitionBuilder b(kSagaType, kSagaVersion);
  b.command("reserve", kInventory, "reserve")
      .key(place_key)
      .payload(stay_payload)
      .on_reply(merge_hold)
      .compensate(kInventory, "release", empty_payload)
      .timeout(kStepTimeout)
      .retry(kStepRetry)
      .compensation_retry(kForever);
  return add_pay_step(b)
      .command("confirm", kInventory, "confirm")
      .key(place_key)
      .payload(empty_payload)
      .timeout(kStepTimeout)
      .retry(kStepRetry)
      .on_state_change(booking_events(clock_of(options)))
      .records(booking_records(options.booking_retention))
      .build();
}

StatusOr<DefinitionPtr> seed_booking_definition(Options options) {
  DefinitionBuilder b(kSeedSagaType, kSagaVersion);
  return add_pay_step(b)
      .command("allocate", kInventory, "allocate")
      .key(place_key)
      .payload(stay_payload)
      .on_reply([](Json& d, const Json& r) {
        merge_hold(d, r);
        d["allocated"] = r.is_object() && r.value("allocated", false);
        if (r.is_object() && r.contains("reason")) d["allocationError"] = r["reason"];
      })
      .compensate(kInventory, "release", empty_payload)
      .timeout(kStepTimeout)
      .retry(kStepRetry)
      .compensation_retry(kForever)
      .local("check",
             [](Json& d) {
               if (d.value("allocated", false)) return ok_status();
               return Status::failed_precondition(
                   d.value("allocationError", std::string("no availability")));
             })
      .on_state_change(booking_events(clock_of(options)))
      .records(booking_records(options.booking_retention))
      .build();
}

StatusOr<DefinitionPtr> cancellation_definition(Options options) {
  // Both steps are retried until they succeed: a confirmed booking, once its
  // customer cancels, must end with its rooms released and its money back.
  return DefinitionBuilder(kCancelSagaType, kSagaVersion)
      .command("release", kInventory, "release")
      .key(place_key)
      .payload(booking_ref_payload)
      .timeout(kStepTimeout)
      .retry(kForever)
      .command("refund", kPayment, "refund")
      .key(booking_key)
      .payload(refund_payload)
      .timeout(kStepTimeout)
      .retry(kForever)
      .on_state_change(cancellation_events(clock_of(options)))
      .records(cancellation_records(options.booking_retention))
      .build();
}

StatusOr<Refund> cancellation_refund(const Json& data, int64_t now_ms,
                                     const CancellationPolicy& policy) {
  using std::chrono::milliseconds;
  if (policy.late_refund_percent < 0 || policy.late_refund_percent > 100)
    return Status::invalid_argument("late refund must be 0..100 percent");
  if (policy.check_in_time < milliseconds(0) || policy.check_in_time >= std::chrono::hours(24))
    return Status::invalid_argument("check-in time must be within its day");
  SAGA_ASSIGN_OR_RETURN(domain::Date in, domain::parse_iso_date(str(data, "checkIn"), "checkIn"));
  SAGA_ASSIGN_OR_RETURN(int64_t amount, domain::money_field(data, "amount"));
  const int64_t begins_ms =
      std::chrono::duration_cast<milliseconds>(std::chrono::sys_days(in).time_since_epoch() +
                                               policy.check_in_time)
          .count();
  if (now_ms >= begins_ms) {
    const int64_t minutes = policy.check_in_time.count() / 60'000;
    char at[8];
    std::snprintf(at, sizeof at, "%02d:%02d", static_cast<int>(minutes / 60),
                  static_cast<int>(minutes % 60));
    return Status::failed_precondition("its stay began on " + domain::format_date(in) + " at " +
                                       at + " UTC");
  }
  if (begins_ms - now_ms >= policy.free_until.count()) return Refund{amount, "FULL"};
  // amount * percent / 100 without overflow: amount is at most 2^53.
  return Refund{amount / 100 * policy.late_refund_percent +
                    amount % 100 * policy.late_refund_percent / 100,
                "PARTIAL"};
}

StatusOr<CancellationPolicy> cancellation_policy_from_env() {
  CancellationPolicy p;
  SAGA_ASSIGN_OR_RETURN(p.free_until, service::env_duration_ms("CANCEL_FREE_UNTIL", p.free_until));
  SAGA_ASSIGN_OR_RETURN(p.late_refund_percent,
                        service::env_int("CANCEL_LATE_REFUND_PERCENT", p.late_refund_percent, 0,
                                         100));
  SAGA_ASSIGN_OR_RETURN(p.check_in_time,
                        service::env_duration_ms("CHECK_IN_TIME", p.check_in_time,
                                                 std::chrono::milliseconds(0),
                                                 std::chrono::hours(24) -
                                                     std::chrono::milliseconds(1)));
  return p;
}

StatusOr<std::vector<DefinitionPtr>> definitions(Options options) {
  std::vector<DefinitionPtr> out;
  SAGA_ASSIGN_OR_RETURN(auto booking, booking_definition(options));
  SAGA_ASSIGN_OR_RETURN(auto seed, seed_booking_definition(options));
  SAGA_ASSIGN_OR_RETURN(auto cancel, cancellation_definition(options));
  out.push_back(std::move(booking));
  out.push_back(std::move(seed));
  out.push_back(std::move(cancel));
  return out;
}

PlaceLookup inventory_place_lookup(std::vector<service::HostPort> replicas) {
  auto next = std::make_shared<std::atomic<size_t>>(0);
  return [replicas = std::move(replicas), next](const std::string& id)
             -> StatusOr<std::optional<PlaceInfo>> {
    service::ClientOptions co;
    co.connect_timeout = std::chrono::milliseconds(1'000);
    co.request_timeout = std::chrono::milliseconds(2'000);
    // Round robin; a replica that cannot be reached (nothing was asked) is
    // passed over for the next one.
    const size_t first = next->fetch_add(1);
    StatusOr<service::ClientResponse> r = Status::unavailable("no inventory address");
    for (size_t i = 0; i < replicas.size(); ++i) {
      const service::HostPort& at = replicas[(first + i) % replicas.size()];
      service::HttpClient client(at.host, at.port, co);
      r = client.get("/places/" + service::percent_encode(id));
      if (r.ok() || r.status().code() != StatusCode::kUnavailable) break;
    }
    if (!r.ok()) return r.status();
    if (r->status == 404) return std::optional<PlaceInfo>();
    if (r->status != 200)
      return Status::unavailable("inventory answered " + std::to_string(r->status));
    auto place = parse_json(r->body);
    if (!place.ok() || !place->is_object())
      return Status::unavailable("inventory answered a place that is not a JSON object");
    PlaceInfo info;
    if (place->contains("price")) {
      auto price = domain::price_field(*place, "price");
      if (!price.ok())
        return Status::unavailable("inventory answered a bad price: " + price.status().message());
      info.priced = true;
      info.price = price->amount;
      info.currency = price->currency;
    }
    return std::optional<PlaceInfo>(std::move(info));
  };
}

std::string reservation_status(const SagaView& saga, const SagaView* cancellation) {
  if (saga.state == SagaState::kCompleted && cancellation)
    return cancelled_status(cancellation->state);
  return booking_status(saga.state, saga.cancel_requested);
}

Json reservation_json(const SagaView& saga, const SagaView* cancellation) {
  const Json& d = saga.data;
  const std::string status = booking_status(saga.state, saga.cancel_requested);
  Json out = {{"id", saga.id},
              {"placeId", str(d, "placeId")},
              {"userId", str(d, "userId")},
              {"checkIn", str(d, "checkIn")},
              {"checkOut", str(d, "checkOut")},
              {"qty", d.value("qty", int64_t{0})},
              {"amount", d.value("amount", int64_t{0})},
              {"status", status},
              {"createdMs", d.value("createdMs", saga.created_ms)}};
  if (d.contains("currency")) out["currency"] = str(d, "currency");
  if (d.contains("placeNm")) out["placeNm"] = str(d, "placeNm");
  if ((status == "REJECTED" || status == "NEEDS_ATTENTION") && !saga.last_error.empty())
    out["reason"] = saga.last_error;
  Json steps = Json::array();
  for (const StepView& s : saga.steps)
    steps.push_back({{"name", s.name}, {"status", std::string(to_string(s.status))}});
  out["steps"] = std::move(steps);
  if (cancellation) return with_cancellation(std::move(out), *cancellation);
  return out;
}

void add_routes(service::Router& router, Orchestrator& orch, Options options) {
  auto now = clock_of(options);
  auto claims = std::make_shared<KeyClaims>();
  // Bookings made before bookings had records get theirs (backfill) in the
  // shards this replica owns: now, and again once it has taken shards since.
  struct Sync {
    std::mutex mu;
    uint64_t claims = 0;  // GUARDED_BY(mu): EngineStats::shard_claims at the last backfill
  };
  auto sync = std::make_shared<Sync>();
  const auto retention = options.booking_retention;
  auto backfilled = [&orch, sync, retention]() -> Status {
    const uint64_t claims = orch.stats().shard_claims;
    std::lock_guard lock(sync->mu);
    if (claims == sync->claims) return ok_status();
    SAGA_RETURN_IF_ERROR(backfill(orch, retention));
    sync->claims = claims;
    return ok_status();
  };
  sync->claims = orch.stats().shard_claims;
  if (Status s = backfill(orch, retention); !s.ok())
    spdlog::error("reservation: writing the records of earlier bookings failed: {}",
                  s.to_string());

  router.post(
      "/reservations",
      service::authenticated_json([&orch, now, options, claims, backfilled](
                                      const Request& req, const Identity& who, const Json& body) {
        if (!body.is_object())
          return bad_request(Status::invalid_argument("body must be an object"));
        auto read = read_booking(body, who, {"userId", "checkIn", "checkOut", false});
        if (auto* refused = std::get_if<Response>(&read)) return *refused;
        BookingRequest& b = std::get<BookingRequest>(read);
        const ShardOwner owner = orch.owner_of(b.user);
        if (owner.where != ShardOwner::Where::kHere)
          return service::send_to_owner(req, owner);
        if (Status s = backfilled(); !s.ok()) return Response::from_status(s);
        b.route = "POST /reservations";
        b.saga_type = kSagaType;
        auto answer = [&orch](const std::string& id) {
          auto now_status = load_booking(orch, id);  // not PENDING for a repeated request
          Response r = Response::json(
              202, {{"id", id}, {"status", now_status.ok() ? now_status->status() : "PENDING"}});
          r.set_header("Location", "/reservations/" + id);
          return r;
        };

        return book(orch, *claims, options, now, req, body, b, answer);
      }));

  // The seed's call: {placeNm, status, usrId, strDt, endDt (YYYYMMDD), qty,
  // amount, placeId}; numbers may come as text, as httpie sends them.
  router.post(
      "/accommodations",
      service::authenticated_json([&orch, now, options, claims, backfilled](
                                      const Request& req, const Identity& who, const Json& json) {
        if (!json.is_object())
          return bad_request(Status::invalid_argument("body must be an object"));
        Json body = json;
        for (const char* field : {"qty", "amount"})
          if (body.contains(field)) body[field] = domain::number_from_text(body[field]);
        auto read = read_booking(body, who, {"usrId", "strDt", "endDt", true});
        if (auto* refused = std::get_if<Response>(&read)) return *refused;
        BookingRequest& b = std::get<BookingRequest>(read);
        const ShardOwner owner = orch.owner_of(b.user);
        if (owner.where != ShardOwner::Where::kHere)
          return service::send_to_owner(req, owner);
        if (Status s = backfilled(); !s.ok()) return Response::from_status(s);
        b.route = "POST /accommodations";
        b.saga_type = kSeedSagaType;
        std::string place_name;
        if (body.contains("placeNm")) {
          auto name = domain::string_field(body, "placeNm");
          if (!name.ok()) return bad_request(name.status());
          place_name = *name;
        }
        b.fields = {{"placeNm", place_name}};
        // The answer echoes the booking as stored (a replay: as first made).
        auto answer = [&orch](const std::string& id) {
          auto b = load_booking(orch, id);
          if (!b.ok()) return Response::from_status(b.status());
          const Json& d = b->data;
          Json out = seed_fields(d);
          out["id"] = id;
          out["placeNm"] = str(d, "placeNm");
          out["currency"] = str(d, "currency");
          out["status"] = b->status();
          Response r = Response::json(201, out);
          r.set_header("Location", "/accommodations/" + id);
          return r;
        };

        return book(orch, *claims, options, now, req, body, b, answer);
      }));

  auto get_one = service::authenticated([&orch](const Request& req, const Identity& who) {
    return service::at_owner(req, orch.owner_of(req.param("id")), [&] {
      auto b = load_visible_booking(orch, req.param("id"), who);
      if (!b.ok()) return Response::from_status(b.status());
      return Response::json(200, b->to_json());
    });
  });
  router.get("/reservations/{id}", get_one);
  router.get("/accommodations/{id}", get_one);

  router.get(
      "/reservations",
      service::authenticated([&orch, backfilled](const Request& req, const Identity& who) {
        // Without userId: the caller's own. Another user's list is 404 (admin: any).
        const auto user = req.query("userId").value_or(who.subject);
        if (user.empty())
          return bad_request(
              Status::invalid_argument("query parameter 'userId' must not be empty"));
        if (!who.may_act_as(user))
          return Response::from_status(Status::not_found("no reservations of user " + user));
        const ShardOwner owner = orch.owner_of(user);  // a user's bookings share its shard
        if (owner.where != ShardOwner::Where::kHere)
          return service::send_to_owner(req, owner);
        if (Status s = backfilled(); !s.ok()) return Response::from_status(s);
        auto page = domain::page_request(req);
        if (!page.ok()) return bad_request(page.status());
        // The user's index entries, oldest first; the token names the last
        // entry of the page before: "<createdMs, 16 digits>.<id>".
        std::string after;
        if (!page->token.empty()) {
          const std::string& t = page->token;
          if (t.size() < 18 || t[16] != '.' ||
              !std::all_of(t.begin(), t.begin() + 16, [](char c) { return c >= '0' && c <= '9'; }))
            return bad_request(
                Status::invalid_argument("query parameter 'pageToken' is not a page token"));
          after = user_entry(user, t);
        }
        const std::string prefix = user_prefix(user);
        Json out = Json::array();
        std::string next;
        for (;;) {
          // One more than the page still needs: whether another page follows.
          const size_t asked = page->limit - out.size() + 1;
          auto entries = orch.records(user, prefix, after, asked);
          if (!entries.ok()) return Response::from_status(entries.status());
          for (const Record& e : *entries) {
            if (out.size() == page->limit) {
              next = after.substr(prefix.size());
              next[16] = '.';
              break;
            }
            after = e.key;
            auto b = load_booking(orch, e.key.substr(prefix.size() + 17));
            if (b.ok()) {
              out.push_back(b->reservation);
            } else if (b.status().code() != StatusCode::kNotFound) {
              return Response::from_status(b.status());
            }
          }
          if (!next.empty() || entries->size() < asked) break;
        }
        Response r = Response::json(200, out);
        domain::set_next_page_token(r, next);
        return r;
      }));

  router.post("/reservations/{id}/cancel",
              service::authenticated([&orch, now, policy = options.cancellation](
                                         const Request& req, const Identity& who) {
                const std::string id(req.param("id"));
                const ShardOwner owner = orch.owner_of(id);
                if (owner.where != ShardOwner::Where::kHere)
                  return service::send_to_owner(req, owner);
                // Two rounds: the booking may complete between reading it and cancelling it.
                for (int round = 0; round < 2; ++round) {
                  auto b = load_visible_booking(orch, id, who);
                  if (!b.ok()) return Response::from_status(b.status());
                  const std::string status = b->status();
                  if (b->cancellation) return Response::json(202, cancel_answer(id, *b));  // asked before
                  if (status == "CONFIRMED") {
                    auto refund = cancellation_refund(b->data, now(), policy);
                    if (refund.status().code() == StatusCode::kFailedPrecondition)
                      return Response::problem(409, "Conflict",
                                               "reservation " + id + " can no longer be cancelled: " +
                                                   refund.status().message());
                    if (!refund.ok()) return Response::from_status(refund.status());
                    Json data = b->data;
                    data["booking"] = b->record();  // its record, which the cancellation writes
                    data["bookingId"] = id;
                    data["refundAmount"] = refund->amount;
                    data["refundKind"] = refund->kind;
                    StartOptions so;
                    so.id = cancellation_id(orch, id);
                    so.traceparent = req.traceparent();
                    auto started = orch.start(kCancelSagaType, std::move(data), so);
                    if (!started.ok() && started.status().code() != StatusCode::kAlreadyExists)
                      return Response::from_status(started.status());
                    auto after = load_booking(orch, id);
                    if (!after.ok()) return Response::from_status(after.status());
                    return Response::json(202, cancel_answer(id, *after));
                  }
                  if (status != "PENDING")
                    return Response::problem(
                        409, "Conflict",
                        "reservation " + id + " can no longer be cancelled (" + b->status() + ")");
                  Status s = orch.cancel(id);
                  if (s.code() == StatusCode::kFailedPrecondition) continue;  // finished meanwhile
                  if (!s.ok()) return Response::from_status(s);
                  auto after = load_booking(orch, id);
                  return Response::json(
                      202, {{"id", id}, {"status", after.ok() ? after->status() : "PENDING"}});
                }
                return Response::problem(409, "Conflict",
                                         "reservation " + id + " is changing; try again");
              }));

  service::add_admin_routes(router, orch);  // GET/POST /admin/sagas..., admin only
  service::add_standard_routes(
      router, {.readiness =
                   [&orch] {
                     return std::vector<service::ReadinessCheck>{{"orchestrator", orch.health()}};
                   },
               .metrics = [&orch] { return orch.metrics_text(); }});
}

}  // namespace saga::reservation
