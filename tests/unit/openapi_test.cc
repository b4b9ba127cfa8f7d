// The OpenAPI description (services/gateway/openapi.json, as built into the
// gateway) against the code: every route the gateway serves is described,
// every described route is served, and below each forwarded prefix the routes
// of the services behind it (their own Routers, built in process) are exactly
// the paths described. So the description cannot fall behind the code
// silently: a new, renamed or removed route fails here until openapi.json says
// so. What the routes answer is checked by e2e.openapi (schemathesis).
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "saga/clock.h"
#include "saga/gateway/gateway.h"
#include "saga/gateway/openapi.h"
#include "saga/inventory/inventory.h"
#include "saga/memory_transport.h"
#include "saga/mypage/mypage.h"
#include "saga/orchestrator.h"
#include "saga/participant.h"
#include "saga/payment/payment.h"
#include "saga/reservation/reservation.h"
#include "saga/service/router.h"
#include "support/temp_dir.h"

namespace saga {
namespace {

using nlohmann::json;
using service::Router;
namespace gw = gateway;

// Paths the description may announce before a service serves them:
// tolerated when missing from the service, checked like any other once
// served. Keep it empty but while such a change is being made.
const std::set<std::string> kAnnounced = {};

// Routes every service has for itself (probes, metrics): not forwarded.
bool is_standard(const std::string& pattern) {
  return pattern == "/healthz" || pattern == "/readyz" || pattern == "/metrics";
}

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  return s;
}

// "GET /a/{id}" for every operation of the description.
std::set<std::string> described(const json& spec) {
  std::set<std::string> out;
  for (const auto& [path, item] : spec.at("paths").items()) {
    for (const auto& [method, operation] : item.items()) {
      if (method == "parameters" || method == "summary" || method == "description") continue;
      out.insert(upper(method) + " " + path);
    }
  }
  return out;
}

// `path` with each {param} replaced by a value, as a client would send it.
std::string concrete(const std::string& path) {
  std::string out;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] != '{') {
      out += path[i];
      continue;
    }
    i = path.find('}', i);
    out += "x-1";
  }
  return out;
}

json load_spec() {
  json spec = json::parse(gw::openapi_json(), nullptr, /*allow_exceptions=*/false);
  REQUIRE_MESSAGE(!spec.is_discarded(), "openapi.json is not JSON");
  REQUIRE(spec.contains("paths"));
  return spec;
}

// The gateway's Router with every route it can have (development tokens on).
Router gateway_router() {
  gw::AuthConfig auth;
  auth.secret = "openapi-test-secret-0123456789abcdef";
  auth.dev_tokens = true;
  auto verifier = gw::TokenVerifier::create(auth);
  REQUIRE(verifier.ok());
  gw::GatewayOptions options;
  options.verifier = *verifier;
  const gw::HostPort nowhere{"127.0.0.1", 1};
  Router router;
  gw::add_routes(router, {{nowhere}, {nowhere}, {nowhere}, {nowhere}}, options);
  return router;
}

// The prefixes the gateway forwards: P registered together with P/{rest...}.
std::vector<std::string> forwarded_prefixes(const Router& router) {
  std::set<std::string> patterns;
  for (const auto& r : router.routes()) patterns.insert(r.pattern);
  std::vector<std::string> out;
  for (const std::string& p : patterns)
    if (patterns.count(p + "/{rest...}")) out.push_back(p);
  return out;
}

bool under(const std::string& path, const std::string& prefix) {
  return path == prefix || path.rfind(prefix + "/", 0) == 0;
}

// The services behind the gateway, each with its own Router, in process over
// a MemoryBus (nothing runs: only their routes are read).
struct Upstreams {
  Upstreams() {
    for (const char* name : {inventory::kParticipantName, payment::kParticipantName}) {
      ParticipantOptions o;
      o.name = name;
      o.data_dir = (dir.path() / name).string();
      o.sync = false;
      auto p = Participant::open(o, std::shared_ptr<Transport>(bus->connect(name)));
      REQUIRE_MESSAGE(p.ok(), p.status().to_string());
      participants.push_back(std::move(*p));
    }
    inventory::add_routes(routers["inventory"], *participants[0]);
    payment::add_routes(routers["payment"], *participants[1]);

    auto defs = reservation::definitions();
    REQUIRE_MESSAGE(defs.ok(), defs.status().to_string());
    Options o;
    o.name = reservation::kServiceName;
    o.data_dir = (dir.path() / "reservation").string();
    o.sync = false;
    auto orch_opened =
        Orchestrator::open(o, std::shared_ptr<Transport>(bus->connect(o.name)), *defs);
    REQUIRE_MESSAGE(orch_opened.ok(), orch_opened.status().to_string());
    orch = std::move(*orch_opened);
    reservation::add_routes(routers["reservation"], *orch);

    auto model_opened = mypage::ReadModel::open((dir.path() / "mypage").string());
    REQUIRE_MESSAGE(model_opened.ok(), model_opened.status().to_string());
    model = std::move(*model_opened);
    mypage::add_routes(routers["mypage"], *model, {});
  }

