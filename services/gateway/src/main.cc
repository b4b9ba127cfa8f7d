// saga-gateway: the single entry point; forwards by path prefix to the services,
// and serves the web UI under /ui/ (saga/gateway/ui.h).
//   PORT (8080), RESERVATION_ADDR (127.0.0.1:8082), PAYMENT_ADDR (127.0.0.1:8083),
//   INVENTORY_ADDR (127.0.0.1:8084), MYPAGE_ADDR (127.0.0.1:8086) (each host:port, or a
//   comma-separated list of replicas balanced round robin), UPSTREAM_TIMEOUT_MS
//   (10000), UPSTREAM_CONNECT_TIMEOUT_MS (2000), UPSTREAM_MAX_IN_FLIGHT (256),
//   RATE_LIMIT_{IDENTITY,ADDRESS}_{RPS,BURST} (50/100, 500/1000), TRUSTED_PROXIES (none:
//   comma-separated IPs whose X-Forwarded-For the per-address limit reads), LOG_LEVEL, HTTP_*
//   (see http_server.h; HTTP_HOST 127.0.0.1), TLS_CERT_FILE + TLS_KEY_FILE (HTTPS; default
//   plain HTTP), AUTH_* (token keys; see auth.h: the
//   gateway does not start without one, or AUTH_DEV_TOKENS=1 for local use).
#include <spdlog/spdlog.h>

#include <utility>

#include "saga/gateway/gateway.h"
#include "saga/gateway/ui.h"
#include "saga/service/command_line.h"
#include "saga/service/http_server.h"
#include "saga/service/logging.h"

int main(int argc, char** argv) {
  if (auto rc = saga::service::handle_command_line("saga-gateway", argc, argv)) return *rc;
  using namespace saga::service;
  namespace gw = saga::gateway;
  ShutdownSignal signals;
  if (saga::Status s = setup_logging(gw::kServiceName); !s.ok()) spdlog::warn("{}", s.message());
  auto server_options = ServerOptions::from_env(gw::kDefaultPort);
  if (!server_options.ok()) {
    spdlog::critical("{}", server_options.status().message());
    return 2;
  }
  auto upstreams = gw::upstreams_from_env();
  if (!upstreams.ok()) {
    spdlog::critical("{}", upstreams.status().message());
    return 2;
  }
  auto options = gw::gateway_options_from_env();
  if (!options.ok()) {
    spdlog::critical("{}", options.status().message());
    return 2;
  }

  Router router;
  gw::add_routes(router, *upstreams, *options);
  gw::add_ui_routes(router);  // the web UI under /ui/ (docs/ui.md)
  HttpServer server(*server_options, std::move(router));
  if (saga::Status s = server.start(); !s.ok()) {
    spdlog::critical("http: {}", s.to_string());
    return 1;
  }
  spdlog::info(
      "upstreams: reservation {}; payment {}; inventory {}; mypage {}",
      gw::replicas_to_string(upstreams->reservation), gw::replicas_to_string(upstreams->payment),
      gw::replicas_to_string(upstreams->inventory), gw::replicas_to_string(upstreams->mypage));
  spdlog::info(
      "limits: {} req/s (burst {}) per identity, {} req/s (burst {}) per address (0: off), {} "
      "in flight per upstream, {} connections",
      options->identity_limit.rate, options->identity_limit.burst, options->address_limit.rate,
      options->address_limit.burst, options->max_in_flight, server_options->max_connections);
  if (options->trusted_proxies.empty()) {
    spdlog::info("X-Forwarded-For is not read (TRUSTED_PROXIES not set)");
  } else {
    std::string proxies;
    for (const auto& ip : options->trusted_proxies) proxies += (proxies.empty() ? "" : ", ") + ip;
    spdlog::info("X-Forwarded-For is read from the trusted proxies {}", proxies);
  }
  const auto& auth = options->verifier->config();
  spdlog::info("tokens: {} ({} key(s)), clock skew {} s", gw::to_string(auth.algorithm),
               auth.public_keys.empty() ? 1 : auth.public_keys.size(), auth.leeway.count());
  if (auth.dev_tokens) {
    spdlog::warn(
        "AUTH_DEV_TOKENS is on: POST /auth/dev-token hands out tokens for anyone, admin "
        "included. For local use only.");
  }
  spdlog::info("gateway listening on {}:{} ({})", server_options->host, server.port(),
               server_options->tls_cert_file.empty() ? "plain HTTP: TLS_CERT_FILE not set"
                                                     : "HTTPS");
  const int sig = stop_on_signal(server, signals);  // drains in-flight requests
  spdlog::info("signal {}: HTTP stopped", sig);
  return 0;
}
