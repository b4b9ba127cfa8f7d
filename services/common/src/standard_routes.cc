#include "saga/service/standard_routes.h"

#include <memory>
#include <optional>
#include <utility>

namespace saga::service {

void add_standard_routes(Router& router, StandardProbes probes) {
  auto shared = std::make_shared<const StandardProbes>(std::move(probes));

  router.get("/healthz", [](const Request&) { return Response::json(200, {{"status", "ok"}}); });

  router.get("/readyz", [shared](const Request&) {
    std::vector<ReadinessCheck> checks;
    if (shared->readiness) checks = shared->readiness();
    bool ready = true;
    nlohmann::json out = nlohmann::json::array();
    for (const ReadinessCheck& check : checks) {
      nlohmann::json item{{"name", check.name}, {"ok", check.status.ok()}};
      if (!check.status.ok()) {
        ready = false;
        item["code"] = std::string(status_code_name(check.status.code()));
        item["message"] = check.status.message();
      }
      out.push_back(std::move(item));
    }
    return Response::json(ready ? 200 : 503,
                          {{"status", ready ? "ready" : "not ready"}, {"checks", std::move(out)}});
  });

  router.get("/metrics", [shared](const Request& req) {
    if (shared->metrics_guard) {
      if (std::optional<Response> refused = shared->metrics_guard(req)) return std::move(*refused);
    }
    std::string text = shared->metrics ? shared->metrics() : std::string();
    if (!text.empty() && text.back() != '\n') text += '\n';
    text += req.server_metrics_text();
    return Response::text(200, std::move(text), "text/plain; version=0.0.4; charset=utf-8");
  });
}

}  // namespace saga::service
