// Test support: the one way tests wait for something to happen: poll a
// condition until it holds or a deadline passes. Never a fixed sleep.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace saga::testing {

/// Calls `done` every `every` until it returns true (then true) or `limit`
/// has passed (then false). Runs `done` on the calling thread.
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds limit = std::chrono::seconds(10),
                       std::chrono::milliseconds every = std::chrono::milliseconds(2)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(every);  // polling with a deadline
  }
  return true;
}

}  // namespace saga::testing
