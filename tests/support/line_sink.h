// Test support: an spdlog sink that keeps every line logged to it, for tests
// that assert on what a component logged (or that it never logged a secret).
// Header-only, tests only.
#pragma once

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace saga::testing {

/// Keeps every line logged to it, in order.
class LineSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  size_t size() {
    std::lock_guard lock(mutex_);
    return lines_.size();
  }
  /// Lines [from, to).
  std::vector<std::string> lines(size_t from = 0, size_t to = SIZE_MAX) {
    std::lock_guard lock(mutex_);
    to = std::min(to, lines_.size());
    return {lines_.begin() + static_cast<ptrdiff_t>(std::min(from, to)),
            lines_.begin() + static_cast<ptrdiff_t>(to)};
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t out;
    formatter_->format(msg, out);
    lines_.emplace_back(out.data(), out.size());
  }
  void flush_() override {}

 private:
  std::vector<std::string> lines_;  // GUARDED_BY(mutex_)
};

}  // namespace saga::testing
