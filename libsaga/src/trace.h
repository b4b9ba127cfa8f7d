// Latency trace points: where each millisecond of a saga goes (bench/README.md,
// "Where a saga's time goes"). Off unless the environment variable
// SAGA_LATENCY_TRACE names a file prefix when the process starts; then every
// point is appended, as "<monotonic ns>\t<point>\t<saga id>\t<detail>", to
// "<prefix>.<pid>" (CLOCK_MONOTONIC, so the files of processes on one machine
// merge into one time line). Written in blocks and at exit; a process killed
// with SIGKILL loses its last block. Off, a point costs one relaxed load.
#pragma once

#include <atomic>
#include <string_view>

namespace saga::internal::trace {

namespace detail {
extern std::atomic<bool> on;
void record(std::string_view point, std::string_view saga_id, std::string_view detail);
}  // namespace detail

/// Whether points are recorded in this process.
inline bool enabled() { return detail::on.load(std::memory_order_relaxed); }

/// Records `point` ("o.durable", "k.send", ...) for `saga_id` now. Thread-safe.
inline void point(std::string_view point, std::string_view saga_id,
                  std::string_view detail = {}) {
  if (enabled()) detail::record(point, saga_id, detail);
}

/// Writes what is buffered (also done at exit).
void flush();

/// Records from now on to "<prefix>.<pid>" (what SAGA_LATENCY_TRACE does at
/// start-up), after writing what was buffered for an earlier prefix.
void start(std::string_view prefix);

/// Writes what is buffered and records nothing more.
void stop();

}  // namespace saga::internal::trace
