// Test support: the booking saga (reserve -> pay -> confirm stock) with
// durable inventory and payment participants built on saga::Participant, and
// a checker of the money-and-stock invariants. Used by the simulation, crash
// and benchmark programs.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "saga/definition.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"

namespace saga::testing {

/// Knobs of the simulated participants. Probabilities in [0, 1].
struct BookingFaults {
  double decline = 0;          ///< payment refuses (saga compensates)
  double payment_retry = 0;    ///< payment answers "retry" (transient)
  double confirm_failure = 0;  ///< inventory refuses to confirm (refund, then release)
  /// Per-saga keys (holds, confirmations, charges, application counts)
  /// expire this long after they are written, by the system clock (0: kept
  /// for ever), as a ledger kept for a retention (saga-bench --soak). Must
  /// outlast every saga.
  Duration ledger_ttl{0};
};

/// The key of every inventory command: the stock is one pool with one
/// capacity, so its commands go to one shard of the inventory and are checked
/// there in order (as a real inventory keys its commands by place).
/// Payment commands keep the saga id as key and spread over the shards, each
/// shard with its own "balance".
inline constexpr char kStockKey[] = "stock";

/// The booking saga. Data: {"qty": int, "amount": int}. With `loyalty`, a
/// fourth step awards loyalty points (compensation: revoke) after confirm,
/// which is then the pivot: once stock is confirmed the points are retried
/// until they land (for three-participant runs).
inline DefinitionPtr booking_definition(Duration timeout = Duration{1000}, uint32_t attempts = 5,
                                        bool loyalty = false) {
  const RetryPolicy retry{attempts, Duration{50}, 2.0, Duration{1000}, 0.2};
  const RetryPolicy forever{0, Duration{50}, 2.0, Duration{1000}, 0.2};
  DefinitionBuilder b("booking", 1);
  const auto stock = [](const Json&) { return std::string(kStockKey); };
  b.command("reserve", "inventory", "reserve")
      .key(stock)
      .compensate("inventory", "release")
      .timeout(timeout)
      .retry(retry)
      .compensation_retry(forever)
      .command("pay", "payment", "charge")
      .compensate("payment", "refund")
      .timeout(timeout)
      .retry(retry)
      .compensation_retry(forever)
      .command("confirm", "inventory", "confirm")
      .key(stock)
      .timeout(timeout)
      .retry(retry);
  if (loyalty) {
    b.pivot()
        .command("award", "loyalty", "award")
        .compensate("loyalty", "revoke")
        .timeout(timeout)
        .retry(forever)
        .compensation_retry(forever);
  }
  auto def = b.build();
  if (!def.ok()) throw std::runtime_error(def.status().to_string());
  return *def;
}

namespace detail {

inline int64_t read_int(StateTxn& txn, const std::string& key) {
  auto v = txn.get(key);
  if (!v.ok()) throw std::runtime_error(v.status().to_string());
  return *v ? std::stoll(**v) : 0;
}

// Writes a per-saga key, expiring `ttl` from now when it is positive.
inline void put_ledger(StateTxn& txn, const std::string& key, const std::string& value,
                       Duration ttl) {
  if (ttl.count() > 0) {
    txn.put(key, value, to_millis(SystemClock().now()) + ttl.count());
  } else {
    txn.put(key, value);
  }
}

// Counts each application of a command id; the checker demands <= 1.
inline void count_application(StateTxn& txn, const Message& cmd, Duration ttl = Duration{0}) {
  const std::string key = "applied/" + cmd.id;
  put_ledger(txn, key, std::to_string(read_int(txn, key) + 1), ttl);
}

}  // namespace detail

/// Registers inventory's handlers: reserve (capacity-checked hold), release
/// (drops the hold and any confirmation), confirm (hold -> confirmed).
/// `chance()` returns a uniform [0, 1) number for fault injection.
inline Status register_inventory(Participant& p, int64_t capacity, const BookingFaults& faults,
                                 std::function<double()> chance) {
  const Duration ttl = faults.ledger_ttl;
  SAGA_RETURN_IF_ERROR(p.on("reserve", [capacity, ttl](CommandContext& c) {
    const std::string saga = c.command.saga_id;
    const int64_t qty = c.payload.value("qty", 1);
    const int64_t used = detail::read_int(c.state, "used");
    if (used + qty > capacity) return HandlerResult::failure("no availability");
    c.state.put("used", std::to_string(used + qty));
    detail::put_ledger(c.state, "hold/" + saga, std::to_string(qty), ttl);
    detail::count_application(c.state, c.command, ttl);
    return HandlerResult::success({{"held", qty}});
  }));
  SAGA_RETURN_IF_ERROR(p.on("release", [ttl](CommandContext& c) {
    const std::string saga = c.command.saga_id;
    const int64_t held = detail::read_int(c.state, "hold/" + saga);
    if (held > 0) c.state.put("used", std::to_string(detail::read_int(c.state, "used") - held));
    c.state.del("hold/" + saga);
    c.state.del("confirmed/" + saga);
    detail::count_application(c.state, c.command, ttl);
    return HandlerResult::success();
  }));
  SAGA_RETURN_IF_ERROR(p.on("confirm", [faults, chance, ttl](CommandContext& c) {
    const std::string saga = c.command.saga_id;
    const int64_t held = detail::read_int(c.state, "hold/" + saga);
    if (held == 0) return HandlerResult::failure("no hold to confirm");
    if (chance() < faults.confirm_failure) return HandlerResult::failure("place closed");
    detail::put_ledger(c.state, "confirmed/" + saga, std::to_string(held), ttl);
    detail::count_application(c.state, c.command, ttl);
    return HandlerResult::success();
  }));
  return ok_status();
}

/// Registers payment's handlers: charge (may decline or ask for a retry) and refund.
inline Status register_payment(Participant& p, const BookingFaults& faults,
                               std::function<double()> chance) {
  SAGA_RETURN_IF_ERROR(p.on("charge", [faults, chance](CommandContext& c) {
    const double roll = chance();
    if (roll < faults.decline) return HandlerResult::failure("card declined");
    if (roll < faults.decline + faults.payment_retry) return HandlerResult::retry("provider busy");
    const int64_t amount = c.payload.value("amount", 0);
    detail::put_ledger(c.state, "charge/" + c.command.saga_id, std::to_string(amount),
                       faults.ledger_ttl);
    c.state.put("balance", std::to_string(detail::read_int(c.state, "balance") + amount));
    detail::count_application(c.state, c.command, faults.ledger_ttl);
    return HandlerResult::success({{"charged", amount}});
  }));
  SAGA_RETURN_IF_ERROR(p.on("refund", [ttl = faults.ledger_ttl](CommandContext& c) {
    const std::string key = "charge/" + c.command.saga_id;
    const int64_t charged = detail::read_int(c.state, key);
    c.state.put("balance", std::to_string(detail::read_int(c.state, "balance") - charged));
    c.state.del(key);
    detail::count_application(c.state, c.command, ttl);
    return HandlerResult::success();
  }));
  return ok_status();
}

/// Registers loyalty's handlers: award (points per saga) and revoke.
inline Status register_loyalty(Participant& p) {
  SAGA_RETURN_IF_ERROR(p.on("award", [](CommandContext& c) {
    c.state.put("points/" + c.command.saga_id, "10");
    detail::count_application(c.state, c.command);
    return HandlerResult::success({{"points", 10}});
  }));
  return p.on("revoke", [](CommandContext& c) {
    c.state.del("points/" + c.command.saga_id);
    detail::count_application(c.state, c.command);
    return HandlerResult::success();
  });
}

/// Reads every key of a participant under `prefix` as integers; a key held
/// by several shards (a per-shard "balance") reads as their sum.
inline std::map<std::string, int64_t> read_ints(const Participant& p, const std::string& prefix) {
  std::map<std::string, int64_t> out;
  Status s = p.scan(prefix, [&](std::string_view k, std::string_view v) {
    out[std::string(k.substr(prefix.size()))] += std::stoll(std::string(v));
    return true;
  });
  if (!s.ok()) throw std::runtime_error(s.to_string());
  return out;
}

/// "at step S: STATUS, A attempts (C compensation), last error E" for a
/// saga that did not finish, to tell where it stopped.
inline std::string describe_step(const SagaView& v) {
  if (v.current_step >= v.steps.size()) return "past its last step";
  const StepView& s = v.steps[v.current_step];
  std::string out = "at step " + s.name + ": " + std::string(to_string(s.status)) + ", " +
                    std::to_string(s.attempts) + " attempts (" +
                    std::to_string(s.compensation_attempts) + " compensation)";
  const std::string& error = s.last_error.empty() ? v.last_error : s.last_error;
  if (!error.empty()) out += ", last error " + error;
  return out;
}

/// Checks the invariants over a finished run; returns the violations found
/// (empty = consistent). `sagas` maps saga id -> final state and data.
/// `ledger_since_ms` > 0: the participants' per-saga keys expire
/// (BookingFaults::ledger_ttl) and are whole only for sagas created after
/// it; older sagas are checked for their end only, and the totals (used,
/// balance), which count expired keys too, not at all.
inline std::vector<std::string> check_booking_invariants(
    const std::map<std::string, SagaView>& sagas, const Participant& inventory,
    const Participant& payment, int64_t capacity, int64_t ledger_since_ms = 0) {
  std::vector<std::string> bad;
  const auto holds = read_ints(inventory, "hold/");
  const auto confirmed = read_ints(inventory, "confirmed/");
  const auto charges = read_ints(payment, "charge/");
  const auto inv_applied = read_ints(inventory, "applied/");
  const auto pay_applied = read_ints(payment, "applied/");
  auto used = read_ints(inventory, "used");
  auto balance = read_ints(payment, "balance");

  for (const auto& [cmd, n] : inv_applied) {
    if (n > 1) bad.push_back("inventory applied " + cmd + " " + std::to_string(n) + " times");
  }
  for (const auto& [cmd, n] : pay_applied) {
    if (n > 1) bad.push_back("payment applied " + cmd + " " + std::to_string(n) + " times");
  }
  int64_t held_total = 0, charged_total = 0;
  for (const auto& [id, n] : holds) held_total += n;
  for (const auto& [id, n] : charges) charged_total += n;
  if (used[""] != held_total && ledger_since_ms == 0)
    bad.push_back("inventory 'used' disagrees with the holds");
  if (used[""] > capacity)
    bad.push_back("overbooked: " + std::to_string(used[""]) + " > " + std::to_string(capacity));
  if (balance[""] != charged_total && ledger_since_ms == 0)
    bad.push_back("payment balance disagrees with the charges");

  for (const auto& [id, v] : sagas) {
    const bool held = holds.count(id) > 0, conf = confirmed.count(id) > 0,
               charged = charges.count(id) > 0;
    const bool whole = v.created_ms > ledger_since_ms;  // its ledger keys are all there
    switch (v.state) {
      case SagaState::kCompleted: {
        if (!whole) break;
        const int64_t amount = v.data.value("amount", 0);
        if (!held || !conf) bad.push_back("completed saga " + id + " has no confirmed stock");
        if (!charged || charges.at(id) != amount)
          bad.push_back("completed saga " + id + " is not paid exactly once");
        for (int step = 0; step < 3; ++step) {
          const auto& applied = step == 1 ? pay_applied : inv_applied;
          auto it = applied.find(id + "/" + std::to_string(step) + "/a");
          if (it == applied.end() || it->second != 1) {
            bad.push_back("completed saga " + id + " did not apply step " + std::to_string(step) +
                          " exactly once");
          }
        }
        break;
      }
      case SagaState::kCompensated:
        if (!whole) break;
        if (held || conf) bad.push_back("compensated saga " + id + " still holds stock");
        if (charged) bad.push_back("compensated saga " + id + " still has a charge");
        break;
      default:
        bad.push_back("saga " + id + " ended " + std::string(to_string(v.state)) + " " +
                      describe_step(v));
    }
  }
  // No stock or money for sagas nobody knows about.
  std::set<std::string> known;
  for (const auto& [id, v] : sagas) known.insert(id);
  for (const auto& [id, n] : holds) {
    if (!known.count(id)) bad.push_back("hold for unknown saga " + id);
  }
  for (const auto& [id, n] : charges) {
    if (!known.count(id)) bad.push_back("charge for unknown saga " + id);
  }
  return bad;
}

/// Invariants of the loyalty participant: completed sagas were awarded
/// exactly once, others hold no points, nothing was applied twice.
inline std::vector<std::string> check_loyalty_invariants(
    const std::map<std::string, SagaView>& sagas, const Participant& loyalty) {
  std::vector<std::string> bad;
  const auto points = read_ints(loyalty, "points/");
  const auto applied = read_ints(loyalty, "applied/");
  for (const auto& [cmd, n] : applied) {
    if (n > 1) bad.push_back("loyalty applied " + cmd + " " + std::to_string(n) + " times");
  }
  for (const auto& [id, v] : sagas) {
    const bool has = points.count(id) > 0;
    if (v.state == SagaState::kCompleted && !has)
      bad.push_back("completed saga " + id + " has no points");
    if (v.state != SagaState::kCompleted && has)
      bad.push_back("saga " + id + " ended " + std::string(to_string(v.state)) + " with points");
  }
  return bad;
}

}  // namespace saga::testing
