// The orchestrator's Prometheus metrics (prometheus-cpp), kept apart from the
// engine so the engine reads as saga logic.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <string>

namespace saga::internal {

/// Every series the engine updates. Thread-safe (prometheus-cpp metrics are).
class EngineMetrics {
 public:
  EngineMetrics();

  prometheus::Counter& started(const std::string& type) { return started_.Add({{"type", type}}); }
  prometheus::Counter& completed(const std::string& type) {
    return completed_.Add({{"type", type}});
  }
  prometheus::Counter& compensated(const std::string& type) {
    return compensated_.Add({{"type", type}});
  }
  prometheus::Counter& failed(const std::string& type) { return failed_.Add({{"type", type}}); }
  prometheus::Counter& aborted(const std::string& type) { return aborted_.Add({{"type", type}}); }
  /// Seconds from a step's first send to its outcome.
  prometheus::Histogram& step_latency(const std::string& type, const std::string& step);
  /// 0 closed, 1 open, 2 half-open.
  prometheus::Gauge& breaker(const std::string& participant) {
    return breaker_.Add({{"participant", participant}});
  }

  /// Changelog records applied by restores of shard `shard` (docs/sharding.md).
  prometheus::Counter& restore_records(uint32_t shard) {
    return restore_records_.Add({{"shard", std::to_string(shard)}});
  }
  /// Seconds the last restore of shard `shard` took.
  prometheus::Gauge& restore_seconds(uint32_t shard) {
    return restore_seconds_.Add({{"shard", std::to_string(shard)}});
  }

  /// All series in Prometheus text format.
  std::string text() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& completed_;
  prometheus::Family<prometheus::Counter>& compensated_;
  prometheus::Family<prometheus::Counter>& failed_;
  prometheus::Family<prometheus::Counter>& aborted_;
  prometheus::Family<prometheus::Histogram>& step_latency_;
  prometheus::Family<prometheus::Gauge>& breaker_;
  prometheus::Family<prometheus::Counter>& restore_records_;
  prometheus::Family<prometheus::Gauge>& restore_seconds_;
  prometheus::Family<prometheus::Gauge>& engine_gauges_;
  prometheus::Family<prometheus::Counter>& engine_counters_;

 public:
  prometheus::Gauge& in_flight;
  prometheus::Gauge& parked;
  prometheus::Gauge& outbox_depth;
  prometheus::Gauge& shards_owned;
  prometheus::Gauge& standby_records;  // copied by the standby since open (Options::standby)
  prometheus::Gauge& store_bytes;      // the store's SST files and memtables (estimate)
  prometheus::Gauge& store_keys;       // the store's live keys (estimate)
  prometheus::Counter& transitions;
  prometheus::Counter& writes;
  prometheus::Counter& stale_replies;
  prometheus::Counter& timers_fired;
  prometheus::Counter& retention_removed;  // finished sagas removed by retention
  prometheus::Counter& records_expired;    // domain records removed at their expiry
};

}  // namespace saga::internal
