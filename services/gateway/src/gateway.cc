#include "saga/gateway/gateway.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <charconv>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

#include "saga/service/config.h"
#include "saga/service/http_client.h"
#include "saga/service/http_message.h"
#include "saga/service/identity.h"
#include "saga/service/standard_routes.h"

namespace saga::gateway {
namespace {

using Clock = std::chrono::steady_clock;
using service::ClientOptions;
using service::ClientResponse;
using service::Headers;
using service::HttpClient;
using service::Identity;
using service::Request;
using service::Response;

// The methods forwarded; GET routes also answer HEAD.
constexpr std::array<const char*, 5> kMethods = {"GET", "POST", "PUT", "PATCH", "DELETE"};

// What became of one forwarded request (a metrics label).
enum Outcome : size_t { kResponded = 0, kUnreachable, kTimedOut, kBadResponse, kOutcomeCount };
constexpr std::array<const char*, kOutcomeCount> kOutcomeNames = {"response", "unavailable",
                                                                  "timeout", "bad_response"};

// Response headers copied back from the upstream besides Content-Type.
constexpr std::array<const char*, 3> kCopiedBack = {"Location", "Retry-After", "Allow"};

bool is_idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" ||
         method == "OPTIONS";
}

// One upstream service: its address, a pool of idle keep-alive clients and
// counters. Thread-safe.
class Upstream {
 public:
  Upstream(std::string name, HostPort address, const GatewayOptions& options)
      : name_(std::move(name)), address_(std::move(address)), options_(options) {
    client_options_.connect_timeout = options.connect_timeout;
    client_options_.request_timeout = options.request_timeout;
    client_options_.body_limit = options.response_body_limit;
  }

  const std::string& name() const { return name_; }

  // Sends `req` on, as `who` (nobody: a public route without a token), and
  // turns the answer (or the failure) into the response.
  Response forward(const Request& req, const std::optional<Identity>& caller) {
    // An allow-list: Authorization and the identity headers a client sends
    // never go upstream; the identity comes from the verified token alone.
    Headers headers;
    for (const char* name : {"Content-Type", "Accept", "tracestate", "Idempotency-Key"}) {
      if (auto value = req.header(name)) headers.emplace_back(name, std::string(*value));
    }
    if (caller) {
      for (auto& h : service::identity_headers(*caller)) headers.push_back(std::move(h));
    }
    headers.emplace_back("X-Request-Id", req.request_id());
    headers.emplace_back("traceparent", req.trace().child().to_string());
    // HEAD goes up as GET so that the server can answer the real Content-Length.
    const std::string method = req.method() == "HEAD" ? "GET" : req.method();
    std::string target = req.path();
    if (auto q = req.target().find('?'); q != std::string::npos) target += req.target().substr(q);

    std::unique_ptr<HttpClient> client = acquire();
    StatusOr<ClientResponse> res = client->request(method, target, headers, req.body());
    release(std::move(client));

    if (res.ok()) {
      count(kResponded);
      auto content_type = res->header("Content-Type");
      Response out = Response::text(
          res->status, std::move(res->body),
          content_type ? std::string(*content_type) : std::string("application/octet-stream"));
      for (const char* name : kCopiedBack) {
        if (auto value = res->header(name)) out.set_header(name, std::string(*value));
      }
      return out;
    }

    const Status& s = res.status();
    const std::string who = "upstream " + name_ + " (" + address_.to_string() + ")";
    int status = 502;
    std::string detail;
    if (s.code() == StatusCode::kUnavailable) {
      count(kUnreachable);
      status = 503;
      detail = who + " is not reachable: " + s.message();
    } else if (s.code() == StatusCode::kDeadlineExceeded) {
      count(kTimedOut);
      status = 504;
      detail = who + " did not answer in time: " + s.message();
      if (!is_idempotent(req.method())) {
        detail += "; the " + req.method() +
                  " may or may not have been applied: check before sending it again";
      }
    } else {
      count(kBadResponse);
      detail = who + " sent a malformed or oversized response: " + s.message();
    }
    spdlog::warn("{} {}: HTTP {}: {} (requestId {})", req.method(), target, status, detail,
                 req.request_id());
    Response out = Response::problem(status, std::string(service::reason_phrase(status)), detail);
    if (status == 503) out.set_header("Retry-After", "1");
    return out;
  }

  // OK when the upstream's /readyz answers 200 within readiness_timeout.
  Status check_ready() const {
    ClientOptions o;
    o.connect_timeout = options_.readiness_timeout;
    o.request_timeout = options_.readiness_timeout;
    o.body_limit = 64 * 1024;
    HttpClient client(address_.host, address_.port, o);
    auto res = client.get("/readyz");
    const std::string where = address_.to_string();
    if (!res.ok()) return Status(res.status().code(), where + ": " + res.status().message());
    if (res->status != 200) {
      return Status::unavailable(where + ": /readyz answered " + std::to_string(res->status));
    }
    return ok_status();
  }

