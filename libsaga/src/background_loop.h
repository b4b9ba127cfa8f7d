// Runs an engine's iteration over and over on a thread of its own.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>

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

}  // namespace saga::internal
