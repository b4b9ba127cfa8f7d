// The reservation service: orchestrates the booking saga over the inventory
// and payment participants and exposes reservations over HTTP.
//
// Saga `booking` v1, data = the reservation
//   {reservationId (= saga id), placeId, userId, checkIn, checkOut, qty, amount,
//    currency, nightlyPrice, createdMs[, idempotencyKey, requestHash]}:
//   amount = nights x qty x nightlyPrice, integer minor units of `currency`,
//   computed here from the inventory's price of the place (never the client's);
//   idempotencyKey/requestHash: the caller's Idempotency-Key and the SHA-256
//   of the request (route and canonical JSON body), see add_routes.
//   reserve  inventory reserve  (compensation: inventory release)
//   pay      payment charge     (compensation: payment refund)
//   confirm  inventory confirm
// Saga `seed-booking` v1 (the seed's POST /accommodations, same data plus placeNm):
//   pay      payment charge      (compensation: payment refund)
//   allocate inventory allocate  (compensation: inventory release)
//   check    local: fails with the inventory's reason when nothing was allocated
// so a booking without stock is charged, then refunded, as in the seed.
// Saga `cancellation` v1 (a confirmed booking cancelled by its customer), id
// "<reservationId>.cancel", data = the booking's data plus bookingId,
// refundAmount and refundKind (cancellation_refund()):
//   release  inventory release {bookingId}
//   refund   payment refund {bookingId, amount: refundAmount}
// Steps time out after 10 s and are tried 5 times with backoff (cancellation:
// forever); compensations are retried forever. Domain events (ReservationPlaced,
// ReservationStatusChanged, ReservationCanceled, ReservationCancelRequested)
// go to the "reserveplace" destination, keyed by the reservation id.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "saga/definition.h"
#include "saga/orchestrator.h"
#include "saga/service/config.h"
#include "saga/service/router.h"
#include "saga/status.h"

