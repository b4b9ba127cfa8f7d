// The endpoints every service has: /healthz, /readyz and /metrics.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "saga/service/router.h"
#include "saga/status.h"

namespace saga::service {

/// One named readiness check and its outcome, e.g. {"store", ok_status()}.
struct ReadinessCheck {
  std::string name;
  saga::Status status;
};

/// What the standard endpoints report. Both functions run on a server I/O
/// thread for each probe or scrape, so they must be thread-safe and quick.
struct StandardProbes {
  /// Readiness checks for GET /readyz (store open, broker reachable, ...).
  /// Empty function: always ready. Default empty.
  std::function<std::vector<ReadinessCheck>()> readiness;
  /// Prometheus text for GET /metrics besides the server's own HTTP metrics
  /// (e.g. Orchestrator::metrics_text()). Empty function: none. Default empty.
  std::function<std::string()> metrics;
  /// Runs before GET /metrics is answered; a response it returns (e.g. a 401)
  /// is sent instead of the metrics. Empty function: /metrics is open. Default empty.
  std::function<std::optional<Response>(const Request&)> metrics_guard = {};
};

/// Registers on `router`:
///   GET /healthz  liveness: always 200 {"status":"ok"} while the process serves HTTP.
///   GET /readyz   200 {"status":"ready","checks":[...]} when every check is OK, else
///                 503 {"status":"not ready","checks":[...]}; each check is
///                 {"name","ok"[,"code","message"]}.
///   GET /metrics  text/plain; version=0.0.4: probes.metrics() followed by the
///                 serving HttpServer's metrics (Request::server_metrics_text()).
/// Throws std::invalid_argument (like Router::route) if one is already registered.
void add_standard_routes(Router& router, StandardProbes probes);

}  // namespace saga::service
