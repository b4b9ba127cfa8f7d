// Test support for doctest cases that run booking sagas (tests/support/
// booking.h) over a real transport: start a batch, then collect every saga's
// final view. Header-only, tests only.
#pragma once

#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "saga/orchestrator.h"

namespace saga::testing {

/// Starts `n` booking sagas, ids prefix + "booking-" + i, each for one room at
/// 100 + i; returns their ids.
inline std::vector<std::string> start_bookings(Orchestrator& orch, const std::string& prefix,
                                               int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    StartOptions so;
    so.id = prefix + "booking-" + std::to_string(i);
    auto id = orch.start("booking", Json{{"qty", 1}, {"amount", 100 + i}}, so);
    REQUIRE_MESSAGE(id.ok(), id.status().to_string());
    ids.push_back(*id);
  }
  return ids;
}

/// Every saga's view (each must be terminal), by id; `outcomes` counts their states.
inline std::map<std::string, SagaView> terminal_views(const Orchestrator& orch,
                                                      const std::vector<std::string>& ids,
                                                      std::map<SagaState, int>& outcomes) {
  std::map<std::string, SagaView> views;
  for (const std::string& id : ids) {
    auto v = orch.get(id);
    REQUIRE_MESSAGE(v.ok(), v.status().to_string());
    CHECK_MESSAGE(is_terminal(v->state), id, " is ", to_string(v->state));
    ++outcomes[v->state];
    views.emplace(id, std::move(*v));
  }
  return views;
}

}  // namespace saga::testing