namespace saga::reservation {

inline constexpr char kServiceName[] = "reservation";
inline constexpr char kSagaType[] = "booking";
inline constexpr char kSeedSagaType[] = "seed-booking";
inline constexpr char kCancelSagaType[] = "cancellation";
inline constexpr uint32_t kSagaVersion = 1;
inline constexpr char kEventDestination[] = "reserveplace";
inline constexpr char kInventory[] = "inventory";
inline constexpr char kPayment[] = "payment";
/// Longest stay, in nights.
inline constexpr long kMaxNights = 366;

/// What the inventory says of an existing place: its nightly price per room,
/// when its owner has set one (integer minor units of `currency`).
struct PlaceInfo {
  bool priced = false;
  int64_t price = 0;
  std::string currency;
};

/// The place `place_id` as the inventory knows it: nullopt when there is no
/// such place; Unavailable when the inventory cannot be asked (then the
/// booking is refused 503 with Retry-After: without the price there is no amount).
using PlaceLookup = std::function<StatusOr<std::optional<PlaceInfo>>(const std::string& place_id)>;

/// Seconds in the Retry-After of a 503 when the inventory cannot be asked.
inline constexpr int kInventoryRetryAfterSeconds = 5;

/// What a customer gets back for cancelling a confirmed booking, by how long
/// before its stay begins (its check-in date at `check_in_time`, UTC).
struct CancellationPolicy {
  /// Cancelled at least this long before the stay begins: the whole amount
  /// back. Default 48 h.
  std::chrono::milliseconds free_until{std::chrono::hours(48)};
  /// Cancelled later, but before the stay begins: this share of the amount
  /// back, in percent (0..100), rounded down to a minor unit. Default 50.
  int64_t late_refund_percent = 50;
  /// When a stay begins on its check-in date, after midnight UTC (under
  /// 24 h). Default 15:00.
  std::chrono::milliseconds check_in_time{std::chrono::hours(15)};
};

/// The refund of a cancellation.
struct Refund {
  /// Integer minor units of the booking's currency.
  int64_t amount = 0;
  /// "FULL" (in time for a free cancellation) or "PARTIAL".
  std::string kind;
};

/// The refund for cancelling, at `now_ms`, the booking whose saga data is
/// `data` (checkIn "YYYY-MM-DD", amount). FailedPrecondition once its stay has
/// begun, naming when it began; InvalidArgument for a bad policy or booking.
StatusOr<Refund> cancellation_refund(const Json& data, int64_t now_ms,
                                     const CancellationPolicy& policy);

/// The policy from the environment: CANCEL_FREE_UNTIL (a duration before
/// check-in, default 48h), CANCEL_LATE_REFUND_PERCENT (0..100, default 50),
/// CHECK_IN_TIME (a duration after midnight UTC, under 24h; default 15h).
/// InvalidArgument naming the variable for a bad value.
StatusOr<CancellationPolicy> cancellation_policy_from_env();

struct Options {
  /// Event timestamps and createdMs (ms since the epoch). Default: the system clock.
  std::function<int64_t()> now_ms = {};
  /// Where prices come from. Unknown place: 422; unpriced place: 422;
  /// unreachable inventory: 503. Default: none, and every booking is 503.
  PlaceLookup place_lookup = {};
  /// How long a booking's record is kept after its check-out date (UTC
  /// midnight), whatever the retention of its sagas. Default 400 days.
  std::chrono::milliseconds booking_retention{std::chrono::hours(24 * 400)};
  /// Refunds of cancelled confirmed bookings (now_ms decides the time).
  CancellationPolicy cancellation = {};
};

/// The `booking` v1 saga definition.
StatusOr<DefinitionPtr> booking_definition(Options options = {});
/// The `seed-booking` v1 saga definition.
StatusOr<DefinitionPtr> seed_booking_definition(Options options = {});
/// The `cancellation` v1 saga definition.
StatusOr<DefinitionPtr> cancellation_definition(Options options = {});
/// The three definitions the service registers.
StatusOr<std::vector<DefinitionPtr>> definitions(Options options = {});

/// A PlaceLookup asking the inventory's GET /places/{id} (timeout 2 s) at every
/// booking: prices change, so nothing is cached. Its replicas take turns; one
/// that cannot be reached is passed over for the next.
PlaceLookup inventory_place_lookup(std::vector<service::HostPort> replicas);

/// The id of the cancellation saga of reservation `id`: "<id>.cancel", or
/// "<id>.cancel.<n>" with the smallest n > 0 that puts it in the shard of `id`
/// in `orch`, so that the replica driving a booking drives its cancellation.
std::string cancellation_id(const Orchestrator& orch, std::string_view id);

/// The reservation status of a booking (or seed-booking) saga and its
/// cancellation saga, if any: PENDING (running or compensating), CONFIRMED,
/// CANCELLING (cancellation running), CANCELLED (compensated after a cancel,
/// or cancellation done), REJECTED (compensated after a failure),
/// NEEDS_ATTENTION (failed) or ABORTED.
std::string reservation_status(const SagaView& saga, const SagaView* cancellation = nullptr);

/// The reservation as GET /reservations/{id} shows it.
Json reservation_json(const SagaView& saga, const SagaView* cancellation = nullptr);

/// Registers the HTTP API on `router`:
///   POST /reservations              start a booking -> 202 {id, status} + Location
///   GET  /reservations/{id}         the reservation with its steps and the history
///                                   of its status ({status, atMs}, oldest first), or 404
///   GET  /reservations[?userId=&limit=&pageToken=]  the user's reservations (their
///                                   records' index), oldest first, paginated
///                                   (domain/paging.h); without userId the caller's own
///   POST /reservations/{id}/cancel  202 {id, status, refundAmount}: a running
///                                   booking is compensated (all refunded), a
///                                   confirmed one gets a cancellation saga
///                                   refunding per Options::cancellation; 409
///                                   when rejected or cancelled, or once its
///                                   stay has begun
///   POST /accommodations            the seed's booking call (seed-booking saga) -> 201
///   GET  /accommodations/{id}       same as GET /reservations/{id}
/// plus /healthz, /readyz (orchestrator health) and /metrics.
/// Prices: the amount of a booking is nights x qty x the place's nightly price
/// (PlaceLookup); POST /reservations must state it as `amount` (an integer:
/// floats 400, another value 422), the seed's POST /accommodations may leave
/// it out. Idempotency-Key (1..128 printable characters): per user; the
/// booking keeps the key and the request's SHA-256, a replay with the same
/// body answers the same booking, with another body 422, also after a restart
/// and after the booking's sagas are gone (the key's record). Ids are "r-" and
/// 32 hex digits from a CSPRNG, unrelated to the key.
/// Bookings made before bookings had records get theirs from their sagas (a
/// backfill, when the routes are added and when this replica takes shards).
/// Every booking route needs the caller's identity (service/identity.h; 401
/// without): a booking is made only as oneself (userId / usrId = the caller,
/// else 403) and read, listed and cancelled only by its user or an admin
/// (anyone else: 404, as for a missing id).
/// `orchestrator` must outlive the router's server.
void add_routes(service::Router& router, Orchestrator& orchestrator, Options options = {});

}  // namespace saga::reservation
