// The gateway in process: an HttpServer with gateway::add_routes in front of
// fake upstreams (HttpServers with their own Router) on 127.0.0.1, port 0.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "saga/gateway/gateway.h"
#include "saga/gateway/openapi.h"
#include "saga/service/http_client.h"
#include "saga/service/http_server.h"
#include "saga/service/identity.h"
#include "saga/service/router.h"
#include "support/eventually.h"
#include "support/jwt_forge.h"

using namespace std::chrono_literals;
using nlohmann::json;
using saga::Status;
using saga::StatusCode;
using saga::StatusOr;
using namespace saga::service;
namespace gw = saga::gateway;

namespace {

ServerOptions loopback(ServerOptions o = {}) {
  o.host = "127.0.0.1";
  o.port = 0;
  return o;
}

// What a fake upstream saw of one request.
struct Seen {
  std::string method;
  std::string target;
  std::string body;
  std::optional<std::string> content_type;
  std::optional<std::string> accept;
  std::optional<std::string> request_id;
  std::optional<std::string> traceparent;
  std::optional<std::string> subject;        // X-Saga-Subject
  std::optional<std::string> roles;          // X-Saga-Roles
  std::optional<std::string> authorization;  // never forwarded
  size_t subject_headers = 0;                // how many X-Saga-Subject fields arrived
};

std::optional<std::string> header_copy(const Request& req, std::string_view name) {
  auto v = req.header(name);
  return v ? std::optional<std::string>(std::string(*v)) : std::nullopt;
}

// An upstream service: records every request (except /readyz) and answers with
// `responder`, by default 200 {"upstream": name, "method", "target", "body"}.
class FakeUpstream {
 public:
  using Responder = std::function<Response(const Request&)>;

  explicit FakeUpstream(std::string name, Responder responder = {})
      : name_(std::move(name)),
        responder_(std::move(responder)),
        server_(loopback(), make_router()) {
    Status s = server_.start();
    REQUIRE_MESSAGE(s.ok(), s.to_string());
  }

  uint16_t port() const { return server_.port(); }
  gw::HostPort address() const { return {"127.0.0.1", port()}; }
  std::vector<Seen> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }
  void set_ready(bool ready) {
    std::lock_guard lock(mu_);
    ready_ = ready;
  }
  std::string metrics_text() const { return server_.metrics_text(); }

  // The default answer.
  Response echo(const Request& req) const {
    return Response::json(200, {{"upstream", name_},
                                {"method", req.method()},
                                {"target", req.target()},
                                {"body", req.body()}});
  }

 private:
  Router make_router() {
    Router r;
    r.get("/readyz", [this](const Request&) {
      std::lock_guard lock(mu_);
      return Response::json(ready_ ? 200 : 503, {{"status", ready_ ? "ready" : "not ready"}});
    });
    for (const char* method : {"GET", "POST", "PUT", "PATCH", "DELETE"}) {
      r.route(method, "/{rest...}", [this](const Request& req) {
        {
          std::lock_guard lock(mu_);
          size_t subjects = 0;
          for (const auto& field : req.headers())
            if (find_header(Headers{field}, kSubjectHeader)) ++subjects;
          seen_.push_back({req.method(), req.target(), req.body(), header_copy(req, "Content-Type"),
                           header_copy(req, "Accept"), header_copy(req, "X-Request-Id"),
                           header_copy(req, "traceparent"), header_copy(req, kSubjectHeader),
                           header_copy(req, kRolesHeader), header_copy(req, "Authorization"),
                           subjects});
        }
        return responder_ ? responder_(req) : echo(req);
      });
    }
    return r;
  }

  std::string name_;
  Responder responder_;
  mutable std::mutex mu_;
  std::vector<Seen> seen_;
  bool ready_ = true;
  HttpServer server_;  // last: stopped first, while the rest is alive
};

