// Runs an engine's iteration over and over on a thread of its own, and the
// bell that wakes an engine thread when work arrives for it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

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

  /// Stops after the current iteration, which `wake` (if given) is called to
  /// end; does nothing if not running.
  void stop(const std::function<void()>& wake = {}) {
    std::lock_guard lock(mu_);
    if (!thread_.joinable()) return;
    stopping_ = true;
    if (wake) wake();
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

/// How an engine runs in the background (docs/sharding.md, "Threads"): with
/// one driver, one thread calls `single` (an iteration that polls the
/// transport itself) over and over; with several, each driver's own thread
/// calls `drive(i)` over and over and a pump thread calls `pump` (one poll of
/// the transport), until stop(), which calls `wake` to end their waits.
/// Thread-safe.
class EngineThreads {
 public:
  struct Work {
    std::function<void()> single;
    std::function<void(size_t driver)> drive;
    std::function<void()> pump;
    std::function<void()> wake;
  };

  ~EngineThreads() { stop(); }

  /// Starts the threads for `drivers` drivers; does nothing if running.
  void start(size_t drivers, Work work) {
    std::lock_guard lock(mu_);
    if (running_) return;
    running_ = true;
    stopping_ = false;
    wake_ = std::move(work.wake);
    if (drivers == 1) {
      loop_.start(std::move(work.single));
      return;
    }
    threaded_ = true;
    for (size_t i = 0; i < drivers; ++i) {
      threads_.emplace_back([this, i, drive = work.drive] {
        while (!stopping_) drive(i);
      });
    }
    threads_.emplace_back([this, pump = std::move(work.pump)] {
      while (!stopping_) pump();
    });
  }

  /// Stops after the current passes; does nothing if not running.
  void stop() {
    std::lock_guard lock(mu_);
    if (!running_) return;
    loop_.stop(wake_);
    stopping_ = true;
    if (wake_) wake_();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
    threaded_ = false;
    running_ = false;
  }

  /// Between start() and stop().
  bool running() const { return running_; }
  /// Running on a thread per driver (transport callbacks then run on the pump).
  bool threaded() const { return threaded_; }
  /// stop() was called and the threads are ending.
  bool stopping() const { return stopping_; }

 private:
  std::mutex mu_;
  BackgroundLoop loop_;
  std::vector<std::thread> threads_;  // GUARDED_BY(mu_): drivers' and the pump
  std::function<void()> wake_;        // GUARDED_BY(mu_)
  std::atomic<bool> running_{false}, threaded_{false}, stopping_{false};
};

}  // namespace saga::internal
