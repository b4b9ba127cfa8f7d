#include "trace.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <string>

namespace saga::internal::trace {

namespace {

struct Sink {
  std::mutex mu;
  std::string path;    // "" = off
  std::string buffer;  // GUARDED_BY(mu)

  Sink() {
    const char* prefix = std::getenv("SAGA_LATENCY_TRACE");
    if (prefix != nullptr && *prefix != '\0') open(prefix);
  }
  // Records to "<prefix>.<pid>" from now on. Called with `mu` held or at start-up.
  void open(std::string_view prefix) {
    write();
    path = std::string(prefix) + "." + std::to_string(::getpid());
    buffer.reserve(kBlock + 512);
    detail::on.store(true, std::memory_order_relaxed);
  }
  ~Sink() { write(); }

  // Appends the buffer to the file. Called with `mu` held or at exit.
  void write() {
    if (path.empty() || buffer.empty()) return;
    if (std::FILE* f = std::fopen(path.c_str(), "a")) {
      std::fwrite(buffer.data(), 1, buffer.size(), f);
      std::fclose(f);
    }
    buffer.clear();
  }

  static constexpr size_t kBlock = 1 << 20;
};

Sink& sink() {
  static Sink s;
  return s;
}

// Reads the environment at start-up, so that enabled() is right from main().
[[maybe_unused]] const bool kInitialised = (sink(), true);

}  // namespace

namespace detail {

std::atomic<bool> on{false};

void record(std::string_view point, std::string_view saga_id, std::string_view what) {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  const int64_t ns = static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  Sink& s = sink();
  std::lock_guard lock(s.mu);
  if (s.path.empty()) return;  // stopped meanwhile
  s.buffer += std::to_string(ns);
  s.buffer += '\t';
  s.buffer += point;
  s.buffer += '\t';
  s.buffer += saga_id;
  s.buffer += '\t';
  s.buffer += what;
  s.buffer += '\n';
  if (s.buffer.size() >= Sink::kBlock) s.write();
}

}  // namespace detail

void flush() {
  Sink& s = sink();
  std::lock_guard lock(s.mu);
  s.write();
}

void start(std::string_view prefix) {
  Sink& s = sink();
  std::lock_guard lock(s.mu);
  s.open(prefix);
}

void stop() {
  Sink& s = sink();
  std::lock_guard lock(s.mu);
  detail::on.store(false, std::memory_order_relaxed);
  s.write();
  s.path.clear();
}

}  // namespace saga::internal::trace
