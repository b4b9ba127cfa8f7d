// Runs an engine's iteration over and over on a thread of its own, and the
// bell that wakes an engine thread when work arrives for it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "saga/clock.h"

namespace saga::internal {

/// Thread-safe. Stopping waits for the current iteration to end.
class BackgroundLoop {
 public:
  ~BackgroundLoop() { stop(); }

  /// Starts calling `iteration` in a loop; does nothing if already running.
  void start(std::function<void()> iteration) {
    std::lock_guard lock(mu_);
    if (thread_.joinable()) return;
    stopping_ = false;
    thread_ = std::thread([this, iteration = std::move(iteration)] {
      while (!stopping_) iteration();
    });
  }

  /// Stops after the current iteration; does nothing if not running.
  void stop() {
    std::lock_guard lock(mu_);
    if (!thread_.joinable()) return;
    stopping_ = true;
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::thread thread_;  // GUARDED_BY(mu_)
  std::atomic<bool> stopping_{false};
};

/// Wakes a waiting engine thread. A ring while nobody waits is kept, so the
/// next wait() returns at once: no wake-up is lost. Thread-safe.
class Bell {
 public:
  void ring() {
    {
      std::lock_guard lock(mu_);
      rung_ = true;
    }
    wake_.notify_one();
  }
  /// Waits until rung or `limit` passed; clears the bell.
  void wait(Duration limit) {
    std::unique_lock lock(mu_);
    wake_.wait_for(lock, limit, [this] { return rung_; });
    rung_ = false;
  }

 private:
  std::mutex mu_;
  std::condition_variable wake_;
  bool rung_ = false;  // GUARDED_BY(mu_)
};

}  // namespace saga::internal
