// The gateway: the single entry point of the reference system. No state, no
// Kafka: it forwards each request by path prefix to the service that owns it.
//
//   /reservations[/...], /accommodations[/...],
//   /admin/sagas[/...], /admin/saga-counts[/...]                -> reservation
//   /payments[/...]                                             -> payment
//   /places[/...], /owners[/...], /reservationManagements[/...] -> inventory
//   /mypages[/...]                                              -> mypage
//
// Forwarded: method (HEAD is sent upstream as GET), path and query string,
// body, Content-Type, Accept, X-Request-Id and a child traceparent (same trace,
// new span). Copied back: status, body, Content-Type, Location, Retry-After.
// An upstream may have several replicas (a comma-separated *_ADDR): requests
// go round robin over them, and one that cannot be connected to (refused,
// reset, connect timeout: nothing was sent) is skipped for the next one and
// avoided for a second (ReplicaSet). Only when every replica fails is the
// request answered with a failure.
// Upstream failures are application/problem+json naming the upstream:
//   not reachable (refused, reset)      -> 503 with Retry-After: 1
//   max_in_flight requests already out  -> 503 with Retry-After: 1
//   no answer within the timeout        -> 504 (a POST may or may not have been applied)
//   malformed or oversized response     -> 502
//
// GET /openapi.json answers the OpenAPI 3.1 description of every route
// (openapi.h), without a token.
//
// Identity (docs/security.md): every route but /healthz, /readyz, /openapi.json
// and the public catalogue (GET /places/{id} and /places/{id}/availability) needs
// `Authorization: Bearer <JWT>`, verified by a TokenVerifier (auth.h); a
// missing, malformed, expired, wrongly signed or wrongly typed token is a 401
// problem with WWW-Authenticate. The verified caller goes upstream in
// X-Saga-Subject and X-Saga-Roles (saga/service/identity.h), set by the
// gateway only: whatever a client sends under those names (and its
// Authorization header) is never forwarded. /metrics needs the admin role.
// POST /auth/dev-token exists only with AuthConfig::dev_tokens.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "saga/gateway/auth.h"
#include "saga/gateway/rate_limit.h"
#include "saga/service/config.h"
#include "saga/service/router.h"
#include "saga/status.h"

namespace saga::gateway {

inline constexpr char kServiceName[] = "gateway";
/// The gateway's port when PORT is unset.
inline constexpr uint16_t kDefaultPort = 8080;

using service::HostPort;
using service::parse_host_port;

/// The replicas of one upstream service, in the order configured; never empty
/// where the gateway uses it.
using Replicas = std::vector<HostPort>;

/// Where the gateway forwards to: one or more replicas per upstream.
struct Upstreams {
  Replicas reservation{HostPort{"127.0.0.1", 8082}};
  Replicas payment{HostPort{"127.0.0.1", 8083}};
  Replicas inventory{HostPort{"127.0.0.1", 8084}};
  Replicas mypage{HostPort{"127.0.0.1", 8086}};
};

/// The replicas of a comma-separated list of host:port (parse_host_port), e.g.
/// "127.0.0.1:8082,127.0.0.1:8182"; blanks around the commas are allowed.
/// InvalidArgument naming `variable` for an empty list or entry, a bad entry,
/// or an address listed twice.
StatusOr<Replicas> parse_replicas(std::string_view variable, std::string_view text);

/// "host:port, host:port, ...": the replicas for logs and messages.
std::string replicas_to_string(const Replicas& replicas);

/// Upstreams from RESERVATION_ADDR, PAYMENT_ADDR, INVENTORY_ADDR and MYPAGE_ADDR
/// (parse_replicas: host:port, or several separated by commas; unset or empty
/// keeps the default above). InvalidArgument naming the first bad variable.
StatusOr<Upstreams> upstreams_from_env();

/// The round robin over the replicas of one upstream. Each request gets every
/// replica once, in order(); the gateway goes on to the next one only when it
/// could not connect (nothing was sent, so any method may go on). A replica
/// that could not be connected to is avoided for `avoid_for`: it comes last in
/// order() until then, so that a request still reaches it when every replica
/// is avoided. Thread-safe, without locks.
class ReplicaSet {
 public:
  using Clock = std::chrono::steady_clock;
  using Now = std::function<Clock::time_point()>;

  /// REQUIRES: `replicas` is not empty. `now` is the clock (tests inject one);
  /// default the steady clock.
  explicit ReplicaSet(Replicas replicas,
                      std::chrono::milliseconds avoid_for = std::chrono::seconds(1), Now now = {});

  const Replicas& replicas() const noexcept { return replicas_; }
  size_t size() const noexcept { return replicas_.size(); }

  /// Indexes into replicas() for the next request: every replica once,
  /// starting one further than the previous call did; the avoided ones (in
  /// the same rotation) after the others.
  std::vector<size_t> order();
  /// Replica `i` could not be connected to: avoided for avoid_for from now.
  void failed(size_t i);
  /// Replica `i` accepted a connection: no longer avoided.
  void connected(size_t i);
  /// Whether replica `i` is avoided now.
  bool avoided(size_t i) const;

