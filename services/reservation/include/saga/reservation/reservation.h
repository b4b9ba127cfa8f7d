// The reservation service: orchestrates the booking saga over the inventory
// and payment participants and exposes reservations over HTTP.
//
// Saga `booking` v1, data = the reservation
//   {reservationId (= saga id), placeId, userId, checkIn, checkOut, qty, amount, createdMs}:
//   reserve  inventory reserve  (compensation: inventory release)
//   pay      payment charge     (compensation: payment refund)
//   confirm  inventory confirm
// Steps time out after 10 s and are tried 5 times with backoff; compensations
// are retried forever. Domain events (ReservationPlaced, ReservationStatusChanged,
// ReservationCanceled) go to the "reserveplace" destination, keyed by the id.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "saga/definition.h"
#include "saga/orchestrator.h"
#include "saga/service/router.h"
#include "saga/status.h"

namespace saga::reservation {

inline constexpr char kServiceName[] = "reservation";
inline constexpr char kSagaType[] = "booking";
inline constexpr uint32_t kSagaVersion = 1;
inline constexpr char kEventDestination[] = "reserveplace";
inline constexpr char kInventory[] = "inventory";
inline constexpr char kPayment[] = "payment";
/// Longest stay, in nights.
inline constexpr long kMaxNights = 366;

struct Options {
  /// Event timestamps and createdMs (ms since the epoch). Default: the system clock.
  std::function<int64_t()> now_ms = {};
};

/// The `booking` v1 saga definition.
StatusOr<DefinitionPtr> booking_definition(Options options = {});

/// The reservation status of a booking saga: PENDING (running or
/// compensating), CONFIRMED, CANCELLED (compensated after a cancel), REJECTED
/// (compensated after a failure), NEEDS_ATTENTION (failed) or ABORTED.
std::string reservation_status(const SagaView& saga);

/// The reservation as GET /reservations/{id} shows it.
Json reservation_json(const SagaView& saga);

/// Registers the HTTP API on `router`:
///   POST /reservations              start a booking -> 202 {id, status} + Location
///   GET  /reservations/{id}         the reservation with its steps, or 404
///   GET  /reservations?userId=      the user's reservations
///   POST /reservations/{id}/cancel  202 {id, status}; 409 when already finished
/// plus /healthz, /readyz (orchestrator health) and /metrics.
/// `orchestrator` must outlive the router's server.
void add_routes(service::Router& router, Orchestrator& orchestrator, Options options = {});

}  // namespace saga::reservation