  testing::TempDir dir;
  std::shared_ptr<MemoryBus> bus = MemoryBus::create(std::make_shared<SystemClock>(), 1);
  std::vector<std::unique_ptr<Participant>> participants;
  std::unique_ptr<Orchestrator> orch;
  std::unique_ptr<mypage::ReadModel> model;
  std::map<std::string, Router> routers;  // by service
};

}  // namespace

TEST_CASE("the description is OpenAPI 3.1 and every operation has an id and responses") {
  const json spec = load_spec();
  CHECK(spec["openapi"] == "3.1.0");
  std::set<std::string> ids;
  for (const auto& [path, item] : spec["paths"].items()) {
    for (const auto& [method, operation] : item.items()) {
      CAPTURE(method + " " + path);
      REQUIRE(operation.contains("operationId"));
      CHECK(ids.insert(operation["operationId"].get<std::string>()).second);  // unique
      CHECK(!operation["responses"].empty());
    }
  }
}

TEST_CASE("every route the gateway serves is described, and every described route is served") {
  const json spec = load_spec();
  const std::set<std::string> ops = described(spec);
  Router router = gateway_router();
  const std::vector<std::string> prefixes = forwarded_prefixes(router);
  REQUIRE(!prefixes.empty());

  // The gateway's own routes, by method and path; a forwarded prefix has at
  // least one described path below it.
  for (const auto& r : router.routes()) {
    const bool forwarded = std::any_of(prefixes.begin(), prefixes.end(), [&](const auto& p) {
      return r.pattern == p || r.pattern == p + "/{rest...}";
    });
    CAPTURE(r.method + " " + r.pattern);
    if (!forwarded) {
      CHECK_MESSAGE(ops.count(r.method + " " + r.pattern), "served but not in openapi.json");
      continue;
    }
    const std::string prefix = r.pattern.substr(0, r.pattern.find("/{rest...}"));
    CHECK_MESSAGE(std::any_of(ops.begin(), ops.end(),
                              [&](const std::string& op) {
                                return under(op.substr(op.find(' ') + 1), prefix);
                              }),
                  "forwarded, yet openapi.json describes nothing below " << prefix);
  }
  // Each described operation reaches a handler: neither the router's 404
  // nor its 405. Nothing is forwarded: without a token the gateway answers
  // 401 itself, and without an HttpServer it cannot forward (500).
  for (const std::string& op : ops) {
    CAPTURE(op);
    const std::string method = op.substr(0, op.find(' '));
    service::Request req(method, concrete(op.substr(op.find(' ') + 1)));
    const int status = router.handle(req).status();
    CHECK_MESSAGE((status != 404 && status != 405), "in openapi.json but not served: " << status);
  }
}

TEST_CASE("below each forwarded prefix, the services' routes are exactly the described paths") {
  const json spec = load_spec();
  const std::set<std::string> ops = described(spec);
  const std::vector<std::string> prefixes = forwarded_prefixes(gateway_router());
  auto forwarded = [&](const std::string& path) {
    return std::any_of(prefixes.begin(), prefixes.end(),
                       [&](const std::string& p) { return under(path, p); });
  };

  Upstreams services;
  std::set<std::string> served;
  for (const auto& [name, router] : services.routers) {
    for (const auto& r : router.routes()) {
      if (is_standard(r.pattern)) continue;
      const std::string op = r.method + " " + r.pattern;
      CAPTURE(name);
      CAPTURE(op);
      CHECK_MESSAGE(forwarded(r.pattern), "served by " << name << ", not forwarded by the gateway");
      CHECK_MESSAGE(ops.count(op), "served by " << name << " but not in openapi.json");
      served.insert(op);
    }
  }
  REQUIRE(served.size() > 10);
  for (const std::string& op : ops) {
    if (!forwarded(op.substr(op.find(' ') + 1)) || kAnnounced.count(op)) continue;
    CAPTURE(op);
    CHECK_MESSAGE(served.count(op), "in openapi.json, but no service behind the gateway has it");
  }
}

}  // namespace saga
