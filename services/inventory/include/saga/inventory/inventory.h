// The inventory participant: places, rooms per night, holds, confirmations
// and the owner's view of confirmed bookings.
//
// State (JSON values in the participant's store):
//   place/<placeId>              {id, name, ownerId, rooms[, price {amount, currency}]}
//                                (price: per room and night, integer minor units)
//   night/<placeId>/<YYYY-MM-DD> {held, confirmed}
//   booking/<sagaId>             {placeId, checkIn, checkOut, qty, status HELD|CONFIRMED,
//                                 reservationId, userId[, ownerId]}
//   owner/<ownerId>/<sagaId>     index of confirmed bookings ({reservationId})
//
// Commands: reserve, release (compensation of reserve and allocate; with
// payload {bookingId} it releases another saga's booking: cancellation),
// confirm, allocate (the seed's flow: reserve and confirm at once; no
// availability answers {allocated: false, reason} and emits
// ReservationCancelConfirmed). Domain
// events (ReservationConfirmed, ReservationCancelConfirmed) go to the
// "reserveplace" destination, keyed by the reservation id.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "saga/participant.h"
#include "saga/reshard.h"
#include "saga/service/router.h"
#include "saga/status.h"

namespace saga::inventory {

inline constexpr char kParticipantName[] = "inventory";
inline constexpr char kEventDestination[] = "reserveplace";
/// Longest stay (reserve) and longest availability window, in nights.
inline constexpr long kMaxNights = 366;
/// Largest room count of a place.
inline constexpr int64_t kMaxRooms = 1'000'000;

/// The nightly price of the places the seed's POST /reservationManagements
/// creates: 5000 KRW (the seed's walkthrough books one night at 5000).
inline constexpr int64_t kSeedPriceAmount = 5000;
inline constexpr char kSeedPriceCurrency[] = "KRW";

struct Options {
  /// Event timestamps (ms since the epoch). Default: the system clock.
  std::function<int64_t()> now_ms = {};
};

/// Registers reserve, release, confirm and allocate on `p`. Call before its engine runs.
Status register_handlers(Participant& p, Options options = {});

/// Where an inventory state key goes when the store is resharded
/// (saga/reshard.h): the place id its commands are keyed by. place/<id> and
/// night/<id>/<date>: the id; booking/<saga>: the record's placeId;
/// owner/<owner>/<saga>: the placeId of booking/<saga> in the old store.
/// InvalidArgument for another key, DataLoss or FailedPrecondition when the
/// booking record needed is unreadable or missing.
StatusOr<std::string> shard_key(std::string_view key, std::string_view value,
                                const ReshardSource& source);

/// Registers the HTTP API on `router` (places, rooms, availability, owner
/// reservations, the seed's /reservationManagements) plus /healthz, /readyz
/// (participant health: store and transport) and /metrics. `p` must outlive
/// the router's server. GET /places/{id}[/availability] are public; creating
/// places and setting rooms or stock need the owner role, and an existing
/// place, like a guest list, is only its owner's (or an admin's): else 403.
/// Prices: POST /places takes an optional `price` {amount, currency} (a place
/// without one cannot be booked until PUT /places/{id}/price sets it, owner
/// only); the seed's places are created at kSeedPriceAmount kSeedPriceCurrency.
/// GET /owners/{ownerId}/reservations is paginated (domain/paging.h).
void add_routes(service::Router& router, Participant& p);

}  // namespace saga::inventory
