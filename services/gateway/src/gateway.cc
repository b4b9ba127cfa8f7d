#include "saga/gateway/gateway.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <charconv>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "saga/gateway/openapi.h"
#include "saga/service/config.h"
#include "saga/service/http_client.h"
#include "saga/service/http_message.h"
#include "saga/service/identity.h"
#include "saga/service/standard_routes.h"

namespace saga::gateway {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using service::ClientOptions;
using service::ClientResponse;
using service::Headers;
using service::HttpClient;
using service::Identity;
using service::Request;
using service::Response;

// The methods forwarded; GET routes also answer HEAD. OPTIONS too, so that the
// upstream, which knows its routes, answers a method it lacks (405 with its
// own Allow) rather than the gateway, which would allow every one of these.
constexpr std::array<const char*, 6> kMethods = {"GET", "POST", "PUT", "PATCH", "DELETE",
                                                 "OPTIONS"};

// What became of one forwarded request (a metrics label).
enum Outcome : size_t {
  kResponded = 0,
  kUnreachable,
  kTimedOut,
  kBadResponse,
  kBusy,
  kOutcomeCount
};
constexpr std::array<const char*, kOutcomeCount> kOutcomeNames = {
    "response", "unavailable", "timeout", "bad_response", "busy"};

// Response headers copied back from the upstream besides Content-Type.
constexpr std::array<const char*, 4> kCopiedBack = {"Location", "Retry-After", "Allow",
                                                    "Next-Page-Token"};

bool is_idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" ||
         method == "OPTIONS";
}

// One forwarded request, on the HTTP server's io_context: resolve (for a host
// name), connect within connect_timeout, then write the request and read the
// whole response within request_timeout. A replica that cannot be resolved or
// connected to is skipped for the next one in `order` (nothing was sent yet).
// Nothing blocks a thread: a stalled upstream holds only its own calls (at
// most max_in_flight) and their sockets.
// One connection per call, closed by the upstream after its response
// (Connection: close), so no idle connection can outlive the io_context.
class UpstreamCall : public std::enable_shared_from_this<UpstreamCall> {
 public:
  using Done = std::function<void(StatusOr<ClientResponse>)>;

