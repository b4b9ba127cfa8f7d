#include "metrics.h"

#include <prometheus/text_serializer.h>

namespace saga::internal {

EngineMetrics::EngineMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      started_(prometheus::BuildCounter()
                   .Name("saga_started_total")
                   .Help("Sagas started")
                   .Register(*registry_)),
      completed_(prometheus::BuildCounter()
                     .Name("saga_completed_total")
                     .Help("Sagas completed")
                     .Register(*registry_)),
      compensated_(prometheus::BuildCounter()
                       .Name("saga_compensated_total")
                       .Help("Sagas that ended compensated (rejected or cancelled)")
                       .Register(*registry_)),
      failed_(prometheus::BuildCounter()
                  .Name("saga_failed_total")
                  .Help("Sagas parked as Failed after a compensation kept failing")
                  .Register(*registry_)),
      aborted_(prometheus::BuildCounter()
                   .Name("saga_aborted_total")
                   .Help("Sagas aborted by an operator")
                   .Register(*registry_)),
      step_latency_(prometheus::BuildHistogram()
                        .Name("saga_step_latency_seconds")
                        .Help("Time from a step's first send to its outcome")
                        .Register(*registry_)),
      breaker_(prometheus::BuildGauge()
                   .Name("saga_breaker_state")
                   .Help("Circuit breaker per participant: 0 closed, 1 open, 2 half-open")
                   .Register(*registry_)),
      restore_records_(prometheus::BuildCounter()
                           .Name("saga_restore_records_total")
                           .Help("Changelog records applied by shard restores")
                           .Register(*registry_)),
      restore_seconds_(prometheus::BuildGauge()
                           .Name("saga_restore_seconds")
                           .Help("Duration of the last restore of a shard from its changelog")
                           .Register(*registry_)),
      engine_gauges_(
          prometheus::BuildGauge().Name("saga_engine").Help("Engine gauges").Register(*registry_)),
      engine_counters_(prometheus::BuildCounter()
                           .Name("saga_engine_events_total")
                           .Help("Engine events")
                           .Register(*registry_)),
      in_flight(engine_gauges_.Add({{"gauge", "in_flight"}})),
      parked(engine_gauges_.Add({{"gauge", "failed_parked"}})),
      outbox_depth(engine_gauges_.Add({{"gauge", "outbox_depth"}})),
      shards_owned(engine_gauges_.Add({{"gauge", "shards_owned"}})),
      standby_records(engine_gauges_.Add({{"gauge", "standby_records"}})),
      store_bytes(engine_gauges_.Add({{"gauge", "store_bytes"}})),
      store_keys(engine_gauges_.Add({{"gauge", "store_keys"}})),
      transitions(engine_counters_.Add({{"event", "transition"}})),
      writes(engine_counters_.Add({{"event", "store_write"}})),
      stale_replies(engine_counters_.Add({{"event", "stale_reply"}})),
      timers_fired(engine_counters_.Add({{"event", "timer_fired"}})),
      retention_removed(engine_counters_.Add({{"event", "retention_removed"}})),
      records_expired(engine_counters_.Add({{"event", "records_expired"}})) {}

prometheus::Histogram& EngineMetrics::step_latency(const std::string& type,
                                                   const std::string& step) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60};
  return step_latency_.Add({{"type", type}, {"step", step}}, kBuckets);
}

std::string EngineMetrics::text() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace saga::internal
