#include "saga/payment/payment.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "domain/fields.h"
#include "domain/paging.h"
#include "domain/participant_service.h"
#include "domain/state.h"
#include "saga/service/config.h"
#include "saga/service/identity.h"
#include "saga/service/routing.h"
#include "saga/service/standard_routes.h"

namespace saga::payment {
namespace {

using service::Request;
using service::Response;

std::string payment_key(std::string_view saga) { return "payment/" + std::string(saga); }
std::string byres_prefix(std::string_view reservation) {
  return "byres/" + std::string(reservation) + "/";
}
constexpr std::string_view kPayPrefix = "pay-";

using domain::load;

Message event(const std::string& type, const std::string& reservation_id, Json payload,
              int64_t now) {
  return domain::domain_event(kEventDestination, type, reservation_id, std::move(payload), now);
}

HandlerResult charge(CommandContext& ctx, const Options& o) {
  const std::string& saga = ctx.command.saga_id;
  if (saga.empty()) return HandlerResult::failure("charge command without a saga id");
  auto reservation = domain::id_field(ctx.payload, "reservationId");
  if (!reservation.ok()) return HandlerResult::failure(reservation.status().message());
  auto user = domain::id_field(ctx.payload, "userId");
  if (!user.ok()) return HandlerResult::failure(user.status().message());
  // Integer minor units only: a float amount (even 5.0) is refused.
  auto amount = domain::money_field(ctx.payload, "amount");
  if (!amount.ok()) return HandlerResult::failure(amount.status().message());
  std::string currency;
  if (ctx.payload.contains("currency")) {
    auto c = domain::string_field(ctx.payload, "currency");
    if (!c.ok()) return HandlerResult::failure(c.status().message());
    currency = *c;
  }

  auto existing = load(ctx.state, payment_key(saga));
  if (!existing.ok()) return HandlerResult::retry(existing.status().message());
  if (*existing) {
    if ((**existing).value("status", "") == "APPROVED")
      return HandlerResult::success({{"paymentId", (**existing).value("id", "")}});
    return HandlerResult::failure("payment already refunded");
  }

  // The simulated provider call.
  if (o.config.latency.count() > 0) std::this_thread::sleep_for(o.config.latency);
  if (o.config.failure_rate > 0 && o.chance() < o.config.failure_rate)
    return HandlerResult::retry("payment provider unavailable");
  if (o.config.decline_rate > 0 && o.chance() < o.config.decline_rate)
    return HandlerResult::failure("card declined");

  const std::string pay_id = std::string(kPayPrefix) + saga;
  Json record = {{"id", pay_id},      {"reservationId", *reservation}, {"userId", *user},
                 {"amount", *amount}, {"status", "APPROVED"},          {"sagaId", saga}};
  if (!currency.empty()) record["currency"] = currency;
  ctx.state.put(payment_key(saga), record.dump());
  ctx.state.put(byres_prefix(*reservation) + pay_id, "{}");
  Json approved = {{"payId", pay_id},
                   {"orderId", *reservation},
                   {"usrId", *user},
                   {"status", "APPROVED"},
                   {"amount", *amount}};
  if (!currency.empty()) approved["currency"] = currency;
  ctx.state.emit(event("PaymentApproved", *reservation, std::move(approved), o.now_ms()));
  return HandlerResult::success({{"paymentId", pay_id}});
}

HandlerResult refund(CommandContext& ctx, const Options& o) {
  const std::string saga = domain::booking_id_of(ctx);
  auto existing = load(ctx.state, payment_key(saga));
  if (!existing.ok()) return HandlerResult::retry(existing.status().message());
  if (!*existing) return HandlerResult::success({{"refunded", false}});  // nothing charged
  Json record = **existing;
  if (record.value("status", "") == "REFUNDED") return HandlerResult::success({{"refunded", true}});
  // A cancellation's refund may be a part of the charge (the reservation's
  // cancellation policy); a compensation's is all of it.
  const int64_t charged = record.value("amount", int64_t{0});
  int64_t amount = charged;
  if (ctx.payload.contains("amount")) {
    auto asked = domain::money_field(ctx.payload, "amount");
    if (!asked.ok()) return HandlerResult::failure(asked.status().message());
    if (*asked > charged)
      return HandlerResult::failure("refund of " + std::to_string(*asked) +
                                    " exceeds the charge of " + std::to_string(charged));
    amount = *asked;
  }
  record["status"] = "REFUNDED";
  record["refundedAmount"] = amount;
  ctx.state.put(payment_key(saga), record.dump());
  const std::string reservation = record.value("reservationId", "");
  ctx.state.emit(event("PaymentCancelApproved", reservation,
                       {{"payId", record.value("id", "")},
                        {"orderId", reservation},
                        {"status", "REFUNDED"},
                        {"amount", amount}},
                       o.now_ms()));
  return HandlerResult::success({{"refunded", true}, {"amount", amount}});
}

template <class Fn>
CommandHandler guarded(Fn fn) {
  return [fn = std::move(fn)](CommandContext& ctx) -> HandlerResult {
    try {
      return fn(ctx);
    } catch (const std::exception& e) {
      return HandlerResult::retry(std::string("payment error: ") + e.what());
    }
  };
}

Json public_view(Json record) {
  record.erase("sagaId");
  return record;
}

}  // namespace

StatusOr<double> parse_rate(std::string_view name, std::string_view text) {
  auto bad = [&] {
    return Status::invalid_argument(std::string(name) + " must be a number in 0..1, got '" +
                                    std::string(text) + "'");
  };
  const std::string s(text);
  if (s.empty()) return bad();
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end != s.c_str() + s.size() || !std::isfinite(v) || v < 0 || v > 1)
    return bad();
  return v;
}

