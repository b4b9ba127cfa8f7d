#include "saga/inventory/inventory.h"

#include <algorithm>
#include <exception>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "domain/dates.h"
#include "domain/fields.h"
#include "domain/paging.h"
#include "domain/participant_service.h"
#include "domain/state.h"
#include "saga/json.h"
#include "saga/service/identity.h"
#include "saga/service/routing.h"
#include "saga/service/standard_routes.h"

namespace saga::inventory {
namespace {

using domain::Date;
using service::Identity;
using service::Request;
using service::Response;

std::string place_key(std::string_view id) { return "place/" + std::string(id); }
std::string night_prefix(std::string_view place) { return "night/" + std::string(place) + "/"; }
std::string night_key(std::string_view place, Date d) {
  return night_prefix(place) + domain::format_date(d);
}
std::string booking_key(std::string_view saga) { return "booking/" + std::string(saga); }
std::string owner_prefix(std::string_view owner) { return "owner/" + std::string(owner) + "/"; }

using domain::load;

struct Night {
  int64_t held = 0;
  int64_t confirmed = 0;
  int64_t used() const { return held + confirmed; }
  Json to_json() const { return {{"held", held}, {"confirmed", confirmed}}; }
};

Night night_of(const std::optional<Json>& j) {
  if (!j) return {};
  return {j->value("held", int64_t{0}), j->value("confirmed", int64_t{0})};
}

// A reserve command's payload, validated.
struct Stay {
  std::string reservation_id, place_id, user_id;
  Date check_in, check_out;
  int64_t qty = 0;
};

StatusOr<Stay> parse_stay(const Json& payload) {
  Stay s;
  SAGA_ASSIGN_OR_RETURN(s.reservation_id, domain::id_field(payload, "reservationId"));
  SAGA_ASSIGN_OR_RETURN(s.place_id, domain::id_field(payload, "placeId"));
  SAGA_ASSIGN_OR_RETURN(s.user_id, domain::id_field(payload, "userId"));
  SAGA_ASSIGN_OR_RETURN(std::string in, domain::string_field(payload, "checkIn"));
  SAGA_ASSIGN_OR_RETURN(std::string out, domain::string_field(payload, "checkOut"));
  SAGA_ASSIGN_OR_RETURN(s.check_in, domain::parse_date(in, "checkIn"));
  SAGA_ASSIGN_OR_RETURN(s.check_out, domain::parse_date(out, "checkOut"));
  SAGA_ASSIGN_OR_RETURN(s.qty, domain::int_field(payload, "qty", 1, kMaxRooms));
  const long nights = domain::days_between(s.check_in, s.check_out);
  if (nights <= 0) return Status::invalid_argument("checkOut must be after checkIn");
  if (nights > kMaxNights)
    return Status::invalid_argument("a stay is at most " + std::to_string(kMaxNights) + " nights");
  return s;
}

// The booking's first night and the nights it spans.
struct Span {
  Date first, last_exclusive;
};

StatusOr<Span> span_of(const Json& booking) {
  SAGA_ASSIGN_OR_RETURN(Date in, domain::parse_iso_date(booking.value("checkIn", ""), "checkIn"));
  SAGA_ASSIGN_OR_RETURN(Date out,
                        domain::parse_iso_date(booking.value("checkOut", ""), "checkOut"));
  return Span{in, out};
}

Message event(const std::string& type, const std::string& reservation_id, Json payload,
              int64_t now) {
  return domain::domain_event(kEventDestination, type, reservation_id, std::move(payload), now);
}

// Turns an exception or a storage error into a transient outcome: nothing
// commits and the orchestrator sends the command again.
template <class Fn>
CommandHandler guarded(Fn fn) {
  return [fn = std::move(fn)](CommandContext& ctx) -> HandlerResult {
    try {
      return fn(ctx);
    } catch (const std::exception& e) {
      return HandlerResult::retry(std::string("inventory error: ") + e.what());
    }
  };
}

#define INV_TRY_ASSIGN(lhs, rexpr)                                              \
  auto INV_CONCAT(tmp_, __LINE__) = (rexpr);                                    \
  if (!INV_CONCAT(tmp_, __LINE__).ok())                                         \
    return HandlerResult::retry(INV_CONCAT(tmp_, __LINE__).status().message()); \
  lhs = std::move(*INV_CONCAT(tmp_, __LINE__))
#define INV_CONCAT_INNER(a, b) a##b
#define INV_CONCAT(a, b) INV_CONCAT_INNER(a, b)

HandlerResult reserve(CommandContext& ctx) {
  const std::string& saga = ctx.command.saga_id;
  if (saga.empty()) return HandlerResult::failure("reserve command without a saga id");
  auto stay = parse_stay(ctx.payload);
  if (!stay.ok()) return HandlerResult::failure(stay.status().message());

  INV_TRY_ASSIGN(auto existing, load(ctx.state, booking_key(saga)));
  if (existing) return HandlerResult::success({{"holdId", saga}});  // already held

  INV_TRY_ASSIGN(auto place, load(ctx.state, place_key(stay->place_id)));
  if (!place) return HandlerResult::failure("unknown place " + stay->place_id);
  const int64_t rooms = place->value("rooms", int64_t{0});

  std::vector<std::pair<Date, Night>> nights;
  for (Date d = stay->check_in; d != stay->check_out; d = domain::next_day(d)) {
    INV_TRY_ASSIGN(auto stored, load(ctx.state, night_key(stay->place_id, d)));
    Night n = night_of(stored);
    if (n.used() + stay->qty > rooms)
      return HandlerResult::failure("no availability on " + domain::format_date(d));
    nights.emplace_back(d, n);
  }
  for (auto& [d, n] : nights) {
    n.held += stay->qty;
    ctx.state.put(night_key(stay->place_id, d), n.to_json().dump());
  }
  const Json booking = {{"placeId", stay->place_id},
                        {"checkIn", domain::format_date(stay->check_in)},
                        {"checkOut", domain::format_date(stay->check_out)},
                        {"qty", stay->qty},
                        {"status", "HELD"},
                        {"reservationId", stay->reservation_id},
                        {"userId", stay->user_id}};
  ctx.state.put(booking_key(saga), booking.dump());
  return HandlerResult::success({{"holdId", saga}});
}

HandlerResult release(CommandContext& ctx, const Options& options) {
  const std::string saga = domain::booking_id_of(ctx);
  INV_TRY_ASSIGN(auto booking, load(ctx.state, booking_key(saga)));
  if (!booking) return HandlerResult::success({{"released", false}});  // nothing held

  const std::string place_id = booking->value("placeId", "");
  const std::string status = booking->value("status", "");
  const int64_t qty = booking->value("qty", int64_t{0});
  INV_TRY_ASSIGN(Span span, span_of(*booking));
  INV_TRY_ASSIGN(auto place, load(ctx.state, place_key(place_id)));
  const int64_t rooms = place ? place->value("rooms", int64_t{0}) : 0;

  int64_t stock = 0;
  for (Date d = span.first; d != span.last_exclusive; d = domain::next_day(d)) {
    INV_TRY_ASSIGN(auto stored, load(ctx.state, night_key(place_id, d)));
    Night n = night_of(stored);
    if (status == "CONFIRMED") {
      n.confirmed = std::max<int64_t>(0, n.confirmed - qty);
    } else {
      n.held = std::max<int64_t>(0, n.held - qty);
    }
    ctx.state.put(night_key(place_id, d), n.to_json().dump());
    if (d == span.first) stock = rooms - n.used();
  }
  if (status == "CONFIRMED") {
    ctx.state.del(owner_prefix(booking->value("ownerId", "")) + saga);
  }
  ctx.state.del(booking_key(saga));

  const std::string reservation_id = booking->value("reservationId", "");
  ctx.state.emit(event("ReservationCancelConfirmed", reservation_id,
                       {{"placeId", place_id}, {"orderId", reservation_id}, {"stock", stock}},
                       options.now_ms()));
  return HandlerResult::success({{"released", true}});
}

HandlerResult confirm(CommandContext& ctx, const Options& options) {
  const std::string& saga = ctx.command.saga_id;
  INV_TRY_ASSIGN(auto booking, load(ctx.state, booking_key(saga)));
  if (!booking) return HandlerResult::failure("no hold");
  const std::string status = booking->value("status", "");
  if (status == "CONFIRMED") return HandlerResult::success({{"confirmed", true}});
  if (status != "HELD") return HandlerResult::failure("no hold");

  const std::string place_id = booking->value("placeId", "");
  const int64_t qty = booking->value("qty", int64_t{0});
  INV_TRY_ASSIGN(Span span, span_of(*booking));
  INV_TRY_ASSIGN(auto place, load(ctx.state, place_key(place_id)));
  if (!place) return HandlerResult::failure("unknown place " + place_id);
  const int64_t rooms = place->value("rooms", int64_t{0});
  const std::string owner = place->value("ownerId", "");

  int64_t stock = 0;
  for (Date d = span.first; d != span.last_exclusive; d = domain::next_day(d)) {
    INV_TRY_ASSIGN(auto stored, load(ctx.state, night_key(place_id, d)));
    Night n = night_of(stored);
    n.held = std::max<int64_t>(0, n.held - qty);
    n.confirmed += qty;
    ctx.state.put(night_key(place_id, d), n.to_json().dump());
    if (d == span.first) stock = rooms - n.used();
  }
  (*booking)["status"] = "CONFIRMED";
  (*booking)["ownerId"] = owner;
  ctx.state.put(booking_key(saga), booking->dump());
  const std::string reservation_id = booking->value("reservationId", "");
  ctx.state.put(owner_prefix(owner) + saga, Json{{"reservationId", reservation_id}}.dump());
  ctx.state.emit(event("ReservationConfirmed", reservation_id,
                       {{"placeId", place_id}, {"orderId", reservation_id}, {"stock", stock}},
                       options.now_ms()));
  return HandlerResult::success({{"confirmed", true}});
}

// The seed's stock step: hold and confirm in one go. No availability is an
// answer, not an error: the reply says {allocated: false, reason} and the
// event ReservationCancelConfirmed tells the stream, as in the seed.
HandlerResult allocate(CommandContext& ctx, const Options& options) {
  HandlerResult held = reserve(ctx);
  if (held.outcome == ReplyOutcome::kFailure && held.error.rfind("no availability", 0) == 0) {
    auto stay = parse_stay(ctx.payload);
    const std::string reservation_id = stay.ok() ? stay->reservation_id : "";
    ctx.state.emit(event("ReservationCancelConfirmed", reservation_id,
                         {{"placeId", stay.ok() ? stay->place_id : ""},
                          {"orderId", reservation_id},
                          {"stock", nullptr},
                          {"reason", held.error}},
                         options.now_ms()));
    return HandlerResult::success({{"allocated", false}, {"reason", held.error}});
  }
  if (held.outcome != ReplyOutcome::kSuccess) return held;
  HandlerResult confirmed = confirm(ctx, options);
  if (confirmed.outcome != ReplyOutcome::kSuccess) return confirmed;
  return HandlerResult::success({{"allocated", true}, {"holdId", ctx.command.saga_id}});
}

// ---- HTTP ------------------------------------------------------------------

Response bad_request(const Status& s) { return Response::from_status(s); }

// The most rooms held+confirmed on any night of `place_id` (committed state),
// and that night.
StatusOr<std::pair<int64_t, std::string>> peak_use(const Participant& p,
                                                   const std::string& place_id) {
  int64_t peak = 0;
  std::string night;
  Status err;
  const std::string prefix = night_prefix(place_id);
  SAGA_RETURN_IF_ERROR(p.scan(prefix, [&](std::string_view k, std::string_view v) {
    const Json j = parse_json(v).value_or(Json());
    if (!j.is_object()) return true;
    const Night n = night_of(j);
    if (n.used() > peak) {
      peak = n.used();
      night = std::string(k.substr(prefix.size()));
    }
    return true;
  }));
  return std::pair{peak, night};
}

// Sets the rooms of `place_id` in `txn`, creating the place with `create`
// when it is missing (NotFound when `create` is empty). FailedPrecondition
// when fewer rooms than are in use on some night.
StatusOr<Json> set_rooms(const Participant& p, StateTxn& txn, const std::string& place_id,
                         int64_t rooms, const std::optional<Json>& create) {
  SAGA_ASSIGN_OR_RETURN(auto place, load(txn, place_key(place_id)));
  if (!place) {
    if (!create) return Status::not_found("place " + place_id + " not found");
    place = *create;
  } else {
    SAGA_ASSIGN_OR_RETURN(auto peak, peak_use(p, place_id));
    if (rooms < peak.first)
      return Status::failed_precondition("cannot set rooms to " + std::to_string(rooms) + ": " +
                                         std::to_string(peak.first) +
                                         " rooms are held or confirmed on " + peak.second);
  }
  (*place)["rooms"] = rooms;
  txn.put(place_key(place_id), place->dump());
  return *place;
}

}  // namespace

StatusOr<std::string> shard_key(std::string_view key, std::string_view value,
                                const ReshardSource& source) {
  // Every command is keyed by place id (services/reservation: reserve,
  // confirm, allocate and release), and the routes write a place in its own
  // shard; ids hold no '/' (domain::id_field).
  const auto rest = [&](std::string_view prefix) { return key.substr(prefix.size()); };
  const auto place_of_booking = [](std::string_view record,
                                   std::string_view what) -> StatusOr<std::string> {
    const Json b = Json::parse(record, nullptr, false);
    if (!b.is_object() || !b.contains("placeId") || !b["placeId"].is_string() ||
        b["placeId"].get_ref<const std::string&>().empty())
      return Status::data_loss(std::string(what) + " has no placeId");
    return b["placeId"].get<std::string>();
  };
  if (key.starts_with("place/") && key.size() > 6) return std::string(rest("place/"));
  if (key.starts_with("night/")) {
    const size_t slash = key.rfind('/');
    if (slash > 6) return std::string(key.substr(6, slash - 6));
  }
  if (key.starts_with("booking/")) return place_of_booking(value, "booking record");
  if (key.starts_with("owner/")) {
    // owner/<owner>/<saga>: the booking of that saga names the place.
    const size_t slash = key.rfind('/');
    if (slash > 6 && slash + 1 < key.size()) {
      const std::string booking = booking_key(key.substr(slash + 1));
      SAGA_ASSIGN_OR_RETURN(auto record, source.get(booking));
      if (!record)
        return Status::failed_precondition("its booking record " + booking + " is missing");
      return place_of_booking(*record, booking);
    }
  }
  return Status::invalid_argument("not a key the inventory writes");
}

Status register_handlers(Participant& p, Options options) {
  if (!options.now_ms) options.now_ms = domain::now_ms;
  SAGA_RETURN_IF_ERROR(p.on("reserve", guarded(reserve)));
  SAGA_RETURN_IF_ERROR(
      p.on("release", guarded([options](CommandContext& c) { return release(c, options); })));
  SAGA_RETURN_IF_ERROR(
      p.on("confirm", guarded([options](CommandContext& c) { return confirm(c, options); })));
  SAGA_RETURN_IF_ERROR(
      p.on("allocate", guarded([options](CommandContext& c) { return allocate(c, options); })));
  return ok_status();
}

namespace {

// Writes `change` to place `id` unless the place exists and belongs to
// someone `who` may not act for: then a 403 (places are public, so saying so
// leaks nothing). The ownership check and the change are one write.
Response write_own_place(Participant& p, const Identity& who, const std::string& id,
                         const std::function<StatusOr<Json>(StateTxn&)>& change) {
  bool denied = false;
  Json result;
  Status s = p.write(id, [&](StateTxn& txn) -> Status {
    SAGA_ASSIGN_OR_RETURN(auto place, load(txn, place_key(id)));
    if (place && !who.may_act_as(place->value("ownerId", ""))) {
      denied = true;
      return Status::aborted("not the owner");
    }
    SAGA_ASSIGN_OR_RETURN(result, change(txn));
    return ok_status();
  });
  if (denied) return service::forbidden("place " + id + " belongs to another owner");
  if (!s.ok()) return Response::from_status(s);
  return Response::json(200, result);
}

// The roles that manage places.
const std::vector<std::string>& owner_roles() {
  static const std::vector<std::string> roles = {service::kRoleOwner};
  return roles;
}

// The confirmed bookings of `owner`'s places driven here, after saga id
// `token`, at most `limit` of them, by saga id; `more` when more follow.
struct GuestListPart {
  Json items = Json::array();
  bool more = false;
};
StatusOr<GuestListPart> guest_list_part(const Participant& p, const std::string& owner,
                                        const std::string& token, size_t limit) {
  const std::string prefix = owner_prefix(owner);
  std::vector<std::string> sagas;  // in key order: by saga id
  SAGA_RETURN_IF_ERROR(p.scan(prefix, [&](std::string_view k, std::string_view) {
    std::string saga(k.substr(prefix.size()));
    if (token.empty() || saga > token) sagas.push_back(std::move(saga));
    return true;
  }));
  GuestListPart part;
  for (const std::string& saga : sagas) {
    SAGA_ASSIGN_OR_RETURN(auto booking, load(p, booking_key(saga)));
    if (!booking || booking->value("status", "") != "CONFIRMED") continue;
    // A replica's copy of a shard it does not drive may be behind: its owner answers.
    if (p.owner_of(booking->value("placeId", "")).where != ShardOwner::Where::kHere) continue;
    if (part.items.size() == limit) {
      part.more = true;
      break;
    }
    Json b = *booking;
    b["sagaId"] = saga;
    part.items.push_back(std::move(b));
  }
  return part;
}

}  // namespace

void add_routes(service::Router& router, Participant& p) {
  router.post(
      "/places", service::with_role_json(owner_roles(), [&p](const Request& req, const Identity& who,
                                                             const Json& body) {
        if (!body.is_object())
          return bad_request(Status::invalid_argument("body must be an object"));
        auto name = domain::string_field(body, "name");
        if (!name.ok()) return bad_request(name.status());
        // An owner creates places as itself; ownerId may be left out.
        auto owner = body.contains("ownerId") ? domain::id_field(body, "ownerId")
                                              : StatusOr<std::string>(who.subject);
        if (!owner.ok()) return bad_request(owner.status());
        if (!who.may_act_as(*owner))
          return service::forbidden(
              "ownerId must be your own user id: you create places as yourself");
        auto rooms = domain::int_field(body, "rooms", 0, kMaxRooms);
        if (!rooms.ok()) return bad_request(rooms.status());
        // A new place goes to a shard this replica drives, when it drives one
        // (else to the owner of a random one, which picks its own).
        std::string id = domain::new_id("p-");
        for (int tries = 0; tries < 64 * static_cast<int>(p.shards()) &&
                            p.owner_of(id).where != ShardOwner::Where::kHere;
             ++tries)
          id = domain::new_id("p-");
        if (const ShardOwner where = p.owner_of(id); where.where != ShardOwner::Where::kHere)
          return service::send_to_owner(req, where);
        Json place = {{"id", id}, {"name", *name}, {"ownerId", *owner}, {"rooms", *rooms}};
        if (body.contains("price")) {
          auto price = domain::price_field(body, "price");
          if (!price.ok()) return bad_request(price.status());
          place["price"] = price->to_json();
        }
        Status s = p.write(id, [&](StateTxn& txn) {
          txn.put(place_key(id), place.dump());
          return ok_status();
        });
        if (!s.ok()) return Response::from_status(s);
        Response r = Response::json(201, place);
        r.set_header("Location", "/places/" + id);
        return r;
      }));

  router.get("/places/{id}", [&p](const Request& req) {
    const std::string id(req.param("id"));
    if (!domain::check_id(id, "id").ok())
      return Response::from_status(Status::not_found("place " + id + " not found"));
    if (const ShardOwner owner = p.owner_of(id); owner.where != ShardOwner::Where::kHere)
      return service::send_to_owner(req, owner);
    auto place = load(p, place_key(id));
    if (!place.ok()) return Response::from_status(place.status());
    if (!*place) return Response::from_status(Status::not_found("place " + id + " not found"));
    return Response::json(200, **place);
  });

  router.put("/places/{id}/rooms",
             service::with_role_json(
                 owner_roles(), [&p](const Request& req, const Identity& who, const Json& body) {
                   const std::string id(req.param("id"));
                   if (!domain::check_id(id, "id").ok())
                     return Response::from_status(Status::not_found("place " + id + " not found"));
                   if (const ShardOwner owner = p.owner_of(id);
                       owner.where != ShardOwner::Where::kHere)
                     return service::send_to_owner(req, owner);
                   auto rooms = domain::int_field(body, "rooms", 0, kMaxRooms);
                   if (!rooms.ok()) return bad_request(rooms.status());
                   return write_own_place(p, who, id, [&](StateTxn& txn) {
                     return set_rooms(p, txn, id, *rooms, std::nullopt);
                   });
                 }));

  // The nightly price (per room) of a place: its owner's (or an admin's) to set.
  router.put("/places/{id}/price",
             service::with_role_json(
                 owner_roles(), [&p](const Request& req, const Identity& who, const Json& body) {
                   const std::string id(req.param("id"));
                   if (!domain::check_id(id, "id").ok())
                     return Response::from_status(Status::not_found("place " + id + " not found"));
                   if (const ShardOwner owner = p.owner_of(id);
                       owner.where != ShardOwner::Where::kHere)
                     return service::send_to_owner(req, owner);
                   auto price = domain::price_field(body, "");
                   if (!price.ok()) return bad_request(price.status());
                   return write_own_place(p, who, id, [&](StateTxn& txn) -> StatusOr<Json> {
                     SAGA_ASSIGN_OR_RETURN(auto place, load(txn, place_key(id)));
                     if (!place) return Status::not_found("place " + id + " not found");
                     (*place)["price"] = price->to_json();
                     txn.put(place_key(id), place->dump());
                     return *place;
                   });
                 }));

  router.get("/places/{id}/availability", [&p](const Request& req) {
    const std::string id(req.param("id"));
    const auto from_text = req.query("from");
    const auto to_text = req.query("to");
    if (!from_text || !to_text)
      return bad_request(Status::invalid_argument("query parameters 'from' and 'to' are required"));
    auto from = domain::parse_date(*from_text, "from");
    if (!from.ok()) return bad_request(from.status());
    auto to = domain::parse_date(*to_text, "to");
    if (!to.ok()) return bad_request(to.status());
    const long nights = domain::days_between(*from, *to);
    if (nights <= 0) return bad_request(Status::invalid_argument("'to' must be after 'from'"));
    if (nights > kMaxNights)
      return bad_request(
          Status::invalid_argument("at most " + std::to_string(kMaxNights) + " nights per query"));
    if (!domain::check_id(id, "id").ok())
      return Response::from_status(Status::not_found("place " + id + " not found"));
    if (const ShardOwner owner = p.owner_of(id); owner.where != ShardOwner::Where::kHere)
      return service::send_to_owner(req, owner);
    auto place = load(p, place_key(id));
    if (!place.ok()) return Response::from_status(place.status());
    if (!*place) return Response::from_status(Status::not_found("place " + id + " not found"));
    const int64_t rooms = (*place)->value("rooms", int64_t{0});
    Json out = Json::array();
    for (Date d = *from; d != *to; d = domain::next_day(d)) {
      auto stored = load(p, night_key(id, d));
      if (!stored.ok()) return Response::from_status(stored.status());
      const Night n = night_of(*stored);
      out.push_back({{"date", domain::format_date(d)},
                     {"rooms", rooms},
                     {"held", n.held},
                     {"confirmed", n.confirmed},
                     {"free", std::max<int64_t>(0, rooms - n.used())}});
    }
    return Response::json(200, out);
  });

  // An owner's guest list: the owner itself, or an admin.
  router.get("/owners/{ownerId}/reservations",
             service::with_role(owner_roles(), [&p](const Request& req, const Identity& who) {
               const std::string owner(req.param("ownerId"));
               if (!who.may_act_as(owner))
                 return service::forbidden("you may only read your own guest list");
               auto page = domain::page_request(req);
               if (!page.ok()) return bad_request(page.status());
               if (!domain::check_id(owner, "ownerId").ok())
                 return Response::json(200, Json::array());
               // With replicas, each drives some places: the list is the parts
               // of every replica (asked once each), merged by saga id.
               std::set<std::string> others;
               if (!req.header(service::kForwardedHeader)) {
                 for (const ShardOwner& o : p.owners()) {
                   if (o.where == ShardOwner::Where::kElsewhere) others.insert(o.address);
                   if (o.where == ShardOwner::Where::kUnknown)
                     return service::send_to_owner(req, o);  // 503: a shard is moving
                 }
               }
               auto part = guest_list_part(p, owner, page->token, page->limit);
               if (!part.ok()) return Response::from_status(part.status());
               Json items = std::move(part->items);
               bool more = part->more;
               for (const std::string& address : others) {
                 Response r = service::send_to_owner(
                     req, ShardOwner{ShardOwner::Where::kElsewhere, 0, address});
                 if (r.status() != 200) return r;
                 auto body = parse_json(r.body());
                 if (!body.ok() || !body->is_array())
                   return Response::from_status(Status::internal(
                       "the replica at " + address + " sent a guest list that is not an array"));
                 for (Json& b : *body) items.push_back(std::move(b));
                 more = more || r.header(domain::kNextPageTokenHeader).has_value();
               }
               std::sort(items.begin(), items.end(), [](const Json& a, const Json& b) {
                 return a.value("sagaId", "") < b.value("sagaId", "");
               });
               std::string next;
               if (items.size() > page->limit) {
                 items.erase(items.begin() + static_cast<long>(page->limit), items.end());
                 more = true;
               }
               if (more && !items.empty()) next = items.back().value("sagaId", "");
               Response r = Response::json(200, items);
               domain::set_next_page_token(r, next);
               return r;
             }));

  // The seed's call: sets the stock (rooms per night) of a place, creating it
  // as the caller's (an admin's as the seed's "owner-<placeId>"); an existing
  // place only by its owner.
  router.post(
      "/reservationManagements",
      service::with_role_json(
          owner_roles(), [&p](const Request& req, const Identity& who, const Json& json) {
            Json body = json;
            if (body.is_object() && body.contains("stock"))
              body["stock"] = domain::number_from_text(body["stock"]);  // httpie sends "1"
            auto id = domain::id_field(body, "placeId");
            if (!id.ok()) return bad_request(id.status());
            if (const ShardOwner owner = p.owner_of(*id); owner.where != ShardOwner::Where::kHere)
              return service::send_to_owner(req, owner);
            auto stock = domain::int_field(body, "stock", 0, kMaxRooms);
            if (!stock.ok()) return bad_request(stock.status());
            const std::string owner = who.is_admin() ? "owner-" + *id : who.subject;
            const Json create = {
                {"id", *id},
                {"name", "place-" + *id},
                {"ownerId", owner},
                {"rooms", *stock},
                {"price", domain::Money{kSeedPriceAmount, kSeedPriceCurrency}.to_json()}};
            Response written = write_own_place(
                p, who, *id, [&](StateTxn& txn) { return set_rooms(p, txn, *id, *stock, create); });
            if (written.status() != 200) return written;
            Response r = Response::json(201, {{"placeId", body.at("placeId")}, {"stock", *stock}});
            r.set_header("Location", "/places/" + *id);
            return r;
          }));

  domain::add_participant_standard_routes(router, p, kParticipantName);
}

}  // namespace saga::inventory
