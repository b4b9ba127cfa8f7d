// The payment participant: a simulated payment provider with tunable latency,
// declines and transient failures.
//
// State (JSON values in the participant's store):
//   payment/<sagaId>                    {id: "pay-<sagaId>", reservationId, userId, amount,
//                                        status APPROVED|REFUNDED}
//   byres/<reservationId>/<paymentId>   index for GET /payments?reservationId=
//
// Commands: charge, refund (compensation of charge; with payload {bookingId}
// it refunds another saga's charge: cancellation; with an `amount` too, only
// that much of it, at most the charge). A refunded payment keeps its charged
// `amount` and records `refundedAmount`. Domain events
// (PaymentApproved, PaymentCancelApproved) go to the "reserveplace"
// destination, keyed by the reservation id.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "saga/participant.h"
#include "saga/reshard.h"
#include "saga/service/router.h"
#include "saga/status.h"

namespace saga::payment {

inline constexpr char kParticipantName[] = "payment";
inline constexpr char kEventDestination[] = "reserveplace";

/// The simulated provider's behaviour.
struct Config {
  /// Time the provider takes per charge (slept inside the handler). PAYMENT_LATENCY_MS.
  std::chrono::milliseconds latency{0};
  /// Chance a charge is declined for good ("card declined"). PAYMENT_DECLINE_RATE.
  double decline_rate = 0;
  /// Chance a charge fails transiently (the orchestrator retries). PAYMENT_FAILURE_RATE.
  double failure_rate = 0;

  /// From the environment: PAYMENT_LATENCY_MS (0..60000, default 0),
  /// PAYMENT_DECLINE_RATE and PAYMENT_FAILURE_RATE (numbers in 0..1, default 0).
  /// InvalidArgument naming the variable, the accepted range and the bad value.
  static StatusOr<Config> from_env();
};

/// Parses a probability: a decimal number in [0, 1]. InvalidArgument naming `name`.
StatusOr<double> parse_rate(std::string_view name, std::string_view text);

struct Options {
  Config config = {};
  /// Uniform numbers in [0, 1) for declines and failures. Default: a seeded PRNG.
  std::function<double()> chance = {};
  /// Event timestamps (ms since the epoch). Default: the system clock.
  std::function<int64_t()> now_ms = {};
};

/// Registers charge and refund on `p`. InvalidArgument for rates outside 0..1.
Status register_handlers(Participant& p, Options options = {});

/// Where a payment state key goes when the store is resharded
/// (saga/reshard.h): the booking's saga id, which keys charge and refund.
/// payment/<saga>: saga; byres/<reservation>/pay-<saga>: saga. InvalidArgument
/// for another key.
StatusOr<std::string> shard_key(std::string_view key, std::string_view value,
                                const ReshardSource& source);

/// Registers GET /payments/{id}, GET /payments?reservationId= and the standard
/// routes (/healthz, /readyz with the participant's health, /metrics).
/// Both need the caller's identity (401 without); a payment is its user's (or an
/// admin's) to see: anyone else gets 404, and lists leave it out.
void add_routes(service::Router& router, Participant& p);

}  // namespace saga::payment