  // `replicas`, `failovers` and `options` belong to the Upstream, which
  // outlives every call (`done` holds it).
  UpstreamCall(const net::any_io_executor& executor, const std::string& upstream,
               ReplicaSet& replicas, std::atomic<uint64_t>& failovers,
               const GatewayOptions& options, http::request<http::string_body> request, Done done)
      : upstream_(upstream),
        replicas_(replicas),
        failovers_(failovers),
        order_(replicas.order()),
        options_(options),
        resolver_(net::make_strand(executor)),
        stream_(resolver_.get_executor()),
        timer_(resolver_.get_executor()),
        request_(std::move(request)),
        done_(std::move(done)) {
    parser_.header_limit(64 * 1024);
    parser_.body_limit(options_.response_body_limit);
  }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->resolve(); });
  }

 private:
  const HostPort& address() const { return replicas_.replicas()[order_[attempt_]]; }
  std::string where() const { return address().to_string(); }

  void resolve() {
    beast::error_code ec;
    const HostPort& to = address();
    auto ip = net::ip::make_address(to.host, ec);
    if (!ec) {
      return connect(tcp::resolver::results_type::create(tcp::endpoint(ip, to.port), to.host,
                                                         std::to_string(to.port)));
    }
    timer_.expires_after(options_.connect_timeout);
    timer_.async_wait([self = shared_from_this()](beast::error_code wait_ec) {
      if (!wait_ec) self->resolver_.cancel();
    });
    resolver_.async_resolve(
        to.host, std::to_string(to.port),
        [self = shared_from_this()](beast::error_code e, tcp::resolver::results_type results) {
          const bool timed_out = self->timer_.expiry() <= Clock::now();
          self->timer_.cancel();
          if (e == net::error::operation_aborted && timed_out) {
            return self->not_connected(Status::deadline_exceeded(
                "resolving " + self->address().host + " timed out after " +
                std::to_string(self->options_.connect_timeout.count()) + " ms"));
          }
          if (e) {
            return self->not_connected(
                Status::unavailable("cannot resolve " + self->address().host + ": " + e.message()));
          }
          self->connect(results);
        });
  }

  void connect(const tcp::resolver::results_type& endpoints) {
    stream_.expires_after(options_.connect_timeout);
    stream_.async_connect(
        endpoints, [self = shared_from_this()](beast::error_code e, const tcp::endpoint&) {
          if (e == beast::error::timeout) {
            return self->not_connected(Status::deadline_exceeded(
                "connecting to " + self->where() + " timed out after " +
                std::to_string(self->options_.connect_timeout.count()) + " ms"));
          }
          if (e) {
            return self->not_connected(
                Status::unavailable("cannot connect to " + self->where() + ": " + e.message()));
          }
          self->replicas_.connected(self->order_[self->attempt_]);
          beast::error_code nodelay_ec;
          self->stream_.socket().set_option(tcp::no_delay(true), nodelay_ec);
          self->write();
        });
  }

  // Nothing was sent to the current replica: on to the next one, or the
  // failure (every replica's, in the order tried) when none is left.
  void not_connected(const Status& failure) {
    replicas_.failed(order_[attempt_]);
    failures_ += (failures_.empty() ? "" : "; ") + failure.message();
    if (attempt_ + 1 >= order_.size()) return finish(Status(failure.code(), failures_));
    ++attempt_;
    failovers_.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("upstream {}: {}; trying {}", upstream_, failure.message(), where());
    beast::error_code ec;
    stream_.socket().close(ec);
    resolve();
  }

  void write() {
    request_.set(http::field::host, where());
    stream_.expires_after(options_.request_timeout);
    http::async_write(stream_, request_, [self = shared_from_this()](beast::error_code e, size_t) {
      if (e == beast::error::timeout) return self->finish(self->timed_out());
      // An upstream may answer early and close while we still send (413 to a
      // large body): read what it said before reporting the write error.
      if (e && e != net::error::broken_pipe && e != net::error::connection_reset) {
        return self->finish(Status::unavailable(self->describe() + " failed: " + e.message()));
      }
      self->read();
    });
  }

  void read() {
    http::async_read(
        stream_, buffer_, parser_, [self = shared_from_this()](beast::error_code e, size_t) {
          if (e == beast::error::timeout) return self->finish(self->timed_out());
          if (e) {
            const bool http_error =
                e.category() == http::make_error_code(http::error::bad_method).category() &&
                e != http::error::end_of_stream && e != http::error::partial_message;
            if (http_error) {
              return self->finish(
                  Status::internal("bad response to " + self->describe() + ": " + e.message()));
            }
            return self->finish(Status::unavailable(self->describe() + " failed: " + e.message()));
          }
          auto& res = self->parser_.get();
          ClientResponse out;
          out.status = static_cast<int>(res.result_int());
          for (const auto& field : res) {
            out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
          }
          out.body = std::move(res.body());
          self->finish(std::move(out));
        });
  }

  std::string describe() const {
    return std::string(request_.method_string()) + " " + std::string(request_.target()) + " on " +
           where();
  }
  Status timed_out() const {
    return Status::deadline_exceeded(describe() + " timed out after " +
                                     std::to_string(options_.request_timeout.count()) + " ms");
  }

  void finish(StatusOr<ClientResponse> result) {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    if (done_) std::exchange(done_, nullptr)(std::move(result));
  }

  const std::string& upstream_;
  ReplicaSet& replicas_;
  std::atomic<uint64_t>& failovers_;
  const std::vector<size_t> order_;  // the replicas to try, in order
  size_t attempt_ = 0;               // order_[attempt_] is the one tried now
  std::string failures_;             // why the ones before it failed
  const GatewayOptions& options_;
  tcp::resolver resolver_;
  beast::tcp_stream stream_;
  net::steady_timer timer_;
  http::request<http::string_body> request_;
  beast::flat_buffer buffer_;
  http::response_parser<http::string_body> parser_;
  Done done_;
};

// One upstream service: its replicas, its in-flight cap and counters.
// Thread-safe.
class Upstream : public std::enable_shared_from_this<Upstream> {
 public:
  Upstream(std::string name, Replicas replicas, const GatewayOptions& options)
      : name_(std::move(name)),
        replicas_(std::move(replicas), options.replica_avoid_for, options.replica_clock),
        options_(options) {}

  const std::string& name() const { return name_; }