  // Prometheus sample lines of this upstream's counters.
  std::string metrics_lines() const {
    std::string out;
    for (size_t i = 0; i < kOutcomeCount; ++i) {
      out += "gateway_upstream_requests_total{upstream=\"" + name_ + "\",outcome=\"" +
             kOutcomeNames[i] + "\"} " + std::to_string(counts_[i].load()) + "\n";
    }
    return out;
  }

 private:
  struct Idle {
    std::unique_ptr<HttpClient> client;
    Clock::time_point since;
  };

  void count(Outcome outcome) { counts_[outcome].fetch_add(1, std::memory_order_relaxed); }

  // The most recently used idle client, or a new one. Clients idle for longer
  // than max_idle_time are dropped: the upstream may have closed them.
  std::unique_ptr<HttpClient> acquire() {
    std::vector<Idle> stale;
    std::unique_ptr<HttpClient> client;
    {
      std::lock_guard lock(mu_);
      const auto now = Clock::now();
      while (!idle_.empty()) {
        Idle last = std::move(idle_.back());
        idle_.pop_back();
        if (now - last.since <= options_.max_idle_time) {
          client = std::move(last.client);
          break;
        }
        stale.push_back(std::move(last));  // closed outside the lock
      }
    }
    if (!client)
      client = std::make_unique<HttpClient>(address_.host, address_.port, client_options_);
    return client;
  }

  void release(std::unique_ptr<HttpClient> client) {
    std::lock_guard lock(mu_);
    if (idle_.size() < options_.max_idle_connections) {
      idle_.push_back({std::move(client), Clock::now()});
    }
  }

  const std::string name_;
  const HostPort address_;
  const GatewayOptions options_;
  ClientOptions client_options_;
  std::mutex mu_;
  std::vector<Idle> idle_;  // oldest first
  std::array<std::atomic<uint64_t>, kOutcomeCount> counts_{};
};

// The public catalogue: GET (and HEAD) of /places/{id} and
// /places/{id}/availability answer without a token.
bool is_public(const Request& req) {
  if (req.method() != "GET" && req.method() != "HEAD") return false;
  std::string_view path = req.path();
  constexpr std::string_view kPlaces = "/places/";
  if (path.substr(0, kPlaces.size()) != kPlaces) return false;
  path.remove_prefix(kPlaces.size());
  const size_t slash = path.find('/');
  if (slash == 0) return false;
  return slash == std::string_view::npos || path.substr(slash) == "/availability";
}

// The caller of a request, or the 401 that refuses it.
struct Caller {
  std::optional<Identity> who;
  std::optional<Response> refused;
};

// Every upstream and the token verifier, shared by the route handlers.
struct Gateway {
  std::vector<std::unique_ptr<Upstream>> upstreams;
  std::shared_ptr<const TokenVerifier> verifier;

  // Who sends `req`: its verified bearer token; nobody for a public route
  // without a token; else a 401. A bad token is refused even on a public route.
  Caller authenticate(const Request& req, bool public_route) const {
    auto header = req.header("Authorization");
    if (!header) {
      if (public_route) return {};
      return {std::nullopt, service::unauthenticated(
                                "authentication required: send Authorization: Bearer <JWT>")};
    }
    std::string_view value = *header;
    constexpr std::string_view kScheme = "bearer ";
    std::string scheme(value.substr(0, kScheme.size()));
    std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (scheme != kScheme) {
      return {std::nullopt,
              service::unauthenticated("the Authorization header must be 'Bearer <JWT>'", true)};
    }
    value.remove_prefix(kScheme.size());
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
    if (!verifier) {
      return {std::nullopt,
              service::unauthenticated("this gateway has no token key configured", true)};
    }
    auto who = verifier->verify(value);
    if (!who.ok()) {
      spdlog::debug("{} {}: token refused: {} (requestId {})", req.method(), req.path(),
                    who.status().message(), req.request_id());
      return {std::nullopt, service::unauthenticated(who.status().message(), true)};
    }
    return {std::move(*who), std::nullopt};
  }
};

// Registers `prefix` and everything below it for every forwarded method.
void forward_prefix(service::Router& router, const std::string& prefix,
                    const std::shared_ptr<Gateway>& gateway, Upstream* upstream) {
  for (const std::string& pattern : {prefix, prefix + "/{rest...}"}) {
    for (const char* method : kMethods) {
      router.route(method, pattern, [gateway, upstream](const Request& req) {
        Caller caller = gateway->authenticate(req, is_public(req));
        if (caller.refused) return std::move(*caller.refused);
        return upstream->forward(req, caller.who);
      });
    }
  }
}

// POST /auth/dev-token {"sub", "roles"}: a token for anyone, for local use.
Response dev_token(const TokenVerifier& verifier, const nlohmann::json& body) {
  auto bad = [](std::string detail) {
    return Response::problem(400, "Bad Request", std::move(detail));
  };
  if (!body.is_object()) return bad("body must be an object {\"sub\", \"roles\"}");
  auto sub = body.find("sub");
  if (sub == body.end() || !sub->is_string()) return bad("'sub' must be a string");
  Identity who{sub->get<std::string>(), {}};
  if (Status s = service::check_subject(who.subject); !s.ok()) return bad("'sub': " + s.message());
  std::vector<std::string> roles;
  if (auto r = body.find("roles"); r != body.end()) {
    if (!r->is_array()) return bad("'roles' must be an array of guest, owner, admin");
    for (const auto& role : *r) {
      if (!role.is_string()) return bad("'roles' must be an array of guest, owner, admin");
      roles.push_back(role.get<std::string>());
    }
  } else {
    roles.push_back(service::kRoleGuest);
  }
  who.roles = service::known_roles(roles);
  if (who.roles.size() != std::set<std::string>(roles.begin(), roles.end()).size())
    return bad("'roles' may hold only guest, owner and admin");
  auto token = verifier.issue(who);
  if (!token.ok()) return Response::from_status(token.status());
  return Response::json(200, {{"token", *token},
                              {"tokenType", "Bearer"},
                              {"expiresIn", verifier.config().dev_token_ttl.count()}});
}

}  // namespace