StatusOr<Config> Config::from_env() {
  Config c;
  SAGA_ASSIGN_OR_RETURN(int64_t latency, service::env_int("PAYMENT_LATENCY_MS", 0, 0, 60'000));
  c.latency = std::chrono::milliseconds(latency);
  const std::string decline = service::env_string("PAYMENT_DECLINE_RATE", "0");
  SAGA_ASSIGN_OR_RETURN(c.decline_rate, parse_rate("PAYMENT_DECLINE_RATE", decline));
  const std::string failure = service::env_string("PAYMENT_FAILURE_RATE", "0");
  SAGA_ASSIGN_OR_RETURN(c.failure_rate, parse_rate("PAYMENT_FAILURE_RATE", failure));
  return c;
}

StatusOr<std::string> shard_key(std::string_view key, std::string_view,
                                const ReshardSource&) {
  // charge and its refund are keyed by the booking's saga id (the step's
  // default key), the cancellation's refund by the booking id, which is that
  // saga id: payment/<saga> and byres/<reservation>/pay-<saga> are both of it.
  if (key.starts_with("payment/") && key.size() > 8) return std::string(key.substr(8));
  if (key.starts_with("byres/")) {
    const size_t slash = key.find('/', 6);  // reservation ids hold no '/'
    if (slash != std::string_view::npos && slash > 6 &&
        key.substr(slash + 1).starts_with(kPayPrefix) &&
        slash + 1 + kPayPrefix.size() < key.size())
      return std::string(key.substr(slash + 1 + kPayPrefix.size()));
  }
  return Status::invalid_argument("not a key the payment service writes");
}

Status register_handlers(Participant& p, Options options) {
  for (auto [name, rate] : {std::pair{"decline_rate", options.config.decline_rate},
                            std::pair{"failure_rate", options.config.failure_rate}}) {
    if (!(rate >= 0 && rate <= 1))
      return Status::invalid_argument(std::string(name) + " must be in 0..1, got " +
                                      std::to_string(rate));
  }
  if (options.config.latency.count() < 0)
    return Status::invalid_argument("latency must not be negative");
  if (!options.now_ms) options.now_ms = domain::now_ms;
  if (!options.chance) {
    auto rng = std::make_shared<std::mt19937_64>(std::random_device{}());
    auto mu = std::make_shared<std::mutex>();
    options.chance = [rng, mu] {
      std::lock_guard lock(*mu);
      return std::uniform_real_distribution<double>(0.0, 1.0)(*rng);
    };
  }
  SAGA_RETURN_IF_ERROR(
      p.on("charge", guarded([options](CommandContext& c) { return charge(c, options); })));
  SAGA_RETURN_IF_ERROR(
      p.on("refund", guarded([options](CommandContext& c) { return refund(c, options); })));
  return ok_status();
}

void add_routes(service::Router& router, Participant& p) {
  // A payment is its customer's (or an admin's) to see; anyone else's is 404.
  router.get(
      "/payments/{id}",
      service::authenticated([&p](const Request& req, const service::Identity& who) {
        const std::string id(req.param("id"));
        auto not_found = [&] {
          return Response::from_status(Status::not_found("payment " + id + " not found"));
        };
        if (id.size() <= kPayPrefix.size() || id.compare(0, kPayPrefix.size(), kPayPrefix) != 0)
          return not_found();
        const std::string saga = id.substr(kPayPrefix.size());  // the command key
        const ShardOwner owner = p.owner_of(saga);
        if (owner.where != ShardOwner::Where::kHere) return service::send_to_owner(req, owner);
        auto record = load(p, payment_key(saga));
        if (!record.ok()) return Response::from_status(record.status());
        if (!*record || !who.may_act_as((*record)->value("userId", ""))) return not_found();
        return Response::json(200, public_view(**record));
      }));

  router.get("/payments",
             service::authenticated([&p](const Request& req, const service::Identity& who) {
               const auto reservation = req.query("reservationId");
               if (!reservation || reservation->empty())
                 return Response::from_status(
                     Status::invalid_argument("query parameter 'reservationId' is required"));
               if (auto s = domain::check_id(*reservation, "reservationId"); !s.ok())
                 return Response::from_status(s);
               // A reservation's payments are all keyed by it (the refund of
               // its cancellation too): one shard.
               const ShardOwner owner = p.owner_of(*reservation);
               if (owner.where != ShardOwner::Where::kHere)
                 return service::send_to_owner(req, owner);
               auto page = domain::page_request(req);
               if (!page.ok()) return Response::from_status(page.status());
               // Payment ids in key order after the token; one more to know if more follow.
               const std::string prefix = byres_prefix(*reservation);
               std::vector<std::string> ids;
               Status s = p.scan(prefix, [&](std::string_view k, std::string_view) {
                 std::string id(k.substr(prefix.size()));
                 if (!page->token.empty() && id <= page->token) return true;
                 ids.push_back(std::move(id));
                 return ids.size() <= page->limit;
               });
               if (!s.ok()) return Response::from_status(s);
               std::string next;
               if (ids.size() > page->limit) {
                 ids.resize(page->limit);
                 next = ids.back();
               }
               Json out = Json::array();
               for (const auto& pay_id : ids) {
                 if (pay_id.size() <= kPayPrefix.size()) continue;
                 auto record = load(p, payment_key(pay_id.substr(kPayPrefix.size())));
                 if (!record.ok()) return Response::from_status(record.status());
                 if (*record && who.may_act_as((*record)->value("userId", "")))
                   out.push_back(public_view(**record));
               }
               Response r = Response::json(200, out);
               domain::set_next_page_token(r, next);
               return r;
             }));

  domain::add_participant_standard_routes(router, p, kParticipantName);
}

}  // namespace saga::payment