 private:
  const Replicas replicas_;
  const std::chrono::milliseconds avoid_for_;
  const Now now_;
  std::atomic<uint64_t> next_{0};
  // Per replica: until when (the clock's ticks) it is avoided; 0 = not avoided.
  const std::unique_ptr<std::atomic<int64_t>[]> avoided_until_;
};

/// How the gateway talks to its upstreams.
struct GatewayOptions {
  /// Longest time to send a request upstream and read its whole response;
  /// then 504. UPSTREAM_TIMEOUT_MS, default 10 s.
  std::chrono::milliseconds request_timeout{10'000};
  /// Longest time to connect to an upstream; then 504.
  /// UPSTREAM_CONNECT_TIMEOUT_MS, default 2 s.
  std::chrono::milliseconds connect_timeout{2'000};
  /// Longest wait for an upstream's /readyz (connect included) during GET /readyz.
  /// Default 1 s.
  std::chrono::milliseconds readiness_timeout{1'000};
  /// How long a replica the gateway could not connect to is avoided
  /// (ReplicaSet). Default 1 s.
  std::chrono::milliseconds replica_avoid_for{1'000};
  /// The ReplicaSets' clock (tests inject one). Default the steady clock.
  ReplicaSet::Now replica_clock;
  /// Largest upstream response body; more is answered 502. Default 8 MiB.
  size_t response_body_limit = 8 * 1024 * 1024;
  /// Most requests out to one upstream at once; more are answered 503 with
  /// Retry-After: 1 without being sent. UPSTREAM_MAX_IN_FLIGHT, default 256.
  size_t max_in_flight = 256;
  /// Requests per second (and burst) each token subject may send; over it,
  /// 429 with Retry-After. Counted after the token is verified, so only
  /// authenticated routes. RATE_LIMIT_IDENTITY_RPS (0 = off) and
  /// RATE_LIMIT_IDENTITY_BURST; default 50/s, burst 100.
  RateLimit identity_limit{50, 100};
  /// Requests per second (and burst) from one client IP address, on every
  /// forwarded route and POST /auth/dev-token, before the token is looked at
  /// (token guessing counts). RATE_LIMIT_ADDRESS_RPS (0 = off) and
  /// RATE_LIMIT_ADDRESS_BURST; default 500/s, burst 1000.
  RateLimit address_limit{500, 1000};
  /// The proxies in front of the gateway, by IP address (normalized, as
  /// parse_trusted_proxies returns them). Only a request whose TCP peer is one
  /// of them has its X-Forwarded-For read, for the per-address limit (see
  /// client_address); from anyone else the header is ignored. TRUSTED_PROXIES
  /// (comma-separated IP addresses); default none: X-Forwarded-For is never read.
  std::vector<std::string> trusted_proxies;
  /// The rate limits' clock (tests inject one). Default the steady clock.
  RateLimiter::Now rate_clock;
  /// Verifies bearer tokens (and issues development tokens when its config
  /// says dev_tokens). Default null: every route that needs a token answers 401.
  std::shared_ptr<const TokenVerifier> verifier;
};

/// The IP addresses of a comma-separated list ("10.0.0.1, ::1"), each in its
/// normal text form (an IPv4-mapped IPv6 address as IPv4). Blanks around the
/// commas are allowed; an empty list is none. InvalidArgument naming the first
/// entry that is not an IP address (no names, ports or CIDR ranges).
StatusOr<std::vector<std::string>> parse_trusted_proxies(std::string_view list);

/// The address the per-address rate limit counts a request against. `peer` (the
/// TCP peer) unless it is one of `trusted_proxies`; then X-Forwarded-For
/// (`forwarded_for`: the values of every such header field, in order, read as
/// one comma-separated list) is read from the right: the rightmost address that
/// is not a trusted proxy is the client (every address trusted: the leftmost).
/// Addresses left of it are the client's to write and are not read. No
/// header, an empty entry or one that is not an IP address where it is read:
/// `peer`. Addresses come back in the normal form of parse_trusted_proxies.
std::string client_address(std::string_view peer,
                           const std::vector<std::string_view>& forwarded_for,
                           const std::vector<std::string>& trusted_proxies);

/// GatewayOptions from UPSTREAM_TIMEOUT_MS (1..3600000),
/// UPSTREAM_CONNECT_TIMEOUT_MS (1..600000), UPSTREAM_MAX_IN_FLIGHT
/// (1..1000000), RATE_LIMIT_{IDENTITY,ADDRESS}_RPS (0..1000000, 0 = off) and
/// RATE_LIMIT_{IDENTITY,ADDRESS}_BURST (1..10000000), TRUSTED_PROXIES
/// (parse_trusted_proxies), and the verifier from
/// the AUTH_* variables (auth_config_from_env); the rest default.
/// InvalidArgument naming the bad variable.
StatusOr<GatewayOptions> gateway_options_from_env();

/// Registers the forwarding routes (GET/HEAD, POST, PUT, PATCH, DELETE, OPTIONS
/// on each prefix and everything below it), POST /auth/dev-token when the verifier's
/// config has dev_tokens ({"sub", "roles"} -> 200 {"token", "expiresIn"}),
/// GET /openapi.json (openapi_json(), public), and the standard routes:
/// /healthz, /readyz (200 when every upstream has a replica whose /readyz answers 200 within
/// readiness_timeout, else 503; one check per upstream, named after it) and
/// /metrics (the server's own metrics plus
/// gateway_upstream_requests_total{upstream,outcome} and
/// gateway_upstream_failovers_total{upstream}).
/// Forwarding is asynchronous on the serving HttpServer's io_context (one
/// connection per forwarded request): a slow upstream holds no thread, only
/// its own in-flight slots (max_in_flight, then 503). Over a rate limit: 429
/// problem+json with Retry-After. The handlers are thread-safe. Throws std::invalid_argument (like
/// Router::route) when one of the routes is already registered.
void add_routes(service::Router& router, const Upstreams& upstreams, GatewayOptions options = {});

}  // namespace saga::gateway