  // Sends `req` on, as `caller` (nobody: a public route without a token), and
  // answers `done` with the upstream's response or the failure, later, from
  // an I/O thread. 503 at once when max_in_flight calls are already out.
  void forward(const Request& req, const std::optional<Identity>& caller, service::Responder done) {
    if (!req.io_executor()) {
      return done(Response::problem(500, "Internal Server Error",
                                    "the gateway forwards only requests served by an HttpServer"));
    }
    if (in_flight_.fetch_add(1) >= options_.max_in_flight) {
      in_flight_.fetch_sub(1);
      count(kBusy);
      Response out =
          Response::problem(503, "Service Unavailable",
                            "upstream " + name_ + " has " + std::to_string(options_.max_in_flight) +
                                " requests in flight (UPSTREAM_MAX_IN_FLIGHT): try again later");
      out.set_header("Retry-After", "1");
      return done(std::move(out));
    }
    // An allow-list: Authorization and the identity headers a client sends
    // never go upstream; the identity comes from the verified token alone.
    http::request<http::string_body> up;
    up.version(11);
    // HEAD goes up as GET so that the server can answer the real Content-Length.
    const std::string method = req.method() == "HEAD" ? "GET" : req.method();
    if (http::verb v = http::string_to_verb(method); v != http::verb::unknown) {
      up.method(v);
    } else {
      up.method_string(method);
    }
    std::string target = req.path();
    if (auto q = req.target().find('?'); q != std::string::npos) target += req.target().substr(q);
    up.target(target);  // Host: set by the call, for the replica it reaches
    up.set(http::field::user_agent, "saga-gateway");
    for (const char* name : {"Content-Type", "Accept", "tracestate", "Idempotency-Key"}) {
      if (auto value = req.header(name)) up.set(name, *value);
    }
    if (caller) {
      for (auto& [name, value] : service::identity_headers(*caller)) up.set(name, value);
    }
    up.set("X-Request-Id", req.request_id());
    up.set("traceparent", req.trace().child().to_string());
    up.body() = req.body();
    up.prepare_payload();
    up.keep_alive(false);

    auto call = std::make_shared<UpstreamCall>(
        req.io_executor(), name_, replicas_, failovers_, options_, std::move(up),
        [self = shared_from_this(), method = req.method(), target, request_id = req.request_id(),
         done = std::move(done)](StatusOr<ClientResponse> res) {
          self->in_flight_.fetch_sub(1);
          done(self->answer(std::move(res), method, target, request_id));
        });
    call->start();
  }

  // OK when a replica's /readyz answers 200 within readiness_timeout (the
  // replicas are asked side by side); else why none did.
  Status check_ready() const {
    const Replicas& all = replicas_.replicas();
    if (all.size() == 1) return check_ready(all.front());
    std::vector<std::future<Status>> pending;
    for (const HostPort& replica : all) {
      pending.push_back(
          std::async(std::launch::async, [this, &replica] { return check_ready(replica); }));
    }
    std::string why;
    bool ready = false;
    for (auto& p : pending) {
      Status s = p.get();  // every future is waited for before `all` can go
      if (s.ok()) {
        ready = true;
      } else {
        why += (why.empty() ? "" : "; ") + s.message();
      }
    }
    if (ready) return ok_status();
    return Status::unavailable("no replica is ready: " + why);
  }

  // The failover counter's sample line.
  std::string failovers_line() const {
    return "gateway_upstream_failovers_total{upstream=\"" + name_ + "\"} " +
           std::to_string(failovers_.load()) + "\n";
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
  // The gauge line of the calls out now.
  std::string in_flight_line() const {
    return "gateway_upstream_in_flight{upstream=\"" + name_ + "\"} " +
           std::to_string(in_flight_.load()) + "\n";
  }

 private:
  void count(Outcome outcome) { counts_[outcome].fetch_add(1, std::memory_order_relaxed); }

  // The upstream's answer (or the failure) as the gateway's response.
  Response answer(StatusOr<ClientResponse> res, const std::string& method,
                  const std::string& target, const std::string& request_id) {
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
    const std::string who =
        "upstream " + name_ + " (" + replicas_to_string(replicas_.replicas()) + ")";
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
      if (!is_idempotent(method)) {
        detail +=
            "; the " + method + " may or may not have been applied: check before sending it again";
      }
    } else {
      count(kBadResponse);
      detail = who + " sent a malformed or oversized response: " + s.message();
    }
    spdlog::warn("{} {}: HTTP {}: {} (requestId {})", method, target, status, detail, request_id);
    Response out = Response::problem(status, std::string(service::reason_phrase(status)), detail);
    if (status == 503) out.set_header("Retry-After", "1");
    return out;
  }