// A TCP socket bound to a free port on 127.0.0.1, listening with `backlog`
// when it is positive. The caller closes `fd`.
struct LoopbackSocket {
  int fd = -1;
  uint16_t port = 0;
};
LoopbackSocket bind_loopback(int backlog) {
  LoopbackSocket out;
  out.fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(out.fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(::bind(out.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  if (backlog > 0) REQUIRE(::listen(out.fd, backlog) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(out.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  out.port = ntohs(addr.sin_port);
  return out;
}

// A port on 127.0.0.1 with nothing listening: bound, then closed.
uint16_t closed_port() {
  LoopbackSocket s = bind_loopback(0);
  ::close(s.fd);
  return s.port;
}

// A TCP server on 127.0.0.1 that reads a request head and answers junk.
class JunkServer {
 public:
  JunkServer() {
    LoopbackSocket s = bind_loopback(16);
    fd_ = s.fd;
    port_ = s.port;
    thread_ = std::thread([this] { serve(); });
  }
  ~JunkServer() {
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept()
    thread_.join();
    ::close(fd_);
  }
  JunkServer(const JunkServer&) = delete;
  JunkServer& operator=(const JunkServer&) = delete;

  uint16_t port() const { return port_; }

 private:
  void serve() {
    while (true) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      timeval tv{10, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      std::string got;
      char buf[4096];
      while (got.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        got.append(buf, static_cast<size_t>(n));
      }
      constexpr std::string_view kJunk = "this is not HTTP at all\r\n\r\n";
      ::send(c, kJunk.data(), kJunk.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

// A handler-side wait the test opens; never blocks longer than 20 s.
class Gate {
 public:
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, 20s, [&] { return open_; });
  }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

const std::string kTestSecret = "gateway-test-secret-0123456789abcdef";

// An HS256 verifier with kTestSecret.
std::shared_ptr<const gw::TokenVerifier> test_verifier(bool dev_tokens = false) {
  gw::AuthConfig c;
  c.secret = kTestSecret;
  c.dev_tokens = dev_tokens;
  auto v = gw::TokenVerifier::create(c);
  REQUIRE(v.ok());
  return *v;
}

// A valid token for `who`.
std::string token_for(const Identity& who) {
  auto token = test_verifier()->issue(who);
  REQUIRE(token.ok());
  return *token;
}

Headers bearer(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }

const Identity kAdmin{"gw-admin", {kRoleAdmin}};

// Upstreams of one replica each.
gw::Upstreams one_each(const gw::HostPort& reservation, const gw::HostPort& payment,
                       const gw::HostPort& inventory, const gw::HostPort& mypage) {
  return {{reservation}, {payment}, {inventory}, {mypage}};
}

// The gateway under test; its verifier is test_verifier() unless options has one.
struct TestGateway {
  TestGateway(const gw::Upstreams& upstreams, gw::GatewayOptions options = {},
              ServerOptions server_options = {})
      : server(loopback(std::move(server_options)), make_router(upstreams, std::move(options))) {
    Status s = server.start();
    REQUIRE_MESSAGE(s.ok(), s.to_string());
  }
  static Router make_router(const gw::Upstreams& upstreams, gw::GatewayOptions options) {
    if (!options.verifier) options.verifier = test_verifier();
    Router r;
    gw::add_routes(r, upstreams, options);
    return r;
  }
  // A client sending an admin's token with every request.
  HttpClient client() const { return client_as(kAdmin); }
  HttpClient client_as(const Identity& who) const {
    ClientOptions o;
    o.default_headers = bearer(token_for(who));
    return HttpClient("127.0.0.1", server.port(), o);
  }
  // A client sending no token.
  HttpClient anonymous() const { return HttpClient("127.0.0.1", server.port()); }
  HttpServer server;
};

// Four fake upstreams and a gateway in front of them.
struct Fixture {
  explicit Fixture(gw::GatewayOptions options = {}, ServerOptions server_options = {})
      : gateway(upstreams(), options, server_options) {}
  gw::Upstreams upstreams() const {
    return one_each(reservation.address(), payment.address(), inventory.address(),
                    mypage.address());
  }
  FakeUpstream reservation{"reservation"};
  FakeUpstream payment{"payment"};
  FakeUpstream inventory{"inventory"};
  FakeUpstream mypage{"mypage"};
  TestGateway gateway;
};

// Checks an RFC 7807 problem from the gateway and returns its document.
json check_problem(const ClientResponse& res, int status) {
  CHECK(res.status == status);
  CHECK(res.header("Content-Type") == "application/problem+json");
  auto doc = res.json();
  REQUIRE(doc.ok());
  CHECK((*doc)["status"] == status);
  CHECK((*doc)["title"] == std::string(reason_phrase(status)));
  REQUIRE((*doc)["detail"].is_string());
  return *doc;
}

// Checks that a setting was refused: InvalidArgument, its message naming `what`.
template <typename T>
void check_invalid_argument(const StatusOr<T>& r, std::string_view what) {
  REQUIRE(!r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message().find(what) != std::string::npos);
}

bool contains(const json& doc, std::string_view what) {
  return doc["detail"].get<std::string>().find(what) != std::string::npos;
}

}  // namespace

TEST_CASE("each prefix goes to its upstream with method, path, query and body intact") {
  Fixture f;
  struct Case {
    const char* method;
    const char* target;
    FakeUpstream* upstream;
  };
  const std::vector<Case> cases = {
      {"GET", "/reservations?userId=u%201&x=2", &f.reservation},
      {"POST", "/reservations", &f.reservation},
      {"POST", "/reservations/r-1/cancel", &f.reservation},
      {"GET", "/accommodations", &f.reservation},
      {"PUT", "/accommodations/a/b", &f.reservation},
      {"GET", "/admin/sagas?state=FAILED&limit=5", &f.reservation},
      {"POST", "/admin/sagas/r-1/retry", &f.reservation},
      {"GET", "/payments?reservationId=r-1", &f.payment},
      {"DELETE", "/payments/p-1", &f.payment},
      {"PUT", "/places/p-1/rooms", &f.inventory},
      {"GET", "/places/p-1/availability?from=2024-01-01&to=2024-01-03", &f.inventory},
      {"GET", "/owners/o-1/reservations", &f.inventory},
      {"POST", "/reservationManagements", &f.inventory},
      {"PATCH", "/mypages/u-1", &f.mypage},
      {"GET", "/mypages", &f.mypage},
  };
  HttpClient client = f.gateway.client();
  std::vector<FakeUpstream*> all = {&f.reservation, &f.payment, &f.inventory, &f.mypage};
  for (const Case& c : cases) {
    CAPTURE(c.method);
    CAPTURE(c.target);
    std::vector<size_t> before;
    for (auto* u : all) before.push_back(u->seen().size());
    const std::string body =
        std::string(c.method) == "GET" ? "" : std::string(R"({"to":")") + c.target + "\"}";
    Headers headers = {{"Accept", "application/json"}};
    if (!body.empty()) headers.emplace_back("Content-Type", "application/vnd.test+json");
    auto res = client.request(c.method, c.target, headers, body);
    REQUIRE(res.ok());
    CHECK(res->status == 200);
    CHECK(res->header("Content-Type") == "application/json");
    auto doc = res->json();
    REQUIRE(doc.ok());
    for (size_t i = 0; i < all.size(); ++i) {
      size_t expected = before[i] + (all[i] == c.upstream ? 1 : 0);
      CHECK(all[i]->seen().size() == expected);
    }
    auto seen = c.upstream->seen();
    REQUIRE(!seen.empty());
    CHECK(seen.back().method == c.method);
    CHECK(seen.back().target == c.target);
    CHECK(seen.back().body == body);
    CHECK(seen.back().accept == "application/json");
    if (!body.empty()) CHECK(seen.back().content_type == "application/vnd.test+json");
    CHECK((*doc)["target"] == c.target);
  }
  // One connection per forwarded request (closed by the upstream after its answer).
  CHECK(f.reservation.metrics_text().find("http_server_connections_total " +
                                          std::to_string(f.reservation.seen().size()) + "\n") !=
        std::string::npos);
}

TEST_CASE("a method the upstream lacks gets the upstream's 405 and Allow, OPTIONS included") {
  // An upstream with one route: only it knows which methods a path has.
  Router only_get;
  only_get.get("/mypages/{id}", [](const Request&) { return Response::json(200, {}); });
  HttpServer mypage(loopback(), std::move(only_get));
  REQUIRE(mypage.start().ok());
  FakeUpstream other("other");
  TestGateway gateway(
      one_each(other.address(), other.address(), other.address(), {"127.0.0.1", mypage.port()}));
  HttpClient client = gateway.client();
  for (const char* method : {"OPTIONS", "DELETE", "PUT"}) {
    CAPTURE(method);
    auto res = client.request(method, "/mypages/m-1", {}, "");
    REQUIRE(res.ok());
    CHECK(res->status == 405);
    CHECK(res->header("Allow") == "GET, HEAD");
  }
}

TEST_CASE("HEAD is answered from the upstream's GET") {
  Fixture f;
  HttpClient client = f.gateway.client();
  auto get = client.get("/places/p-9");
  REQUIRE(get.ok());
  auto head = client.request("HEAD", "/places/p-9");
  REQUIRE(head.ok());
  CHECK(head->status == 200);
  CHECK(head->body.empty());
  CHECK(head->header("Content-Length") == std::to_string(get->body.size()));
  auto seen = f.inventory.seen();
  REQUIRE(seen.size() == 2);
  CHECK(seen.back().method == "GET");
}

TEST_CASE("the request id and a child traceparent reach the upstream") {
  Fixture f;
  HttpClient client = f.gateway.client();
  const std::string trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  const std::string parent_id = "00f067aa0ba902b7";
  auto res =
      client.get("/payments/p-1", {{"X-Request-Id", "req-gateway-1"},
                                   {"traceparent", "00-" + trace_id + "-" + parent_id + "-01"}});
  REQUIRE(res.ok());
  CHECK(res->status == 200);
  CHECK(res->header("X-Request-Id") == "req-gateway-1");
  auto seen = f.payment.seen();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].request_id == "req-gateway-1");
  REQUIRE(seen[0].traceparent.has_value());
  auto tp = TraceContext::parse(*seen[0].traceparent);
  REQUIRE(tp.has_value());
  CHECK(tp->trace_id == trace_id);
  CHECK(tp->parent_id != parent_id);
  CHECK(tp->flags == 1);

  // Without them, the gateway's own id and trace go up.
  auto fresh = client.get("/payments/p-2");
  REQUIRE(fresh.ok());
  seen = f.payment.seen();
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].request_id == std::string(*fresh->header("X-Request-Id")));
  auto mine = TraceContext::parse(*fresh->header("traceparent"));
  auto theirs = TraceContext::parse(seen[1].traceparent.value_or(""));
  REQUIRE(mine.has_value());
  REQUIRE(theirs.has_value());
  CHECK(theirs->trace_id == mine->trace_id);
  CHECK(theirs->parent_id != mine->parent_id);
}

TEST_CASE("status, body, Content-Type, Location, Retry-After and Next-Page-Token come back") {
  const std::string problem =
      R"({"type":"about:blank","title":"Too Many Requests","status":429,"detail":"slow down"})";
  FakeUpstream reservation("reservation", [](const Request& req) {
    Response res = Response::json(202, {{"id", "r-7"}, {"status", "PENDING"}});
    res.set_header("Location", "/reservations/r-7");
    res.set_header("X-Internal", "not copied");
    (void)req;
    return res;
  });
  FakeUpstream payment("payment", [&](const Request& req) {
    if (req.target() == "/payments?limit=1") {  // a page with more after it
      Response res = Response::json(200, json::array({{{"payId", "p-1"}}}));
      res.set_header("Next-Page-Token", "p-1");
      return res;
    }
    Response res = Response::text(429, problem, "application/problem+json");
    res.set_header("Retry-After", "7");
    return res;
  });
  FakeUpstream inventory("inventory");
  FakeUpstream mypage("mypage");
  TestGateway gateway(
      one_each(reservation.address(), payment.address(), inventory.address(), mypage.address()));
  HttpClient client = gateway.client();

  auto created = client.post_json("/reservations", {{"placeId", "p-1"}});
  REQUIRE(created.ok());
  CHECK(created->status == 202);
  CHECK(created->header("Location") == "/reservations/r-7");
  CHECK(created->header("Content-Type") == "application/json");
  CHECK(!created->header("X-Internal").has_value());
  auto doc = created->json();
  REQUIRE(doc.ok());
  CHECK((*doc)["id"] == "r-7");

  auto limited = client.get("/payments/p-1");
  REQUIRE(limited.ok());
  CHECK(limited->status == 429);
  CHECK(limited->header("Retry-After") == "7");
  CHECK(limited->header("Content-Type") == "application/problem+json");
  CHECK(limited->body == problem);

  auto page = client.get("/payments?limit=1");
  REQUIRE(page.ok());
  CHECK(page->status == 200);
  CHECK(page->header("Next-Page-Token") == "p-1");
}

TEST_CASE("an upstream with nothing listening gives 503 with Retry-After") {
  FakeUpstream reservation("reservation");
  gw::Upstreams upstreams = one_each(reservation.address(), {"127.0.0.1", closed_port()},
                                     reservation.address(), reservation.address());
  TestGateway gateway(upstreams);
  HttpClient client = gateway.client();
  auto res = client.post_json("/payments", {{"amount", 10}});
  REQUIRE(res.ok());
  json doc = check_problem(*res, 503);
  CHECK(res->header("Retry-After") == "1");
  CHECK(contains(doc, "upstream payment"));
  CHECK(doc["instance"] == "/payments");
  // The other upstreams are still served.
  auto ok = client.get("/reservations/r-1");
  REQUIRE(ok.ok());
  CHECK(ok->status == 200);
}

TEST_CASE("a slow upstream gives 504 and the gateway recovers") {
  Gate gate;
  FakeUpstream reservation("reservation", [&](const Request& req) {
    if (req.path() == "/reservations/slow") gate.wait();
    return Response::json(200, {{"path", req.path()}});
  });
  struct Opener {
    Gate& gate;
    ~Opener() { gate.open(); }
  } opener{gate};  // destroyed before the upstream, whatever happens
  FakeUpstream other("other");
  gw::GatewayOptions options;
  options.request_timeout = 200ms;
  TestGateway gateway(
      one_each(reservation.address(), other.address(), other.address(), other.address()), options);
  HttpClient client = gateway.client();

  auto started = std::chrono::steady_clock::now();
  auto post = client.post_json("/reservations/slow", {{"placeId", "p-1"}});
  REQUIRE(post.ok());
  CHECK(std::chrono::steady_clock::now() - started < 10s);
  json doc = check_problem(*post, 504);
  CHECK(contains(doc, "upstream reservation"));
  CHECK(contains(doc, "may or may not have been applied"));
  CHECK(!post->header("Retry-After").has_value());

  auto get = client.get("/reservations/slow");
  REQUIRE(get.ok());
  json get_doc = check_problem(*get, 504);
  CHECK(!contains(get_doc, "may or may not"));

  gate.open();
  auto fast = client.get("/reservations/r-1");
  REQUIRE(fast.ok());
  CHECK(fast->status == 200);
}

TEST_CASE("an upstream answering junk gives 502") {
  JunkServer junk;
  FakeUpstream other("other");
  TestGateway gateway(
      one_each(other.address(), other.address(), {"127.0.0.1", junk.port()}, other.address()));
  HttpClient client = gateway.client();
  auto res = client.get("/places/p-1");
  REQUIRE(res.ok());
  json doc = check_problem(*res, 502);
  CHECK(contains(doc, "upstream inventory"));
  CHECK(other.seen().empty());

  auto metrics = client.get("/metrics");
  REQUIRE(metrics.ok());
  CHECK(metrics->body.find(
            R"(gateway_upstream_requests_total{upstream="inventory",outcome="bad_response"} 1)") !=
        std::string::npos);
}

TEST_CASE("unknown routes are the router's 404; prefixes match whole segments") {
  Fixture f;
  HttpClient client = f.gateway.client();
  for (const char* target : {"/nope", "/reservationsX", "/paymentsfoo/1", "/"}) {
    CAPTURE(target);
    auto res = client.get(target);
    REQUIRE(res.ok());
    check_problem(*res, 404);
  }
  CHECK(f.reservation.seen().empty());
  CHECK(f.payment.seen().empty());
  CHECK(f.inventory.seen().empty());
  CHECK(f.mypage.seen().empty());
  auto health = client.get("/healthz");
  REQUIRE(health.ok());
  CHECK(health->status == 200);
}

TEST_CASE("a body over the gateway's limit is 413 and never forwarded") {
  ServerOptions server_options;
  server_options.body_limit = 1024;
  Fixture f({}, server_options);
  HttpClient client = f.gateway.client();
  auto small = client.request("POST", "/reservations", {}, std::string(1000, 'a'));
  REQUIRE(small.ok());
  CHECK(small->status == 200);
  auto big = HttpClient("127.0.0.1", f.gateway.server.port())
                 .request("POST", "/reservations", {}, std::string(4096, 'a'));
  REQUIRE(big.ok());
  CHECK(big->status == 413);
  CHECK(big->header("Content-Type") == "application/problem+json");
  CHECK(f.reservation.seen().size() == 1);
}

TEST_CASE("/readyz is ready only when every upstream is") {
  FakeUpstream reservation("reservation");
  FakeUpstream payment("payment");
  FakeUpstream inventory("inventory");
  FakeUpstream mypage("mypage");
  gw::Upstreams all_up =
      one_each(reservation.address(), payment.address(), inventory.address(), mypage.address());
  gw::GatewayOptions options;
  options.readiness_timeout = 2s;

  auto checks_by_name = [](const json& doc) {
    std::map<std::string, bool> out;
    for (const auto& c : doc["checks"]) out[c["name"].get<std::string>()] = c["ok"].get<bool>();
    return out;
  };

  {
    TestGateway gateway(all_up, options);
    auto res = gateway.client().get("/readyz");
    REQUIRE(res.ok());
    CHECK(res->status == 200);
    auto doc = res->json();
    REQUIRE(doc.ok());
    CHECK((*doc)["status"] == "ready");
    CHECK(checks_by_name(*doc) ==
          std::map<std::string, bool>{
              {"inventory", true}, {"mypage", true}, {"payment", true}, {"reservation", true}});

    payment.set_ready(false);
    auto not_ready = gateway.client().get("/readyz");
    REQUIRE(not_ready.ok());
    CHECK(not_ready->status == 503);
    auto nr = not_ready->json();
    REQUIRE(nr.ok());
    CHECK(checks_by_name(*nr)["payment"] == false);
    CHECK(checks_by_name(*nr)["reservation"] == true);
    bool named_status = false;
    for (const auto& c : (*nr)["checks"]) {
      if (c["name"] == "payment") {
        named_status = c["message"].get<std::string>().find("answered 503") != std::string::npos;
      }
    }
    CHECK(named_status);
    payment.set_ready(true);
  }
  {
    gw::Upstreams one_down = all_up;
    one_down.mypage = {{"127.0.0.1", closed_port()}};
    TestGateway gateway(one_down, options);
    auto res = gateway.client().get("/readyz");
    REQUIRE(res.ok());
    CHECK(res->status == 503);
    auto doc = res->json();
    REQUIRE(doc.ok());
    CHECK((*doc)["status"] == "not ready");
    CHECK(checks_by_name(*doc) ==
          std::map<std::string, bool>{
              {"inventory", true}, {"mypage", false}, {"payment", true}, {"reservation", true}});
  }
}

TEST_CASE("parse_host_port") {
  auto ok = gw::parse_host_port("X_ADDR", "127.0.0.1:8082");
  REQUIRE(ok.ok());
  CHECK(*ok == gw::HostPort{"127.0.0.1", 8082});
  CHECK(ok->to_string() == "127.0.0.1:8082");
  auto name = gw::parse_host_port("X_ADDR", "payment:65535");
  REQUIRE(name.ok());
  CHECK(*name == gw::HostPort{"payment", 65535});
  auto v6 = gw::parse_host_port("X_ADDR", "[::1]:1");
  REQUIRE(v6.ok());
  CHECK(*v6 == gw::HostPort{"::1", 1});
  CHECK(v6->to_string() == "[::1]:1");

  for (const char* bad :
       {"", "127.0.0.1", "127.0.0.1:", ":8082", "host:0", "host:65536", "host:80x", "host:-1",
        "host:+80", "::1:8082", "[::1]8082", "[::1", "ho st:80", "host:123456", "http://host:80"}) {
    CAPTURE(bad);
    auto r = gw::parse_host_port("PAYMENT_ADDR", bad);
    check_invalid_argument(r, "PAYMENT_ADDR");
    CHECK(r.status().message().find(std::string("'") + bad + "'") != std::string::npos);
  }
}

TEST_CASE("upstreams and options from the environment") {
  for (const char* v :
       {"RESERVATION_ADDR", "PAYMENT_ADDR", "INVENTORY_ADDR", "MYPAGE_ADDR", "UPSTREAM_TIMEOUT_MS",
        "UPSTREAM_CONNECT_TIMEOUT_MS", "AUTH_HS256_SECRET"}) {
    ::unsetenv(v);
  }
  ::setenv("AUTH_DEV_TOKENS", "1", 1);  // a key is required: here a random development one
  auto defaults = gw::upstreams_from_env();
  REQUIRE(defaults.ok());
  CHECK(defaults->reservation == gw::Replicas{{"127.0.0.1", 8082}});
  CHECK(defaults->payment == gw::Replicas{{"127.0.0.1", 8083}});
  CHECK(defaults->inventory == gw::Replicas{{"127.0.0.1", 8084}});
  CHECK(defaults->mypage == gw::Replicas{{"127.0.0.1", 8086}});
  auto default_options = gw::gateway_options_from_env();
  REQUIRE(default_options.ok());
  CHECK(default_options->request_timeout == 10'000ms);
  CHECK(default_options->connect_timeout == 2'000ms);

  ::setenv("INVENTORY_ADDR", "inventory.local:9084", 1);
  auto set = gw::upstreams_from_env();
  REQUIRE(set.ok());
  CHECK(set->inventory == gw::Replicas{{"inventory.local", 9084}});
  CHECK(set->payment == gw::Replicas{{"127.0.0.1", 8083}});

  ::setenv("MYPAGE_ADDR", "mypage", 1);
  check_invalid_argument(gw::upstreams_from_env(), "MYPAGE_ADDR");

  ::setenv("UPSTREAM_TIMEOUT_MS", "250", 1);
  ::setenv("UPSTREAM_CONNECT_TIMEOUT_MS", "100", 1);
  auto options = gw::gateway_options_from_env();
  REQUIRE(options.ok());
  CHECK(options->request_timeout == 250ms);
  CHECK(options->connect_timeout == 100ms);
  ::setenv("UPSTREAM_TIMEOUT_MS", "soon", 1);
  auto bad_options = gw::gateway_options_from_env();
  REQUIRE(!bad_options.ok());
  CHECK(bad_options.status().message().find("UPSTREAM_TIMEOUT_MS") != std::string::npos);

  ::setenv("UPSTREAM_TIMEOUT_MS", "250", 1);
  ::unsetenv("AUTH_DEV_TOKENS");  // no key at all: the gateway must not start
  auto no_key = gw::gateway_options_from_env();
  REQUIRE(!no_key.ok());
  CHECK(no_key.status().message().find("AUTH_HS256_SECRET") != std::string::npos);

  for (const char* v :
       {"INVENTORY_ADDR", "MYPAGE_ADDR", "UPSTREAM_TIMEOUT_MS", "UPSTREAM_CONNECT_TIMEOUT_MS"}) {
    ::unsetenv(v);
  }
}

// ---- identity --------------------------------------------------------------

// Checks a 401 from the gateway: problem+json with a Bearer challenge.
void check_unauthorized(const StatusOr<ClientResponse>& res) {
  REQUIRE_MESSAGE(res.ok(), res.status().to_string());
  check_problem(*res, 401);
  auto challenge = res->header("WWW-Authenticate");
  REQUIRE(challenge.has_value());
  CHECK(challenge->rfind("Bearer", 0) == 0);
}

size_t seen_total(const Fixture& f) {
  return f.reservation.seen().size() + f.payment.seen().size() + f.inventory.seen().size() +
         f.mypage.seen().size();
}

TEST_CASE("without a token every route but the probes and the catalogue is 401, never forwarded") {
  Fixture f;
  HttpClient client = f.gateway.anonymous();
  const std::vector<std::pair<const char*, const char*>> closed = {
      {"GET", "/reservations/r-1"},
      {"GET", "/reservations?userId=u1"},
      {"POST", "/reservations"},
      {"POST", "/reservations/r-1/cancel"},
      {"POST", "/accommodations"},
      {"GET", "/payments/pay-1"},
      {"POST", "/places"},
      {"PUT", "/places/p-1/rooms"},
      {"GET", "/places"},
      {"GET", "/places/p-1/other"},
      {"GET", "/owners/o-1/reservations"},
      {"POST", "/reservationManagements"},
      {"GET", "/mypages/r-1"},
      {"GET", "/mypages?userId=u1"},
      {"GET", "/metrics"}};
  for (const auto& [method, target] : closed) {
    CAPTURE(method);
    CAPTURE(target);
    // A client's own identity headers change nothing.
    check_unauthorized(client.request(
        method, target,
        {{kSubjectHeader, "u1"}, {kRolesHeader, "admin"}, {"Content-Type", "application/json"}},
        std::string(method) == "GET" ? "" : "{}"));
  }
  CHECK(seen_total(f) == 0);
  CHECK(client.get("/healthz")->status == 200);
  CHECK(client.get("/readyz")->status == 200);
}

TEST_CASE("the public catalogue answers without a token and without an identity upstream") {
  Fixture f;
  HttpClient client = f.gateway.anonymous();
  for (const char* target :
       {"/places/p-1", "/places/p-1/availability?from=2024-01-01&to=2024-01-02"}) {
    CAPTURE(target);
    auto res = client.get(target, {{kSubjectHeader, "u1"}, {kRolesHeader, "admin"}});
    REQUIRE(res.ok());
    CHECK(res->status == 200);
    auto seen = f.inventory.seen();
    REQUIRE(!seen.empty());
    CHECK(!seen.back().subject.has_value());  // the client's header was not forwarded
    CHECK(!seen.back().roles.has_value());
  }
  CHECK(client.request("HEAD", "/places/p-1")->status == 200);
  // A token sent to a public route is verified too: a bad one is refused.
  check_unauthorized(client.get("/places/p-1", bearer("not.a.token")));
  // With a good one, the identity goes along.
  auto res = client.get("/places/p-1", bearer(token_for({"o1", {kRoleOwner}})));
  REQUIRE(res.ok());
  CHECK(f.inventory.seen().back().subject == "o1");
}

TEST_CASE("the identity upstream comes from the token alone") {
  Fixture f;
  HttpClient client = f.gateway.client_as({"alice", {kRoleGuest}});
  auto res = client.get("/reservations/r-1", {{kSubjectHeader, "bob"},
                                              {kRolesHeader, "admin"},
                                              {"x-saga-subject", "carol"},
                                              {"X-SAGA-ROLES", "admin"}});
  REQUIRE(res.ok());
  CHECK(res->status == 200);
  auto seen = f.reservation.seen();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].subject == "alice");
  CHECK(seen[0].roles == "guest");
  CHECK(seen[0].subject_headers == 1);
  CHECK(!seen[0].authorization.has_value());  // the token stays at the gateway

  HttpClient admin = f.gateway.client();
  REQUIRE(admin.post_json("/mypages", json::object())->status == 200);
  CHECK(f.mypage.seen().back().subject == "gw-admin");
  CHECK(f.mypage.seen().back().roles == "admin");
}

TEST_CASE("expired, wrongly signed, alg none and garbled tokens are 401 with a challenge") {
  Fixture f;
  HttpClient client = f.gateway.anonymous();
  namespace t = saga::testing;
  const json live = {{"sub", "u1"}, {"roles", {"guest"}}, {"exp", t::unix_now() + 600}};
  const json expired = {{"sub", "u1"}, {"roles", {"guest"}}, {"exp", t::unix_now() - 600}};
  const t::TestKey rsa = t::generate_key("RSA");
  const std::vector<std::pair<const char*, std::string>> tokens = {
      {"expired", t::sign_hs256({{"alg", "HS256"}}, expired, kTestSecret)},
      {"wrong secret",
       t::sign_hs256({{"alg", "HS256"}}, live, "some-other-secret-0123456789abcdef")},
      {"alg none", t::signing_input({{"alg", "none"}}, live) + "."},
      {"RS256 on an HS256 gateway", t::sign_token({{"alg", "RS256"}}, live, rsa)},
      {"garbled", "abc.def"},
  };
  for (const auto& [what, token] : tokens) {
    CAPTURE(what);
    auto res = client.get("/reservations/r-1", bearer(token));
    check_unauthorized(res);
    CHECK(res->header("WWW-Authenticate")->find("invalid_token") != std::string::npos);
  }
  for (const std::string& header :
       {std::string("Basic dXNlcjpwYXNz"), std::string("Bearer"), std::string("Bearer "),
        std::string("Token ") + t::sign_hs256({{"alg", "HS256"}}, live, kTestSecret)}) {
    CAPTURE(header);
    check_unauthorized(client.get("/reservations/r-1", {{"Authorization", header}}));
  }
  CHECK(seen_total(f) == 0);
  // The same token, well signed, passes; the scheme is case-insensitive.
  auto ok = client.get(
      "/reservations/r-1",
      {{"Authorization", "bearer " + t::sign_hs256({{"alg", "HS256"}}, live, kTestSecret)}});
  REQUIRE(ok.ok());
  CHECK(ok->status == 200);
}

TEST_CASE("/metrics needs an admin's token") {
  Fixture f;
  check_unauthorized(f.gateway.anonymous().get("/metrics"));
  auto guest = f.gateway.client_as({"u1", {kRoleGuest}}).get("/metrics");
  REQUIRE(guest.ok());
  check_problem(*guest, 403);
  auto admin = f.gateway.client().get("/metrics");
  REQUIRE(admin.ok());
  CHECK(admin->status == 200);
  CHECK(admin->body.find("gateway_upstream_requests_total") != std::string::npos);
}

TEST_CASE("GET /openapi.json answers the OpenAPI 3.1 description without a token, not forwarded") {
  Fixture f;
  auto res = f.gateway.anonymous().get("/openapi.json");
  REQUIRE(res.ok());
  REQUIRE_MESSAGE(res->status == 200, res->body);
  CHECK(res->header("Content-Type") == "application/json");
  auto doc = res->json();
  REQUIRE_MESSAGE(doc.ok(), doc.status().to_string());
  CHECK((*doc)["openapi"] == "3.1.0");
  CHECK((*doc)["paths"].contains("/openapi.json"));
  CHECK(res->body == gw::openapi_json());  // the file as built in
  for (FakeUpstream* up : {&f.reservation, &f.payment, &f.inventory, &f.mypage})
    CHECK(up->seen().empty());
}

TEST_CASE("POST /auth/dev-token exists only with development tokens on") {
  FakeUpstream up("any");
  const gw::Upstreams all = one_each(up.address(), up.address(), up.address(), up.address());
  {
    TestGateway plain(all);
    auto res = plain.anonymous().post_json("/auth/dev-token", {{"sub", "u1"}});
    REQUIRE(res.ok());
    CHECK(res->status == 404);
  }
  gw::GatewayOptions options;
  options.verifier = test_verifier(true);
  TestGateway dev(all, options);
  HttpClient client = dev.anonymous();
  auto res = client.post_json("/auth/dev-token", {{"sub", "alice"}, {"roles", {"guest", "owner"}}});
  REQUIRE(res.ok());
  REQUIRE_MESSAGE(res->status == 200, res->body);
  const std::string token = (*res->json())["token"];
  CHECK((*res->json())["expiresIn"] == 3600);
  auto used = client.get("/mypages", bearer(token));
  REQUIRE(used.ok());
  CHECK(used->status == 200);
  CHECK(up.seen().back().subject == "alice");
  CHECK(up.seen().back().roles == "guest,owner");
  // Without roles: a guest.
  auto plain = client.post_json("/auth/dev-token", {{"sub", "bob"}});
  REQUIRE(plain.ok());
  REQUIRE(plain->status == 200);
  REQUIRE(client.get("/mypages", bearer((*plain->json())["token"]))->status == 200);
  CHECK(up.seen().back().roles == "guest");

  for (const json& bad : {json{{"roles", {"guest"}}}, json{{"sub", ""}}, json{{"sub", "a/b"}},
                          json{{"sub", 5}}, json{{"sub", "u"}, {"roles", {"root"}}},
                          json{{"sub", "u"}, {"roles", "admin"}}, json::array()}) {
    CAPTURE(bad.dump());
    auto r = client.post_json("/auth/dev-token", bad);
    REQUIRE(r.ok());
    check_problem(*r, 400);
  }
}

// ---- limits ----------------------------------------------------------------

namespace {

// A TCP server on 127.0.0.1 that accepts connections and never answers, until
// release() closes them all.
class StallServer {
 public:
  StallServer() {
    LoopbackSocket s = bind_loopback(128);
    fd_ = s.fd;
    port_ = s.port;
    thread_ = std::thread([this] {
      while (true) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        std::lock_guard lock(mu_);
        accepted_.push_back(c);
      }
    });
  }
  ~StallServer() {
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept()
    thread_.join();
    ::close(fd_);
    release();
  }
  StallServer(const StallServer&) = delete;
  StallServer& operator=(const StallServer&) = delete;

  gw::HostPort address() const { return {"127.0.0.1", port_}; }
  size_t accepted() const {
    std::lock_guard lock(mu_);
    return accepted_.size();
  }
  // Closes every connection accepted so far (their requests fail at once).
  void release() {
    std::lock_guard lock(mu_);
    for (int c : accepted_) ::close(c);
    released_ += accepted_.size();
    accepted_.clear();
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<int> accepted_;  // guarded by mu_
  size_t released_ = 0;        // guarded by mu_
};

// GET `target` from source address `from` (another loopback address, e.g.
// 127.0.0.2) to 127.0.0.1:`port`; the raw response ("" on failure).
std::string raw_get_from(const char* from, uint16_t port, const std::string& target,
                         const std::string& token) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  REQUIRE(::inet_pton(AF_INET, from, &src.sin_addr) == 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) == 0);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(port);
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) == 0) {
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" +
                      "Authorization: Bearer " + token + "\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

int raw_status(const std::string& raw) {
  return raw.size() >= 12 ? std::stoi(raw.substr(9, 3)) : 0;
}

// A clock the test moves.
struct TestClock {
  std::shared_ptr<std::atomic<int64_t>> ms = std::make_shared<std::atomic<int64_t>>(0);
  gw::RateLimiter::Now now() const {
    return [ms = ms] { return gw::RateClock::time_point(std::chrono::milliseconds(ms->load())); };
  }
  void advance(std::chrono::milliseconds d) { ms->fetch_add(d.count()); }
};

}  // namespace

TEST_CASE("a token bucket refills at its rate up to its burst") {
  using gw::RateClock;
  const RateClock::time_point t0{};
  gw::TokenBucket bucket({.rate = 2, .burst = 3}, t0);
  CHECK(bucket.try_take(t0));
  CHECK(bucket.try_take(t0));
  CHECK(bucket.try_take(t0));
  std::chrono::milliseconds wait{0};
  CHECK(!bucket.try_take(t0, &wait));
  CHECK(wait == 500ms);  // 2 tokens a second
  CHECK(!bucket.try_take(t0 + 250ms, &wait));
  CHECK(wait == 250ms);  // half a token is there already
  CHECK(bucket.try_take(t0 + 500ms));
  CHECK(!bucket.try_take(t0 + 500ms));
  // A long quiet spell refills to the burst, not beyond.
  CHECK(bucket.tokens(t0 + 1h) == doctest::Approx(3.0));
  // A clock read out of order takes nothing back.
  CHECK(bucket.tokens(t0) == doctest::Approx(3.0));

  SUBCASE("a limiter keeps a bucket per key and forgets full ones when it has too many") {
    TestClock clock;
    gw::RateLimiter limiter({.rate = 1, .burst = 1}, clock.now(), 2);
    CHECK(limiter.acquire("a") == 0ms);
    CHECK(limiter.acquire("a") == 1000ms);
    CHECK(limiter.acquire("b") == 0ms);
    CHECK(limiter.size() == 2);
    clock.advance(1s);  // both full again
    CHECK(limiter.acquire("c") == 0ms);
    CHECK(limiter.size() == 1);
    gw::RateLimiter off({.rate = 0, .burst = 1});
    CHECK(!off.enabled());
    for (int i = 0; i < 10; ++i) CHECK(off.acquire("x") == 0ms);
  }
}

TEST_CASE("one identity over its rate gets 429 with Retry-After; others and other addresses pass") {
  Fixture upstreams_only;  // its own gateway is not used here
  TestClock clock;
  gw::GatewayOptions options;
  options.rate_clock = clock.now();
  options.identity_limit = {.rate = 1, .burst = 3};
  options.address_limit = {.rate = 1, .burst = 6};
  TestGateway gateway(upstreams_only.upstreams(), options);
  HttpClient alice = gateway.client_as({"alice", {kRoleGuest}});
  HttpClient bob = gateway.client_as({"bob", {kRoleGuest}});

  for (int i = 0; i < 3; ++i) {
    auto r = alice.get("/reservations/r-" + std::to_string(i));
    REQUIRE(r.ok());
    CHECK(r->status == 200);
  }
  auto limited = alice.get("/reservations/r-3");
  REQUIRE(limited.ok());
  json doc = check_problem(*limited, 429);
  CHECK(contains(doc, "identity"));
  CHECK(limited->header("Retry-After") == "1");
  CHECK(upstreams_only.reservation.seen().size() == 3);  // the refused one never went up

  auto other = bob.get("/reservations/r-b");  // another identity, same address
  REQUIRE(other.ok());
  CHECK(other->status == 200);

  // 5 of 127.0.0.1's 6 tokens are spent: one more, then the address is over.
  auto sixth = bob.get("/reservations/r-b2");
  REQUIRE(sixth.ok());
  CHECK(sixth->status == 200);
  auto by_address = gateway.anonymous().get("/places/p-1");  // public, no token
  REQUIRE(by_address.ok());
  CHECK(contains(check_problem(*by_address, 429), "address"));
  // Another address is unaffected, with any identity.
  const std::string carol = token_for({"carol", {kRoleGuest}});
  CHECK(raw_status(raw_get_from("127.0.0.2", gateway.server.port(), "/payments/x", carol)) == 200);

  // Time refills the buckets.
  clock.advance(1s);
  auto again = alice.get("/reservations/r-4");
  REQUIRE(again.ok());
  CHECK(again->status == 200);
  auto metrics = gateway.client().get("/metrics");
  REQUIRE(metrics.ok());
  CHECK(metrics->body.find("gateway_rate_limited_total{limit=\"identity\"} 1") !=
        std::string::npos);
  CHECK(metrics->body.find("gateway_rate_limited_total{limit=\"address\"} 1") != std::string::npos);
}

TEST_CASE("a stalled upstream holds neither the gateway's threads nor the other upstreams") {
  StallServer stalled;
  FakeUpstream other("other");
  gw::GatewayOptions options;
  options.request_timeout = 8s;  // far longer than the requests to the others take
  ServerOptions two_threads;
  two_threads.threads = 2;
  TestGateway gateway(
      one_each(stalled.address(), other.address(), other.address(), other.address()), options,
      two_threads);

  constexpr int kStalled = 24;  // more than the gateway's threads (and the old 16)
  std::atomic<int> answered{0};
  std::vector<std::future<StatusOr<ClientResponse>>> pending;
  for (int i = 0; i < kStalled; ++i) {
    pending.push_back(std::async(std::launch::async, [&gateway, &answered, i] {
      auto r = gateway.client().get("/reservations/s-" + std::to_string(i));
      ++answered;
      return r;
    }));
  }
  REQUIRE(saga::testing::eventually([&] { return stalled.accepted() == kStalled; }, 20s));

  const auto started = std::chrono::steady_clock::now();
  auto pay = gateway.client().get("/payments/p-1");
  REQUIRE(pay.ok());
  CHECK(pay->status == 200);
  auto readyz = gateway.anonymous().get("/healthz");
  REQUIRE(readyz.ok());
  CHECK(readyz->status == 200);
  CHECK(std::chrono::steady_clock::now() - started < 8s);
  CHECK(answered.load() == 0);  // the stalled ones are all still waiting

  // They time out with 504, each naming the upstream.
  for (auto& f : pending) {
    auto r = f.get();
    REQUIRE(r.ok());
    CHECK(contains(check_problem(*r, 504), "upstream reservation"));
  }
  auto metrics = gateway.client().get("/metrics");
  REQUIRE(metrics.ok());
  CHECK(metrics->body.find("gateway_upstream_in_flight{upstream=\"reservation\"} 0") !=
        std::string::npos);
}

TEST_CASE("an upstream with max_in_flight requests out gets 503 with Retry-After, the others not") {
  StallServer stalled;
  FakeUpstream other("other");
  gw::GatewayOptions options;
  options.max_in_flight = 2;
  TestGateway gateway(
      one_each(stalled.address(), other.address(), other.address(), other.address()), options);

  std::vector<std::future<StatusOr<ClientResponse>>> pending;
  for (int i = 0; i < 2; ++i) {
    pending.push_back(std::async(std::launch::async, [&gateway, i] {
      return gateway.client().get("/reservations/s-" + std::to_string(i));
    }));
  }
  REQUIRE(saga::testing::eventually([&] { return stalled.accepted() == 2; }, 20s));
  auto full = gateway.client().get("/reservations/s-2");
  REQUIRE(full.ok());
  json doc = check_problem(*full, 503);
  CHECK(contains(doc, "in flight"));
  CHECK(full->header("Retry-After") == "1");
  CHECK(stalled.accepted() == 2);  // never sent
  auto pay = gateway.client().get("/payments/p-1");
  REQUIRE(pay.ok());
  CHECK(pay->status == 200);

  stalled.release();  // the two fail now: 503, and the slots are free again
  for (auto& f : pending) {
    auto r = f.get();
    REQUIRE(r.ok());
    CHECK(r->status == 503);
  }
  auto again = std::async(std::launch::async,
                          [&gateway] { return gateway.client().get("/reservations/s-3"); });
  REQUIRE(saga::testing::eventually([&] { return stalled.accepted() == 1; }, 20s));
  stalled.release();
  auto freed = again.get();
  REQUIRE(freed.ok());
  CHECK(freed->status == 503);
  CHECK(contains(check_problem(*freed, 503), "not reachable"));
}

TEST_CASE("limits come from the environment") {
  ::setenv("AUTH_DEV_TOKENS", "1", 1);
  ::setenv("UPSTREAM_MAX_IN_FLIGHT", "9", 1);
  ::setenv("RATE_LIMIT_IDENTITY_RPS", "0", 1);
  ::setenv("RATE_LIMIT_ADDRESS_RPS", "7", 1);
  ::setenv("RATE_LIMIT_ADDRESS_BURST", "70", 1);
  auto o = gw::gateway_options_from_env();
  REQUIRE(o.ok());
  CHECK(o->max_in_flight == 9);
  CHECK(o->identity_limit.rate == 0);
  CHECK(o->identity_limit.burst == 100);
  CHECK(o->address_limit.rate == 7);
  CHECK(o->address_limit.burst == 70);
  ::setenv("RATE_LIMIT_IDENTITY_BURST", "0", 1);
  auto bad = gw::gateway_options_from_env();
  REQUIRE(!bad.ok());
  CHECK(bad.status().message().find("RATE_LIMIT_IDENTITY_BURST") != std::string::npos);
  for (const char* v :
       {"AUTH_DEV_TOKENS", "UPSTREAM_MAX_IN_FLIGHT", "RATE_LIMIT_IDENTITY_RPS",
        "RATE_LIMIT_ADDRESS_RPS", "RATE_LIMIT_ADDRESS_BURST", "RATE_LIMIT_IDENTITY_BURST"}) {
    ::unsetenv(v);
  }
  gw::GatewayOptions defaults;
  CHECK(defaults.max_in_flight == 256);
  CHECK(defaults.identity_limit.rate == 50);
  CHECK(defaults.address_limit.rate == 500);
}

TEST_CASE("client_address reads X-Forwarded-For only from a trusted proxy, from the right") {
  using V = std::vector<std::string_view>;
  const std::vector<std::string> proxies = {"10.0.0.1", "10.0.0.2"};
  auto from_proxy = [&](V xff) { return gw::client_address("10.0.0.1", xff, proxies); };
  // A trusted peer: the rightmost address that is not a trusted proxy.
  CHECK(from_proxy({}) == "10.0.0.1");
  CHECK(from_proxy({"203.0.113.7"}) == "203.0.113.7");
  CHECK(from_proxy({"198.51.100.1, 203.0.113.7"}) == "203.0.113.7");  // the left is the client's
  CHECK(from_proxy({"198.51.100.1,203.0.113.7 , 10.0.0.2"}) == "203.0.113.7");
  CHECK(from_proxy({"198.51.100.1", "203.0.113.7"}) == "203.0.113.7");  // two header fields
  CHECK(from_proxy({"10.0.0.2, 10.0.0.1"}) == "10.0.0.2");  // every hop trusted: the leftmost
  CHECK(from_proxy({"2001:db8::1"}) == "2001:db8::1");
  CHECK(from_proxy({"::ffff:203.0.113.7"}) == "203.0.113.7");
  CHECK(gw::client_address("::ffff:10.0.0.1", {"203.0.113.7"}, proxies) == "203.0.113.7");
  // An untrusted peer's header is ignored, whatever it says.
  CHECK(gw::client_address("192.0.2.5", {"203.0.113.7"}, proxies) == "192.0.2.5");
  CHECK(gw::client_address("192.0.2.5", {"10.0.0.1"}, proxies) == "192.0.2.5");
  CHECK(gw::client_address("127.0.0.1", {"203.0.113.7"}, {}) == "127.0.0.1");
  // Malformed where it is read: the peer.
  for (const char* bad : {"not-an-ip", "203.0.113.7:443", "", " ", "203.0.113.7,",
                          "203.0.113.7, garbage", "10.0.0.0/8", "[2001:db8::1]",
                          "203.0.113.7 198.51.100.1", "unknown"}) {
    CAPTURE(bad);
    CHECK(from_proxy({bad}) == "10.0.0.1");
  }
  // Left of the client, nothing is read: garbage there changes nothing.
  CHECK(from_proxy({"garbage, 203.0.113.7"}) == "203.0.113.7");

  auto parsed = gw::parse_trusted_proxies(" 10.0.0.1 ,::1,::ffff:10.0.0.3");
  REQUIRE(parsed.ok());
  CHECK(*parsed == std::vector<std::string>{"10.0.0.1", "::1", "10.0.0.3"});
  CHECK(gw::parse_trusted_proxies("")->empty());
  CHECK(gw::parse_trusted_proxies("  ")->empty());
  for (const char* bad :
       {"10.0.0.0/8", "proxy.local", "10.0.0.1,,10.0.0.2", "10.0.0.1,", "10.0.0.1:80"}) {
    CAPTURE(bad);
    check_invalid_argument(gw::parse_trusted_proxies(bad), "TRUSTED_PROXIES");
  }
  ::setenv("AUTH_DEV_TOKENS", "1", 1);
  ::setenv("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.9", 1);
  auto o = gw::gateway_options_from_env();
  REQUIRE(o.ok());
  CHECK(o->trusted_proxies == std::vector<std::string>{"127.0.0.1", "10.0.0.9"});
  ::setenv("TRUSTED_PROXIES", "everyone", 1);
  check_invalid_argument(gw::gateway_options_from_env(), "TRUSTED_PROXIES");
  ::unsetenv("TRUSTED_PROXIES");
  ::unsetenv("AUTH_DEV_TOKENS");
  CHECK(gw::GatewayOptions{}.trusted_proxies.empty());
}

TEST_CASE("behind a trusted proxy each forwarded client has its own address limit") {
  Fixture upstreams_only;  // its own gateway is not used here
  TestClock clock;         // never advanced: no bucket refills
  gw::GatewayOptions options;
  options.rate_clock = clock.now();
  options.address_limit = {.rate = 1, .burst = 2};
  auto status_with = [](const TestGateway& gateway, std::optional<std::string> xff) {
    Headers h;
    if (xff) h.emplace_back("X-Forwarded-For", *xff);
    auto r = gateway.anonymous().get("/places/p-1", h);  // public: only the address limit
    REQUIRE(r.ok());
    return r->status;
  };

  SUBCASE("a trusted proxy: the rightmost untrusted address is the client") {
    options.trusted_proxies = {"127.0.0.1"};
    TestGateway gateway(upstreams_only.upstreams(), options);
    CHECK(status_with(gateway, "203.0.113.7") == 200);
    CHECK(status_with(gateway, "198.51.100.1, 203.0.113.7") == 200);  // the same client
    CHECK(status_with(gateway, "203.0.113.7") == 429);
    CHECK(status_with(gateway, "203.0.113.8") == 200);  // another client, another bucket
    CHECK(status_with(gateway, "203.0.113.8, 127.0.0.1") == 200);  // through two proxies
    CHECK(status_with(gateway, "203.0.113.8") == 429);
    // A client forging addresses left of its own gains nothing.
    CHECK(status_with(gateway, "192.0.2.1, 203.0.113.7") == 429);
    CHECK(status_with(gateway, std::nullopt) == 200);  // the proxy's own requests: its bucket
  }
  SUBCASE("an untrusted peer forging the header is limited by its own address") {
    options.trusted_proxies = {"192.0.2.1"};
    TestGateway gateway(upstreams_only.upstreams(), options);
    CHECK(status_with(gateway, "203.0.113.1") == 200);
    CHECK(status_with(gateway, "203.0.113.2") == 200);
    CHECK(status_with(gateway, "203.0.113.3") == 429);  // all three counted on 127.0.0.1
    CHECK(status_with(gateway, "192.0.2.1") == 429);
  }
  SUBCASE("without TRUSTED_PROXIES the header is never read") {
    TestGateway gateway(upstreams_only.upstreams(), options);
    CHECK(status_with(gateway, "203.0.113.1") == 200);
    CHECK(status_with(gateway, "203.0.113.2") == 200);
    CHECK(status_with(gateway, "203.0.113.3") == 429);
  }
  SUBCASE("a malformed header from a trusted proxy counts against the proxy") {
    options.trusted_proxies = {"127.0.0.1"};
    TestGateway gateway(upstreams_only.upstreams(), options);
    CHECK(status_with(gateway, "not-an-address") == 200);
    CHECK(status_with(gateway, "203.0.113.7:443") == 200);
    CHECK(status_with(gateway, "203.0.113.7, ") == 429);  // the proxy's bucket is spent
    CHECK(status_with(gateway, std::nullopt) == 429);
    CHECK(status_with(gateway, "203.0.113.7") == 200);  // a well-formed one is its client's
  }
}

// ---- replicas --------------------------------------------------------------

TEST_CASE("parse_replicas reads one address or a comma-separated list") {
  auto one = gw::parse_replicas("RESERVATION_ADDR", "127.0.0.1:8082");
  REQUIRE(one.ok());
  CHECK(*one == gw::Replicas{{"127.0.0.1", 8082}});
  auto three = gw::parse_replicas("RESERVATION_ADDR", "127.0.0.1:8082, 127.0.0.1:8182 ,[::1]:9");
  REQUIRE(three.ok());
  CHECK(*three == gw::Replicas{{"127.0.0.1", 8082}, {"127.0.0.1", 8182}, {"::1", 9}});
  CHECK(gw::replicas_to_string(*three) == "127.0.0.1:8082, 127.0.0.1:8182, [::1]:9");

  for (const char* bad : {"", " ", ",", "127.0.0.1:8082,", ",127.0.0.1:8082",
                          "127.0.0.1:8082,,127.0.0.1:8182", "127.0.0.1:8082,127.0.0.1",
                          "127.0.0.1:8082;127.0.0.1:8182", "127.0.0.1:8082,127.0.0.1:8082"}) {
    CAPTURE(bad);
    auto r = gw::parse_replicas("RESERVATION_ADDR", bad);
    check_invalid_argument(r, "RESERVATION_ADDR");
  }
  CHECK(gw::parse_replicas("X_ADDR", "a:1,b:2,a:1").status().message().find("a:1 twice") !=
        std::string::npos);
  CHECK(gw::parse_replicas("X_ADDR", "a:1, ,b:2").status().message().find("entry 2") !=
        std::string::npos);
  CHECK(gw::parse_replicas("X_ADDR", "a:1,b").status().message().find("'b'") != std::string::npos);
}

TEST_CASE("upstreams from the environment may list several replicas") {
  for (const char* v : {"RESERVATION_ADDR", "PAYMENT_ADDR", "INVENTORY_ADDR", "MYPAGE_ADDR"})
    ::unsetenv(v);
  ::setenv("MYPAGE_ADDR", "127.0.0.1:8086,127.0.0.1:8186", 1);
  ::setenv("PAYMENT_ADDR", "127.0.0.1:9083", 1);
  auto set = gw::upstreams_from_env();
  REQUIRE(set.ok());
  CHECK(set->mypage == gw::Replicas{{"127.0.0.1", 8086}, {"127.0.0.1", 8186}});
  CHECK(set->payment == gw::Replicas{{"127.0.0.1", 9083}});
  CHECK(set->reservation == gw::Replicas{{"127.0.0.1", 8082}});
  ::setenv("INVENTORY_ADDR", "127.0.0.1:8084,inventory-1", 1);
  check_invalid_argument(gw::upstreams_from_env(), "INVENTORY_ADDR");
  for (const char* v : {"PAYMENT_ADDR", "INVENTORY_ADDR", "MYPAGE_ADDR"}) ::unsetenv(v);
}

TEST_CASE("a replica set goes round robin and puts a replica that failed last for a while") {
  TestClock clock;
  gw::ReplicaSet set({{"a", 1}, {"b", 2}, {"c", 3}}, 1s, clock.now());
  CHECK(set.order() == std::vector<size_t>{0, 1, 2});
  CHECK(set.order() == std::vector<size_t>{1, 2, 0});
  CHECK(set.order() == std::vector<size_t>{2, 0, 1});
  CHECK(set.order() == std::vector<size_t>{0, 1, 2});

  set.failed(1);
  CHECK(set.avoided(1));
  CHECK(set.order() == std::vector<size_t>{2, 0, 1});  // its turn: on to the next, 1 last
  CHECK(set.order() == std::vector<size_t>{2, 0, 1});
  CHECK(set.order() == std::vector<size_t>{0, 2, 1});
  clock.advance(999ms);
  CHECK(set.order() == std::vector<size_t>{2, 0, 1});  // start 1 again: still avoided
  clock.advance(1ms);
  CHECK(!set.avoided(1));
  CHECK(set.order() == std::vector<size_t>{2, 0, 1});  // start 2
  CHECK(set.order() == std::vector<size_t>{0, 1, 2});
  CHECK(set.order() == std::vector<size_t>{1, 2, 0});  // back in its turn

  SUBCASE("a connection clears it at once") {
    set.failed(0);
    set.failed(2);
    CHECK(set.order() == std::vector<size_t>{1, 2, 0});  // start 2: both avoided after 1
    set.connected(2);
    CHECK(!set.avoided(2));
    CHECK(set.order() == std::vector<size_t>{1, 2, 0});  // start 0: avoided, so last
  }
  SUBCASE("when all are avoided each is still tried, in turn") {
    for (size_t i = 0; i < 3; ++i) set.failed(i);
    CHECK(set.order() == std::vector<size_t>{2, 0, 1});
    CHECK(set.order() == std::vector<size_t>{0, 1, 2});
  }
  SUBCASE("one replica is always the one") {
    gw::ReplicaSet single({{"a", 1}}, 1s, clock.now());
    single.failed(0);
    CHECK(single.order() == std::vector<size_t>{0});
    CHECK(single.order() == std::vector<size_t>{0});
  }
}

namespace {

// The value of the failover counter of `upstream` in the gateway's /metrics.
int failovers(const TestGateway& gateway, const std::string& upstream) {
  auto metrics = gateway.client().get("/metrics");
  REQUIRE(metrics.ok());
  const std::string line = "gateway_upstream_failovers_total{upstream=\"" + upstream + "\"} ";
  const size_t at = metrics->body.find(line);
  REQUIRE(at != std::string::npos);
  return std::stoi(metrics->body.substr(at + line.size()));
}

}  // namespace

TEST_CASE("requests alternate between the replicas of an upstream") {
  FakeUpstream other("other");
  FakeUpstream first("mypage-0");
  FakeUpstream second("mypage-1");
  gw::Upstreams upstreams =
      one_each(other.address(), other.address(), other.address(), other.address());
  upstreams.mypage = {first.address(), second.address()};
  TestGateway gateway(upstreams);
  HttpClient client = gateway.client();
  std::vector<std::string> answered_by;
  for (int i = 0; i < 4; ++i) {
    auto res = client.get("/mypages/r-" + std::to_string(i));
    REQUIRE(res.ok());
    CHECK(res->status == 200);
    auto doc = res->json();
    REQUIRE(doc.ok());
    answered_by.push_back((*doc)["upstream"].get<std::string>());
  }
  CHECK(answered_by == std::vector<std::string>{"mypage-0", "mypage-1", "mypage-0", "mypage-1"});
  CHECK(first.seen().size() == 2);
  CHECK(second.seen().size() == 2);
  CHECK(other.seen().empty());
  CHECK(failovers(gateway, "mypage") == 0);
}

TEST_CASE("a replica that refuses connections is skipped, for any method, and avoided a while") {
  TestClock clock;
  FakeUpstream other("other");
  FakeUpstream live("reservation-1");
  const uint16_t dead = closed_port();
  gw::GatewayOptions options;
  options.replica_clock = clock.now();
  gw::Upstreams upstreams =
      one_each(other.address(), other.address(), other.address(), other.address());
  upstreams.reservation = {{"127.0.0.1", dead}, live.address()};
  TestGateway gateway(upstreams, options);
  HttpClient client = gateway.client();

  // The first request's turn is the dead replica: nothing was sent there, so
  // even a POST goes on to the next one, once.
  auto post = client.post_json("/reservations", {{"placeId", "p-1"}});
  REQUIRE(post.ok());
  CHECK(post->status == 200);
  REQUIRE(live.seen().size() == 1);
  CHECK(live.seen()[0].method == "POST");
  CHECK(live.seen()[0].body == R"({"placeId":"p-1"})");
  CHECK(failovers(gateway, "reservation") == 1);

  // Avoided now: every request goes to the live one without trying it.
  for (int i = 0; i < 4; ++i) {
    auto res = client.get("/reservations/r-" + std::to_string(i));
    REQUIRE(res.ok());
    CHECK(res->status == 200);
  }
  CHECK(live.seen().size() == 5);
  CHECK(failovers(gateway, "reservation") == 1);

  // A second later it is tried again in its turn (and skipped again).
  clock.advance(1s);
  for (int i = 0; i < 2; ++i) {
    auto res = client.get("/reservations/r-" + std::to_string(i));
    REQUIRE(res.ok());
    CHECK(res->status == 200);
  }
  CHECK(live.seen().size() == 7);
  CHECK(failovers(gateway, "reservation") == 2);
  CHECK(other.seen().empty());
}

TEST_CASE("when no replica can be reached the answer is 503 naming every one") {
  FakeUpstream other("other");
  const uint16_t dead_a = closed_port();
  const uint16_t dead_b = closed_port();
  gw::Upstreams upstreams =
      one_each(other.address(), other.address(), other.address(), other.address());
  upstreams.payment = {{"127.0.0.1", dead_a}, {"127.0.0.1", dead_b}};
  TestGateway gateway(upstreams);
  HttpClient client = gateway.client();
  auto res = client.post_json("/payments", {{"amount", 10}});
  REQUIRE(res.ok());
  json doc = check_problem(*res, 503);
  CHECK(res->header("Retry-After") == "1");
  const std::string a = "127.0.0.1:" + std::to_string(dead_a);
  const std::string b = "127.0.0.1:" + std::to_string(dead_b);
  CHECK(contains(doc, "upstream payment (" + a + ", " + b + ") is not reachable"));
  CHECK(contains(doc, "cannot connect to " + a));
  CHECK(contains(doc, "cannot connect to " + b));
  CHECK(other.seen().empty());
}

TEST_CASE("/readyz counts an upstream ready when one of its replicas is") {
  FakeUpstream up("up");
  FakeUpstream mypage_a("mypage-0");
  FakeUpstream mypage_b("mypage-1");
  gw::Upstreams upstreams = one_each(up.address(), up.address(), up.address(), up.address());
  upstreams.mypage = {mypage_a.address(), mypage_b.address()};
  gw::GatewayOptions options;
  options.readiness_timeout = 2s;
  TestGateway gateway(upstreams, options);
  auto ready = [&] {
    auto res = gateway.client().get("/readyz");
    REQUIRE(res.ok());
    return *res;
  };
  CHECK(ready().status == 200);
  mypage_a.set_ready(false);
  CHECK(ready().status == 200);
  mypage_b.set_ready(false);
  ClientResponse none = ready();
  CHECK(none.status == 503);
  auto doc = none.json();
  REQUIRE(doc.ok());
  bool named = false;
  for (const auto& c : (*doc)["checks"]) {
    if (c["name"] == "mypage") {
      CHECK(c["ok"] == false);
      const std::string message = c["message"].get<std::string>();
      named = message.find("no replica is ready") != std::string::npos &&
              message.find(mypage_a.address().to_string()) != std::string::npos &&
              message.find(mypage_b.address().to_string()) != std::string::npos;
    }
  }
  CHECK(named);
  mypage_b.set_ready(true);
  CHECK(ready().status == 200);
}