StatusOr<Upstreams> upstreams_from_env() {
  Upstreams out;
  for (auto [variable, field] :
       {std::pair{"RESERVATION_ADDR", &out.reservation}, std::pair{"PAYMENT_ADDR", &out.payment},
        std::pair{"INVENTORY_ADDR", &out.inventory}, std::pair{"MYPAGE_ADDR", &out.mypage}}) {
    std::string text = service::env_string(variable, "");
    if (text.empty()) continue;
    auto parsed = parse_host_port(variable, text);
    if (!parsed.ok()) return parsed.status();
    *field = std::move(*parsed);
  }
  return out;
}

StatusOr<GatewayOptions> gateway_options_from_env() {
  using std::chrono::milliseconds;
  GatewayOptions out;
  auto timeout = service::env_duration_ms("UPSTREAM_TIMEOUT_MS", out.request_timeout,
                                          milliseconds(1), milliseconds(3'600'000));
  if (!timeout.ok()) return timeout.status();
  out.request_timeout = *timeout;
  auto connect = service::env_duration_ms("UPSTREAM_CONNECT_TIMEOUT_MS", out.connect_timeout,
                                          milliseconds(1), milliseconds(600'000));
  if (!connect.ok()) return connect.status();
  out.connect_timeout = *connect;
  auto auth = auth_config_from_env();
  if (!auth.ok()) return auth.status();
  auto verifier = TokenVerifier::create(std::move(*auth));
  if (!verifier.ok()) return verifier.status();
  out.verifier = std::move(*verifier);
  return out;
}

void add_routes(service::Router& router, const Upstreams& upstreams, GatewayOptions options) {
  auto gateway = std::make_shared<Gateway>();
  gateway->verifier = options.verifier;
  auto add = [&](std::string name, const HostPort& address,
                 std::initializer_list<const char*> prefixes) {
    gateway->upstreams.push_back(std::make_unique<Upstream>(std::move(name), address, options));
    for (const char* prefix : prefixes) {
      forward_prefix(router, prefix, gateway, gateway->upstreams.back().get());
    }
  };
  add("reservation", upstreams.reservation, {"/reservations", "/accommodations"});
  add("payment", upstreams.payment, {"/payments"});
  add("inventory", upstreams.inventory, {"/places", "/owners", "/reservationManagements"});
  add("mypage", upstreams.mypage, {"/mypages"});
  if (gateway->verifier && gateway->verifier->config().dev_tokens) {
    router.post("/auth/dev-token",
                service::with_json_body([gateway](const Request&, const nlohmann::json& body) {
                  return dev_token(*gateway->verifier, body);
                }));
  }

  service::add_standard_routes(
      router,
      {.readiness =
           [gateway] {
             // Probed side by side so that one slow upstream costs one timeout.
             std::vector<std::future<Status>> pending;
             for (const auto& upstream : gateway->upstreams) {
               pending.push_back(std::async(std::launch::async,
                                            [u = upstream.get()] { return u->check_ready(); }));
             }
             std::vector<service::ReadinessCheck> checks;
             for (size_t i = 0; i < pending.size(); ++i) {
               checks.push_back({gateway->upstreams[i]->name(), pending[i].get()});
             }
             return checks;
           },
       .metrics =
           [gateway] {
             std::string out =
                 "# HELP gateway_upstream_requests_total Requests forwarded to each upstream, by "
                 "outcome.\n# TYPE gateway_upstream_requests_total counter\n";
             for (const auto& upstream : gateway->upstreams) out += upstream->metrics_lines();
             return out;
           },
       .metrics_guard = [gateway](const Request& req) -> std::optional<Response> {
         Caller caller = gateway->authenticate(req, false);
         if (caller.refused) return std::move(caller.refused);
         if (!caller.who->is_admin()) return service::forbidden("/metrics needs the admin role");
         return std::nullopt;
       }});
}

}  // namespace saga::gateway