  // The /readyz of one replica.
  Status check_ready(const HostPort& replica) const {
    ClientOptions o;
    o.connect_timeout = options_.readiness_timeout;
    o.request_timeout = options_.readiness_timeout;
    o.body_limit = 64 * 1024;
    HttpClient client(replica.host, replica.port, o);
    auto res = client.get("/readyz");
    const std::string where = replica.to_string();
    if (!res.ok()) return Status(res.status().code(), where + ": " + res.status().message());
    if (res->status != 200) {
      return Status::unavailable(where + ": /readyz answered " + std::to_string(res->status));
    }
    return ok_status();
  }

  const std::string name_;
  ReplicaSet replicas_;
  std::atomic<uint64_t> failovers_{0};
  const GatewayOptions options_;
  std::atomic<size_t> in_flight_{0};
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

// 429 problem+json with Retry-After in whole seconds (at least 1).
Response too_many_requests(std::string detail, std::chrono::milliseconds wait) {
  Response out = Response::problem(429, "Too Many Requests", std::move(detail));
  out.set_header("Retry-After", std::to_string(std::max<int64_t>(1, (wait.count() + 999) / 1000)));
  return out;
}

// Every upstream, the token verifier and the rate limits, shared by the route
// handlers.
struct Gateway {
  explicit Gateway(const GatewayOptions& options)
      : verifier(options.verifier),
        by_address(options.address_limit, options.rate_clock),
        by_identity(options.identity_limit, options.rate_clock),
        trusted_proxies(options.trusted_proxies) {}

  std::vector<std::shared_ptr<Upstream>> upstreams;
  std::shared_ptr<const TokenVerifier> verifier;
  RateLimiter by_address;
  RateLimiter by_identity;
  std::atomic<uint64_t> limited_by_address{0};
  std::atomic<uint64_t> limited_by_identity{0};
  const std::vector<std::string> trusted_proxies;  // whose X-Forwarded-For is read

