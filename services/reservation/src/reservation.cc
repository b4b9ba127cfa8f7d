#include "saga/reservation/reservation.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "domain/dates.h"
#include "domain/fields.h"
#include "saga/message.h"
#include "saga/service/http_message.h"
#include "saga/service/standard_routes.h"

namespace saga::reservation {
namespace {

using service::Request;
using service::Response;

std::function<int64_t()> clock_of(const Options& o) {
  return o.now_ms ? o.now_ms : std::function<int64_t()>([] { return domain::now_ms(); });
}

std::string str(const Json& data, const char* name) {
  auto it = data.find(name);
  return it != data.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Json event_payload(const std::string& type, int64_t ts, const Json& d, const std::string& status) {
  return {{"eventType", type},
          {"timestamp", ts},
          {"orderId", str(d, "reservationId")},
          {"placeId", str(d, "placeId")},
          {"usrId", str(d, "userId")},
          {"strDt", str(d, "checkIn")},
          {"endDt", str(d, "checkOut")},
          {"qty", d.value("qty", int64_t{0})},
          {"amount", d.value("amount", 0.0)},
          {"status", status}};
}

Response bad_request(const Status& s) { return Response::problem(400, "Bad Request", s.message()); }

}  // namespace

StatusOr<DefinitionPtr> booking_definition(Options options) {
  auto now = clock_of(options);
  const RetryPolicy step_retry{5, Duration{200}, 2.0, Duration{5'000}, 0.2};
  const RetryPolicy comp_retry{0, Duration{200}, 2.0, Duration{10'000}, 0.2};
  const Duration timeout{10'000};
  auto empty = [](const Json&) { return Json::object(); };
  return DefinitionBuilder(kSagaType, kSagaVersion)
      .command("reserve", kInventory, "reserve")
      .payload([](const Json& d) {
        return Json{{"reservationId", d.at("reservationId")},
                    {"placeId", d.at("placeId")},
                    {"userId", d.at("userId")},
                    {"checkIn", d.at("checkIn")},
                    {"checkOut", d.at("checkOut")},
                    {"qty", d.at("qty")}};
      })
      .on_reply([](Json& d, const Json& r) {
        if (r.is_object() && r.contains("holdId")) d["holdId"] = r["holdId"];
      })
      .compensate(kInventory, "release", empty)
      .timeout(timeout)
      .retry(step_retry)
      .compensation_retry(comp_retry)
      .command("pay", kPayment, "charge")
      .payload([](const Json& d) {
        return Json{{"reservationId", d.at("reservationId")},
                    {"userId", d.at("userId")},
                    {"amount", d.at("amount")}};
      })
      .on_reply([](Json& d, const Json& r) {
        if (r.is_object() && r.contains("paymentId")) d["paymentId"] = r["paymentId"];
      })
      .compensate(kPayment, "refund", empty)
      .timeout(timeout)
      .retry(step_retry)
      .compensation_retry(comp_retry)
      .command("confirm", kInventory, "confirm")
      .payload(empty)
      .timeout(timeout)
      .retry(step_retry)
      .on_state_change([now](const SagaView& saga, std::optional<SagaState> previous) {
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
        Message m;
        m.kind = MessageKind::kEvent;
        m.type = type;
        m.destination = kEventDestination;
        m.key = saga.id;
        m.saga_id = saga.id;
        m.payload = event_payload(type, now(), saga.data, status).dump();
        out.push_back(std::move(m));
        return out;
      })
      .build();
}

std::string reservation_status(const SagaView& saga) {
  switch (saga.state) {
    case SagaState::kRunning:
    case SagaState::kCompensating:
      return "PENDING";
    case SagaState::kCompleted:
      return "CONFIRMED";
    case SagaState::kCompensated:
      return saga.cancel_requested ? "CANCELLED" : "REJECTED";
    case SagaState::kFailed:
      return "NEEDS_ATTENTION";
    case SagaState::kAborted:
      return "ABORTED";
  }
  return "UNKNOWN";
}

Json reservation_json(const SagaView& saga) {
  const Json& d = saga.data;
  const std::string status = reservation_status(saga);
  Json out = {{"id", saga.id},
              {"placeId", str(d, "placeId")},
              {"userId", str(d, "userId")},
              {"checkIn", str(d, "checkIn")},
              {"checkOut", str(d, "checkOut")},
              {"qty", d.value("qty", int64_t{0})},
              {"amount", d.value("amount", 0.0)},
              {"status", status},
              {"createdMs", d.value("createdMs", saga.created_ms)}};
  if ((status == "REJECTED" || status == "NEEDS_ATTENTION") && !saga.last_error.empty())
    out["reason"] = saga.last_error;
  Json steps = Json::array();
  for (const StepView& s : saga.steps)
    steps.push_back({{"name", s.name}, {"status", std::string(to_string(s.status))}});
  out["steps"] = std::move(steps);
  return out;
}

void add_routes(service::Router& router, Orchestrator& orch, Options options) {
  auto now = clock_of(options);

  router.post("/reservations", [&orch, now](const Request& req) {
    if (!req.has_json_content_type())
      return Response::problem(415, "Unsupported Media Type", "the body must be application/json");
    auto body = req.json();
    if (!body.ok()) return bad_request(body.status());
    if (!body->is_object()) return bad_request(Status::invalid_argument("body must be an object"));
    auto place = domain::id_field(*body, "placeId");
    if (!place.ok()) return bad_request(place.status());
    auto user = domain::id_field(*body, "userId");
    if (!user.ok()) return bad_request(user.status());
    if (!body->contains("checkIn") || !(*body)["checkIn"].is_string())
      return bad_request(Status::invalid_argument("checkIn must be a date YYYY-MM-DD"));
    if (!body->contains("checkOut") || !(*body)["checkOut"].is_string())
      return bad_request(Status::invalid_argument("checkOut must be a date YYYY-MM-DD"));
    auto in = domain::parse_date((*body)["checkIn"].get<std::string>(), "checkIn");
    if (!in.ok()) return bad_request(in.status());
    auto out = domain::parse_date((*body)["checkOut"].get<std::string>(), "checkOut");
    if (!out.ok()) return bad_request(out.status());
    const long nights = domain::days_between(*in, *out);
    if (nights <= 0) return bad_request(Status::invalid_argument("checkOut must be after checkIn"));
    if (nights > kMaxNights)
      return bad_request(Status::invalid_argument("at most " + std::to_string(kMaxNights) +
                                                  " nights per reservation"));
    auto qty = domain::int_field(*body, "qty", 1, 1'000'000);
    if (!qty.ok()) return bad_request(qty.status());
    auto amount = domain::number_field(*body, "amount", 0);
    if (!amount.ok()) return bad_request(amount.status());

    const std::string id = "r-" + domain::random_hex(12);
    Json data = {{"reservationId", id},
                 {"placeId", *place},
                 {"userId", *user},
                 {"checkIn", domain::format_date(*in)},
                 {"checkOut", domain::format_date(*out)},
                 {"qty", *qty},
                 {"amount", *amount},
                 {"createdMs", now()}};
    StartOptions so;
    so.id = id;
    so.traceparent = req.traceparent();
    auto started = orch.start(kSagaType, std::move(data), so);
    if (!started.ok()) return Response::from_status(started.status());
    Response r = Response::json(202, {{"id", *started}, {"status", "PENDING"}});
    r.set_header("Location", "/reservations/" + *started);
    return r;
  });

  router.get("/reservations/{id}", [&orch](const Request& req) {
    auto view = orch.get(req.param("id"));
    if (!view.ok()) return Response::from_status(view.status());
    if (view->type != kSagaType)
      return Response::from_status(
          Status::not_found("reservation " + std::string(req.param("id")) + " not found"));
    return Response::json(200, reservation_json(*view));
  });

  // Pages through every booking saga and filters by data.userId: linear in the
  // number of retained sagas (no per-user index yet).
  router.get("/reservations", [&orch](const Request& req) {
    const auto user = req.query("userId");
    if (!user || user->empty())
      return bad_request(Status::invalid_argument("query parameter 'userId' is required"));
    ListQuery q;
    q.type = kSagaType;
    q.limit = 1000;
    Json out = Json::array();
    for (;;) {
      auto page = orch.list(q);
      if (!page.ok()) return Response::from_status(page.status());
      for (const SagaView& v : page->items)
        if (str(v.data, "userId") == *user) out.push_back(reservation_json(v));
      if (page->next_page_token.empty()) break;
      q.page_token = page->next_page_token;
    }
    return Response::json(200, out);
  });

  router.post("/reservations/{id}/cancel", [&orch](const Request& req) {
    const std::string id(req.param("id"));
    auto view = orch.get(id);
    if (!view.ok()) return Response::from_status(view.status());
    if (view->type != kSagaType)
      return Response::from_status(Status::not_found("reservation " + id + " not found"));
    if (Status s = orch.cancel(id); !s.ok()) {
      if (s.code() == StatusCode::kFailedPrecondition)
        return Response::problem(409, "Conflict",
                                 "reservation " + id + " can no longer be cancelled (" +
                                     reservation_status(*view) + "): " + s.message());
      return Response::from_status(s);
    }
    std::string status = "PENDING";
    if (auto after = orch.get(id); after.ok()) status = reservation_status(*after);
    return Response::json(202, {{"id", id}, {"status", status}});
  });

  service::add_standard_routes(
      router, {.readiness =
                   [&orch] {
                     return std::vector<service::ReadinessCheck>{{"orchestrator", orch.health()}};
                   },
               .metrics = [&orch] { return orch.metrics_text(); }});
}

}  // namespace saga::reservation