  // The 429 for a client address over its rate, before anything else is done
  // (a token guesser is limited by address).
  std::optional<Response> limit_address(const Request& req) {
    if (req.remote_address().empty()) return std::nullopt;
    std::vector<std::string_view> forwarded_for;
    if (!trusted_proxies.empty()) {
      for (const auto& [name, value] : req.headers())
        if (boost::beast::iequals(name, "X-Forwarded-For")) forwarded_for.push_back(value);
    }
    auto wait = by_address.acquire(client_address(req.remote_address(), forwarded_for,
                                                  trusted_proxies));
    if (wait.count() == 0) return std::nullopt;
    limited_by_address.fetch_add(1, std::memory_order_relaxed);
    return too_many_requests("too many requests from this address (RATE_LIMIT_ADDRESS_RPS)", wait);
  }
  // The 429 for a caller over its rate.
  std::optional<Response> limit_identity(const Identity& who) {
    auto wait = by_identity.acquire(who.subject);
    if (wait.count() == 0) return std::nullopt;
    limited_by_identity.fetch_add(1, std::memory_order_relaxed);
    return too_many_requests("too many requests for this identity (RATE_LIMIT_IDENTITY_RPS)", wait);
  }

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
                    const std::shared_ptr<Gateway>& gateway,
                    const std::shared_ptr<Upstream>& upstream) {
  for (const std::string& pattern : {prefix, prefix + "/{rest...}"}) {
    for (const char* method : kMethods) {
      router.route_async(method, pattern,
                         [gateway, upstream](const Request& req, service::Responder done) {
                           if (auto refused = gateway->limit_address(req)) {
                             return done(std::move(*refused));
                           }
                           Caller caller = gateway->authenticate(req, is_public(req));
                           if (caller.refused) return done(std::move(*caller.refused));
                           if (caller.who) {
                             if (auto refused = gateway->limit_identity(*caller.who)) {
                               return done(std::move(*refused));
                             }
                           }
                           upstream->forward(req, caller.who, std::move(done));
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
    SAGA_ASSIGN_OR_RETURN(*field, parse_replicas(variable, text));
  }
  return out;
}

std::string replicas_to_string(const Replicas& replicas) {
  std::string out;
  for (const HostPort& replica : replicas) out += (out.empty() ? "" : ", ") + replica.to_string();
  return out;
}

ReplicaSet::ReplicaSet(Replicas replicas, std::chrono::milliseconds avoid_for, Now now)
    : replicas_(std::move(replicas)),
      avoid_for_(avoid_for),
      now_(now ? std::move(now) : Now([] { return Clock::now(); })),
      avoided_until_(std::make_unique<std::atomic<int64_t>[]>(replicas_.size())) {}

std::vector<size_t> ReplicaSet::order() {
  const size_t n = replicas_.size();
  if (n == 1) return {0};
  const size_t first = static_cast<size_t>(next_.fetch_add(1, std::memory_order_relaxed) % n);
  const int64_t now = now_().time_since_epoch().count();
  std::vector<size_t> out;
  out.reserve(n);
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (first + k) % n;
    if (avoided_until_[i].load(std::memory_order_relaxed) <= now) out.push_back(i);
  }
  for (size_t k = 0; out.size() < n && k < n; ++k) {
    const size_t i = (first + k) % n;
    if (avoided_until_[i].load(std::memory_order_relaxed) > now) out.push_back(i);
  }
  return out;
}

void ReplicaSet::failed(size_t i) {
  const auto until = now_() + avoid_for_;
  avoided_until_[i].store(until.time_since_epoch().count(), std::memory_order_relaxed);
}

void ReplicaSet::connected(size_t i) { avoided_until_[i].store(0, std::memory_order_relaxed); }

bool ReplicaSet::avoided(size_t i) const {
  return avoided_until_[i].load(std::memory_order_relaxed) > now_().time_since_epoch().count();
}

namespace {

// `text` without the blanks around it.
std::string_view trimmed(std::string_view text) {
  const auto blank = [](char c) { return c == ' ' || c == '\t'; };
  while (!text.empty() && blank(text.front())) text.remove_prefix(1);
  while (!text.empty() && blank(text.back())) text.remove_suffix(1);
  return text;
}

// `text` (blanks around it trimmed) as an IP address in normal form; nullopt
// when it is not one.
std::optional<std::string> normal_address(std::string_view text) {
  text = trimmed(text);
  if (text.empty()) return std::nullopt;
  boost::system::error_code ec;
  net::ip::address ip = net::ip::make_address(std::string(text), ec);
  if (ec) return std::nullopt;
  if (ip.is_v6() && ip.to_v6().is_v4_mapped())
    ip = net::ip::make_address_v4(net::ip::v4_mapped, ip.to_v6());
  return ip.to_string();
}

// The comma-separated entries of `values`, in order.
std::vector<std::string_view> list_entries(const std::vector<std::string_view>& values) {
  std::vector<std::string_view> out;
  for (std::string_view v : values) {
    for (size_t from = 0;;) {
      const size_t comma = v.find(',', from);
      out.push_back(v.substr(from, comma == v.npos ? v.npos : comma - from));
      if (comma == v.npos) break;
      from = comma + 1;
    }
  }
  return out;
}

}  // namespace

StatusOr<Replicas> parse_replicas(std::string_view variable, std::string_view text) {
  return service::parse_host_port_list(variable, text);
}

StatusOr<std::vector<std::string>> parse_trusted_proxies(std::string_view list) {
  std::vector<std::string> out;
  if (list.find_first_not_of(" \t") == std::string_view::npos) return out;
  for (std::string_view entry : list_entries({list})) {
    auto ip = normal_address(entry);
    if (!ip)
      return Status::invalid_argument("TRUSTED_PROXIES: '" + std::string(entry) +
                                      "' is not an IP address");
    out.push_back(std::move(*ip));
  }
  return out;
}

std::string client_address(std::string_view peer,
                           const std::vector<std::string_view>& forwarded_for,
                           const std::vector<std::string>& trusted_proxies) {
  auto trusted = [&](const std::string& ip) {
    return std::find(trusted_proxies.begin(), trusted_proxies.end(), ip) != trusted_proxies.end();
  };
  const std::string self = normal_address(peer).value_or(std::string(peer));
  if (forwarded_for.empty() || !trusted(self)) return self;
  const std::vector<std::string_view> hops = list_entries(forwarded_for);
  std::string client;
  for (auto hop = hops.rbegin(); hop != hops.rend(); ++hop) {
    auto ip = normal_address(*hop);
    if (!ip) return self;  // written by a proxy we trust, yet not an address
    client = std::move(*ip);
    if (!trusted(client)) break;
  }
  return client;
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
  SAGA_ASSIGN_OR_RETURN(int64_t in_flight,
                        service::env_int("UPSTREAM_MAX_IN_FLIGHT",
                                         static_cast<int64_t>(out.max_in_flight), 1, 1'000'000));
  out.max_in_flight = static_cast<size_t>(in_flight);
  for (auto [rate_var, burst_var, limit] :
       {std::tuple{"RATE_LIMIT_IDENTITY_RPS", "RATE_LIMIT_IDENTITY_BURST", &out.identity_limit},
        std::tuple{"RATE_LIMIT_ADDRESS_RPS", "RATE_LIMIT_ADDRESS_BURST", &out.address_limit}}) {
    SAGA_ASSIGN_OR_RETURN(
        int64_t rate, service::env_int(rate_var, static_cast<int64_t>(limit->rate), 0, 1'000'000));
    SAGA_ASSIGN_OR_RETURN(
        int64_t burst,
        service::env_int(burst_var, static_cast<int64_t>(limit->burst), 1, 10'000'000));
    limit->rate = static_cast<double>(rate);
    limit->burst = static_cast<double>(burst);
  }
  SAGA_ASSIGN_OR_RETURN(out.trusted_proxies,
                        parse_trusted_proxies(service::env_string("TRUSTED_PROXIES", "")));
  auto auth = auth_config_from_env();
  if (!auth.ok()) return auth.status();
  auto verifier = TokenVerifier::create(std::move(*auth));
  if (!verifier.ok()) return verifier.status();
  out.verifier = std::move(*verifier);
  return out;
}

void add_routes(service::Router& router, const Upstreams& upstreams, GatewayOptions options) {
  auto gateway = std::make_shared<Gateway>(options);
  auto add = [&](std::string name, const Replicas& replicas,
                 std::initializer_list<const char*> prefixes) {
    if (replicas.empty()) throw std::invalid_argument("gateway: no address for " + name);
    gateway->upstreams.push_back(std::make_shared<Upstream>(std::move(name), replicas, options));
    for (const char* prefix : prefixes) {
      forward_prefix(router, prefix, gateway, gateway->upstreams.back());
    }
  };
  add("reservation", upstreams.reservation, {"/reservations", "/accommodations", "/admin/sagas",
                                             "/admin/saga-counts"});
  add("payment", upstreams.payment, {"/payments"});
  add("inventory", upstreams.inventory, {"/places", "/owners", "/reservationManagements"});
  add("mypage", upstreams.mypage, {"/mypages"});
  if (gateway->verifier && gateway->verifier->config().dev_tokens) {
    router.post("/auth/dev-token",
                service::with_json_body([gateway](const Request& req, const nlohmann::json& body) {
                  if (auto refused = gateway->limit_address(req)) return std::move(*refused);
                  return dev_token(*gateway->verifier, body);
                }));
  }

  // The OpenAPI description of all of the above, public like the probes.
  router.get("/openapi.json", [](const Request&) {
    return Response::text(200, std::string(openapi_json()), "application/json");
  });

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
             out +=
                 "# HELP gateway_upstream_in_flight Requests sent to each upstream and not yet "
                 "answered.\n# TYPE gateway_upstream_in_flight gauge\n";
             for (const auto& upstream : gateway->upstreams) out += upstream->in_flight_line();
             out +=
                 "# HELP gateway_upstream_failovers_total Requests that went on to another "
                 "replica after one could not be connected to.\n"
                 "# TYPE gateway_upstream_failovers_total counter\n";
             for (const auto& upstream : gateway->upstreams) out += upstream->failovers_line();
             out +=
                 "# HELP gateway_rate_limited_total Requests refused with 429, by limit.\n"
                 "# TYPE gateway_rate_limited_total counter\n"
                 "gateway_rate_limited_total{limit=\"address\"} " +
                 std::to_string(gateway->limited_by_address.load()) +
                 "\ngateway_rate_limited_total{limit=\"identity\"} " +
                 std::to_string(gateway->limited_by_identity.load()) + "\n";
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
