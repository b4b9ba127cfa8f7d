// saga::service HTTP plumbing: server, router, request/response helpers,
// standard endpoints, client and config. Servers listen on 127.0.0.1, port 0.
#include "saga/service/http_server.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "saga/service/config.h"
#include "saga/service/http_client.h"
#include "saga/service/logging.h"
#include "saga/service/router.h"
#include "saga/service/standard_routes.h"
#include "support/eventually.h"
#include "support/raw_connection.h"

using namespace std::chrono_literals;
using nlohmann::json;
using saga::Status;
using saga::StatusCode;
using namespace saga::service;

namespace {

constexpr auto kDeadline = 20s;

ServerOptions loopback(ServerOptions o = {}) {
  o.host = "127.0.0.1";
  o.port = 0;
  return o;
}

// A started server on 127.0.0.1 and an ephemeral port.
struct TestServer {
  explicit TestServer(Router router, ServerOptions options = {})
      : server(loopback(std::move(options)), std::move(router)) {
    Status s = server.start();
    REQUIRE_MESSAGE(s.ok(), s.to_string());
    REQUIRE(server.port() != 0);
  }
  HttpClient client(ClientOptions options = {}) const {
    return HttpClient("127.0.0.1", server.port(), options);
  }
  HttpServer server;
};

// Polls `pred` until it holds or the deadline passes.
bool eventually(const std::function<bool()>& pred) {
  return saga::testing::eventually(pred, kDeadline, 1ms);
}

// What every response carries, whatever its status.
void check_common_headers(const ClientResponse& res) {
  CHECK(res.header("Content-Type").has_value());
  CHECK(res.header("Content-Length").has_value());
  CHECK(res.header("Date").has_value());
  auto id = res.header("X-Request-Id");
  REQUIRE(id.has_value());
  CHECK(is_valid_request_id(*id));
  auto tp = res.header("traceparent");
  REQUIRE(tp.has_value());
  CHECK(TraceContext::parse(*tp).has_value());
}

// Checks an RFC 7807 problem response and returns its document.
json check_problem(const ClientResponse& res, int status, std::string_view path) {
  check_common_headers(res);
  CHECK(res.status == status);
  CHECK(res.header("Content-Type") == "application/problem+json");
  auto doc = res.json();
  REQUIRE(doc.ok());
  CHECK((*doc)["type"] == "about:blank");
  CHECK((*doc)["title"] == std::string(reason_phrase(status)));
  CHECK((*doc)["status"] == status);
  CHECK((*doc)["detail"].is_string());
  CHECK((*doc)["instance"] == std::string(path));
  CHECK((*doc)["requestId"] == std::string(*res.header("X-Request-Id")));
  return *doc;
}

using saga::testing::RawConnection;

int status_of(const std::string& raw) { return raw.size() >= 12 ? std::stoi(raw.substr(9, 3)) : 0; }
std::string body_of(const std::string& raw) {
  size_t end = raw.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : raw.substr(end + 4);
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() { ::unsetenv(name_); }

 private:
  const char* name_;
};

}  // namespace

TEST_CASE("the router matches patterns, decodes path parameters and query values") {
  Router router;
  auto describe = [](const Request& req) {
    json out{{"route", req.route()}, {"id", req.param("id")}};
    for (const char* name : {"userId", "name", "flag", "missing"}) {
      auto v = req.query(name);
      out[name] = v ? json(*v) : json(nullptr);
    }
    return Response::json(200, out);
  };
  router.get("/reservations/{id}", describe);
  router.get("/reservations/search", describe);
  router.get("/files/{rest...}", [](const Request& req) {
    return Response::text(200, std::string(req.param("rest")));
  });
  TestServer ts(std::move(router));
  auto client = ts.client();

  auto res = client.get("/reservations/a%20b%2Fc?userId=u%2B1%26x&name=J+D&flag");
  REQUIRE(res.ok());
  check_common_headers(*res);
  CHECK(res->status == 200);
  CHECK(res->header("Content-Type") == "application/json");
  auto body = res->json();
  REQUIRE(body.ok());
  CHECK((*body)["route"] == "/reservations/{id}");
  CHECK((*body)["id"] == "a b/c");
  CHECK((*body)["userId"] == "u+1&x");
  CHECK((*body)["name"] == "J D");
  CHECK((*body)["flag"] == "");
  CHECK((*body)["missing"].is_null());

  SUBCASE("a literal segment beats a parameter") {
    auto search = client.get("/reservations/search?userId=7");
    REQUIRE(search.ok());
    CHECK((*search->json())["route"] == "/reservations/search");
    CHECK((*search->json())["userId"] == "7");
  }
  SUBCASE("a tail parameter captures the raw rest of the path") {
    auto file = client.get("/files/a/b%20c?x=1");
    REQUIRE(file.ok());
    CHECK(file->body == "a/b%20c");
  }
  SUBCASE("bad percent-encoding is a 400 problem") {
    auto bad = client.get("/reservations/%zz");
    REQUIRE(bad.ok());
    auto doc = check_problem(*bad, 400, "/reservations/%zz");
    CHECK(doc["detail"].get<std::string>().find("percent-encoding") != std::string::npos);
    auto bad_query = client.get("/reservations/1?userId=%4");
    REQUIRE(bad_query.ok());
    check_problem(*bad_query, 400, "/reservations/1");
  }
}

TEST_CASE("route patterns are checked when registered") {
  Router router;
  router.get("/a/{id}", [](const Request&) { return Response(); });
  CHECK_THROWS_AS(router.get("/a/{id}", [](const Request&) { return Response(); }),
                  std::invalid_argument);
  CHECK_THROWS_AS(router.get("no-slash", [](const Request&) { return Response(); }),
                  std::invalid_argument);
  CHECK_THROWS_AS(router.get("/a/{x", [](const Request&) { return Response(); }),
                  std::invalid_argument);
  CHECK_THROWS_AS(router.get("/a/{rest...}/b", [](const Request&) { return Response(); }),
                  std::invalid_argument);
  CHECK_THROWS_AS(router.get("/a/x{y}", [](const Request&) { return Response(); }),
                  std::invalid_argument);
  CHECK_NOTHROW(router.put("/a/{id}", [](const Request&) { return Response(); }));

  // The router also works without a server, for handler unit tests.
  Request req("PUT", "/a/42");
  Response res = router.handle(req);
  CHECK(res.status() == 200);
  CHECK(req.route() == "/a/{id}");
  CHECK(req.param("id") == "42");
}

TEST_CASE("unknown paths get 404 and known paths with another method 405 with Allow") {
  Router router;
  router.get("/reservations/{id}", [](const Request&) { return Response::text(200, "x"); });
  router.put("/reservations/{id}", [](const Request&) { return Response::text(200, "x"); });
  TestServer ts(std::move(router));
  auto client = ts.client();

  auto missing = client.get("/nothing/here");
  REQUIRE(missing.ok());
  auto doc = check_problem(*missing, 404, "/nothing/here");
  CHECK(doc["detail"] == "no route for GET /nothing/here");

  auto wrong = client.del("/reservations/1");
  REQUIRE(wrong.ok());
  check_problem(*wrong, 405, "/reservations/1");
  CHECK(wrong->header("Allow") == "GET, HEAD, PUT");

  auto head = client.request("HEAD", "/reservations/1");
  REQUIRE(head.ok());
  CHECK(head->status == 200);
  CHECK(head->body.empty());
  CHECK(head->header("Content-Length") == "1");
}

TEST_CASE("JSON bodies: malformed is a 400 problem with detail, a non-JSON type 415") {
  Router router;
  router.post("/echo", with_json_body([](const Request&, const json& body) {
                return Response::json(201, body);
              }));
  router.post("/direct", [](const Request& req) {
    auto body = req.json();
    if (!body.ok()) return Response::from_status(body.status());
    return Response::json(200, *body);
  });
  TestServer ts(std::move(router));
  auto client = ts.client();

  auto ok = client.request("POST", "/echo", {{"Content-Type", "application/json; charset=UTF-8"}},
                           R"({"a":[1,2]})");
  REQUIRE(ok.ok());
  CHECK(ok->status == 201);
  CHECK(*ok->json() == json{{"a", {1, 2}}});

  auto merge =
      client.request("POST", "/echo", {{"Content-Type", "application/merge-patch+json"}}, "{}");
  REQUIRE(merge.ok());
  CHECK(merge->status == 201);

  auto malformed =
      client.request("POST", "/echo", {{"Content-Type", "application/json"}}, R"({"a":)");
  REQUIRE(malformed.ok());
  auto doc = check_problem(*malformed, 400, "/echo");
  std::string detail = doc["detail"];
  CHECK(detail.find("malformed JSON body") != std::string::npos);
  CHECK(detail.find("line 1") != std::string::npos);
  CHECK(detail.find("json.exception") == std::string::npos);

  auto empty = client.request("POST", "/echo", {{"Content-Type", "application/json"}}, "");
  REQUIRE(empty.ok());
  CHECK(check_problem(*empty, 400, "/echo")["detail"].get<std::string>().find("empty") !=
        std::string::npos);

  for (const char* type :
       {"text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin1"}) {
    CAPTURE(type);
    auto wrong = client.request("POST", "/echo", {{"Content-Type", type}}, "{}");
    REQUIRE(wrong.ok());
    auto d = check_problem(*wrong, 415, "/echo");
    CHECK(d["detail"].get<std::string>().find(type) != std::string::npos);
  }
  // Without a Content-Type header at all (HttpClient would add one to a body).
  RawConnection raw(ts.server.port());
  REQUIRE(raw.connected());
  REQUIRE(raw.send_all("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"));
  std::string no_type = raw.read_response();
  CHECK(status_of(no_type) == 415);
  CHECK(body_of(no_type).find("header is missing") != std::string::npos);

  // Request::json() errors through from_status are 400 (InvalidArgument).
  auto direct = client.request("POST", "/direct", {{"Content-Type", "application/json"}}, "[1,");
  REQUIRE(direct.ok());
  CHECK(check_problem(*direct, 400, "/direct")["code"] == "INVALID_ARGUMENT");
}

TEST_CASE("an oversized body gets 413 and oversized headers 431") {
  Router router;
  router.post("/upload", [](const Request& req) {
    return Response::json(200, {{"bytes", req.body().size()}});
  });
  TestServer ts(std::move(router));  // default limits: 1 MiB body, 8 KiB headers

  auto at_limit =
      ts.client().request("POST", "/upload", {{"Content-Type", "application/octet-stream"}},
                          std::string(1024 * 1024, 'x'));
  REQUIRE(at_limit.ok());
  CHECK(at_limit->status == 200);
  CHECK((*at_limit->json())["bytes"] == 1024 * 1024);

  auto too_big =
      ts.client().request("POST", "/upload", {{"Content-Type", "application/octet-stream"}},
                          std::string(1024 * 1024 + 1, 'x'));
  REQUIRE_MESSAGE(too_big.ok(), too_big.status().to_string());
  auto doc = check_problem(*too_big, 413, "/upload");
  CHECK(doc["detail"] == "request body exceeds 1048576 bytes");
  CHECK(too_big->header("Connection") == "close");

  auto big_header = ts.client().get("/upload", {{"X-Padding", std::string(9 * 1024, 'h')}});
  REQUIRE_MESSAGE(big_header.ok(), big_header.status().to_string());
  CHECK(big_header->status == 431);
  CHECK(big_header->header("Content-Type") == "application/problem+json");

  // Small limits come from the options.
  ServerOptions small;
  small.body_limit = 10;
  Router r2;
  r2.post("/upload", [](const Request&) { return Response::text(200, "ok"); });
  TestServer ts2(std::move(r2), small);
  auto over =
      ts2.client().request("POST", "/upload", {{"Content-Type", "text/plain"}}, "01234567890");
  REQUIRE(over.ok());
  CHECK(over->status == 413);
  // A chunked body is limited too, as it arrives.
  RawConnection raw(ts2.server.port());
  REQUIRE(raw.connected());
  REQUIRE(
      raw.send_all("POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n"));
  CHECK(status_of(raw.read_response()) == 413);
}

TEST_CASE("request ids are taken when sane, generated otherwise, and echoed") {
  Router router;
  router.get("/id", [](const Request& req) { return Response::text(200, req.request_id()); });
  TestServer ts(std::move(router));
  auto client = ts.client();

  auto given = client.get("/id", {{"X-Request-Id", "abc-123 from client"}});
  REQUIRE(given.ok());
  CHECK(given->body == "abc-123 from client");
  CHECK(given->header("X-Request-Id") == "abc-123 from client");

  auto generated = client.get("/id");
  REQUIRE(generated.ok());
  CHECK(generated->body.size() == 32);
  CHECK(generated->header("X-Request-Id") == generated->body);
  auto generated2 = client.get("/id");
  REQUIRE(generated2.ok());
  CHECK(generated2->body != generated->body);

  auto too_long = client.get("/id", {{"X-Request-Id", std::string(129, 'a')}});
  REQUIRE(too_long.ok());
  CHECK(too_long->body.size() == 32);
  CHECK(too_long->header("X-Request-Id") == too_long->body);
  auto max_len = client.get("/id", {{"X-Request-Id", std::string(128, 'a')}});
  REQUIRE(max_len.ok());
  CHECK(max_len->body == std::string(128, 'a'));

  auto non_ascii = client.get("/id", {{"X-Request-Id", "caf\xc3\xa9"}});
  REQUIRE(non_ascii.ok());
  CHECK(non_ascii->body.size() == 32);

  // Errors carry it too, in the header and in the problem.
  auto problem = client.get("/nope", {{"X-Request-Id", "req-404"}});
  REQUIRE(problem.ok());
  CHECK(check_problem(*problem, 404, "/nope")["requestId"] == "req-404");
}

TEST_CASE("traceparent is parsed strictly") {
  const std::string valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  auto ctx = TraceContext::parse(valid);
  REQUIRE(ctx.has_value());
  CHECK(ctx->trace_id == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(ctx->parent_id == "00f067aa0ba902b7");
  CHECK(ctx->flags == 1);
  CHECK(ctx->to_string() == valid);
  CHECK_FALSE(TraceContext::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
  CHECK_FALSE(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
  CHECK_FALSE(TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
  CHECK_FALSE(TraceContext::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  CHECK_FALSE(TraceContext::parse(valid + "-extra"));  // version 00 has nothing more
  CHECK_FALSE(TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"));
  CHECK_FALSE(TraceContext::parse("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  CHECK(TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"));
  CHECK_FALSE(TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"));

  TraceContext child = ctx->child();
  CHECK(child.trace_id == ctx->trace_id);
  CHECK(child.parent_id != ctx->parent_id);
  CHECK(TraceContext::parse(TraceContext::generate().to_string()).has_value());
}

TEST_CASE("trace and request ids come from the CSPRNG: a forked process does not repeat them") {
  // A per-thread generator seeded once (the mt19937 these ids came from) is copied
  // by fork(): parent and child then draw the same "random" ids. The CSPRNG reseeds.
  (void)generate_request_id();  // the parent's generator is in use before the fork
  (void)TraceContext::generate();
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string ids = generate_request_id() + TraceContext::generate().to_string();
    const ssize_t n = ::write(fds[1], ids.data(), ids.size());
    ::_exit(n == static_cast<ssize_t>(ids.size()) ? 0 : 1);
  }
  ::close(fds[1]);
  const std::string mine = generate_request_id() + TraceContext::generate().to_string();
  std::string childs(mine.size() + 1, '\0');
  size_t got = 0;
  for (ssize_t n; got < childs.size() && (n = ::read(fds[0], childs.data() + got,
                                                      childs.size() - got)) > 0;) {
    got += static_cast<size_t>(n);
  }
  ::close(fds[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(got == mine.size());
  childs.resize(got);
  const std::string child_request_id = childs.substr(0, 32);
  const std::string child_trace_id = childs.substr(35, 32);
  CHECK(child_request_id != mine.substr(0, 32));
  CHECK(child_trace_id != mine.substr(35, 32));
  CHECK(TraceContext::parse(childs.substr(32)).has_value());
  CHECK(child_request_id.find_first_not_of("0123456789abcdef") == std::string::npos);
}

TEST_CASE("traceparent is propagated when valid and generated otherwise") {
  Router router;
  router.get("/trace", [](const Request& req) {
    return Response::json(200,
                          {{"traceparent", req.traceparent()}, {"trace_id", req.trace().trace_id}});
  });
  TestServer ts(std::move(router));
  auto client = ts.client();
  const std::regex format("00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}");

  const std::string incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  auto kept = client.get("/trace", {{"traceparent", incoming}});
  REQUIRE(kept.ok());
  CHECK((*kept->json())["traceparent"] == incoming);
  CHECK(kept->header("traceparent") == incoming);

  for (const char* bad : {"", "garbage", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"}) {
    CAPTURE(bad);
    Headers h;
    if (*bad) h.emplace_back("traceparent", bad);
    auto fresh = client.get("/trace", h);
    REQUIRE(fresh.ok());
    std::string tp = (*fresh->json())["traceparent"];
    CHECK(std::regex_match(tp, format));
    CHECK(tp != incoming);
    CHECK(fresh->header("traceparent") == tp);
  }
}

TEST_CASE("saga::Status maps to HTTP status in one table, with Retry-After") {
  struct Row {
    StatusCode code;
    int http;
  };
  const Row table[] = {
      {StatusCode::kInvalidArgument, 400},    {StatusCode::kOutOfRange, 400},
      {StatusCode::kNotFound, 404},           {StatusCode::kAlreadyExists, 409},
      {StatusCode::kFailedPrecondition, 409}, {StatusCode::kAborted, 409},
      {StatusCode::kResourceExhausted, 429},  {StatusCode::kUnavailable, 503},
      {StatusCode::kDeadlineExceeded, 504},   {StatusCode::kUnimplemented, 501},
      {StatusCode::kCancelled, 500},          {StatusCode::kInternal, 500},
      {StatusCode::kDataLoss, 500},
  };
  Router router;
  router.get("/status/{code}/{retry_ms}", [](const Request& req) {
    Status s(static_cast<StatusCode>(std::stoi(std::string(req.param("code")))),
             "the reason " + std::string(req.param("code")));
    return Response::from_status(s.with_retry_after(
        std::chrono::milliseconds(std::stoi(std::string(req.param("retry_ms"))))));
  });
  TestServer ts(std::move(router));
  auto client = ts.client();

  for (const Row& row : table) {
    int code = static_cast<int>(row.code);
    CAPTURE(code);
    CHECK(http_status_for(row.code) == row.http);
    std::string path = "/status/" + std::to_string(code) + "/0";
    auto res = client.get(path);
    REQUIRE(res.ok());
    auto doc = check_problem(*res, row.http, path);
    CHECK(doc["code"] == std::string(saga::status_code_name(row.code)));
    CHECK(doc["detail"] == "the reason " + std::to_string(code));
    CHECK_FALSE(res->header("Retry-After").has_value());
  }

  auto unavailable = client.get("/status/14/1500");  // 1.5 s rounds up to 2
  REQUIRE(unavailable.ok());
  CHECK(unavailable->status == 503);
  CHECK(unavailable->header("Retry-After") == "2");
  auto exhausted = client.get("/status/8/1000");
  REQUIRE(exhausted.ok());
  CHECK(exhausted->status == 429);
  CHECK(exhausted->header("Retry-After") == "1");
  auto not_found = client.get("/status/5/3000");  // the hint only means something on 429/503
  REQUIRE(not_found.ok());
  CHECK_FALSE(not_found->header("Retry-After").has_value());

  Response ok = Response::from_status(saga::ok_status());
  CHECK(ok.status() == 200);
  CHECK(ok.body() == "{}");
}

TEST_CASE("an exception in a handler becomes a 500 problem and the server keeps serving") {
  Router router;
  router.get("/throws", [](const Request&) -> Response { throw std::runtime_error("boom"); });
  router.get("/throws-int", [](const Request&) -> Response { throw 42; });
  router.get("/fine", [](const Request&) { return Response::text(200, "fine"); });
  TestServer ts(std::move(router));
  auto client = ts.client();

  for (const char* path : {"/throws", "/throws-int"}) {
    auto res = client.get(path);
    REQUIRE(res.ok());
    auto doc = check_problem(*res, 500, path);
    CHECK(doc["detail"].get<std::string>().find("boom") == std::string::npos);  // not leaked
    auto after = client.get("/fine");
    REQUIRE(after.ok());
    CHECK(after->status == 200);
    CHECK(after->body == "fine");
  }
  CHECK(client.connections_opened() == 1);
}

TEST_CASE("keep-alive serves several requests on one connection, pipelined ones in order") {
  Router router;
  router.get("/echo/{n}",
             [](const Request& req) { return Response::text(200, std::string(req.param("n"))); });
  add_standard_routes(router, {});
  TestServer ts(std::move(router));

  auto client = ts.client();
  for (int i = 0; i < 5; ++i) {
    auto res = client.get("/echo/" + std::to_string(i));
    REQUIRE(res.ok());
    CHECK(res->body == std::to_string(i));
    CHECK(res->header("Connection") != "close");
  }
  CHECK(client.connections_opened() == 1);
  CHECK(ts.server.metrics_text().find("http_server_connections_total 1") != std::string::npos);

  // A host name is resolved (localhost may give ::1 first: the next address is tried).
  auto by_name = HttpClient("localhost", ts.server.port()).get("/healthz");
  REQUIRE_MESSAGE(by_name.ok(), by_name.status().to_string());
  CHECK(by_name->status == 200);

  RawConnection raw(ts.server.port());
  REQUIRE(raw.connected());
  REQUIRE(
      raw.send_all("GET /echo/1 HTTP/1.1\r\nHost: t\r\n\r\n"
                   "GET /echo/2 HTTP/1.1\r\nHost: t\r\n\r\n"
                   "GET /echo/3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
  for (const char* expected : {"1", "2", "3"}) {
    std::string res = raw.read_response();
    CHECK(status_of(res) == 200);
    CHECK(body_of(res) == expected);
  }
  CHECK(raw.closed_by_peer());
}

TEST_CASE("Expect: 100-continue gets an interim response before the body is sent") {
  Router router;
  router.post("/echo", with_json_body([](const Request&, const json& body) {
                return Response::json(200, body);
              }));
  TestServer ts(std::move(router));
  RawConnection raw(ts.server.port());
  REQUIRE(raw.connected());
  REQUIRE(
      raw.send_all("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                   "Content-Length: 7\r\nExpect: 100-continue\r\n\r\n"));
  CHECK(status_of(raw.read_response()) == 100);
  REQUIRE(raw.send_all(R"({"a":1})"));
  std::string res = raw.read_response();
  CHECK(status_of(res) == 200);
  CHECK(body_of(res) == R"({"a":1})");
}

TEST_CASE("/healthz, /readyz and /metrics report liveness, readiness and metrics") {
  std::atomic<bool> broker_up{true};
  StandardProbes probes;
  probes.readiness = [&] {
    return std::vector<ReadinessCheck>{
        {"store", saga::ok_status()},
        {"broker",
         broker_up ? saga::ok_status() : Status::unavailable("no broker at 127.0.0.1:1")}};
  };
  probes.metrics = [] { return std::string("# TYPE saga_test_gauge gauge\nsaga_test_gauge 7"); };
  Router router;
  add_standard_routes(router, probes);
  CHECK_THROWS_AS(add_standard_routes(router, probes), std::invalid_argument);
  TestServer ts(std::move(router));
  auto client = ts.client();

  auto health = client.get("/healthz");
  REQUIRE(health.ok());
  check_common_headers(*health);
  CHECK(health->status == 200);
  CHECK(*health->json() == json{{"status", "ok"}});

  auto ready = client.get("/readyz");
  REQUIRE(ready.ok());
  CHECK(ready->status == 200);
  CHECK((*ready->json())["status"] == "ready");
  CHECK((*ready->json())["checks"].size() == 2);

  broker_up = false;
  auto not_ready = client.get("/readyz");
  REQUIRE(not_ready.ok());
  CHECK(not_ready->status == 503);
  auto doc = *not_ready->json();
  CHECK(doc["status"] == "not ready");
  CHECK(doc["checks"][0] == json{{"name", "store"}, {"ok", true}});
  CHECK(doc["checks"][1]["name"] == "broker");
  CHECK(doc["checks"][1]["ok"] == false);
  CHECK(doc["checks"][1]["code"] == "UNAVAILABLE");
  CHECK(doc["checks"][1]["message"] == "no broker at 127.0.0.1:1");

  REQUIRE(client.get("/nope").ok());
  auto metrics = client.get("/metrics");
  REQUIRE(metrics.ok());
  CHECK(metrics->status == 200);
  CHECK(metrics->header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8");
  const std::string& text = metrics->body;
  CAPTURE(text);
  CHECK(text.find("saga_test_gauge 7\n") != std::string::npos);
  CHECK(text.find(R"(http_server_requests_total{method="GET",route="/healthz",status="200"} 1)") !=
        std::string::npos);
  CHECK(text.find(R"(http_server_requests_total{method="GET",route="/readyz",status="503"} 1)") !=
        std::string::npos);
  CHECK(text.find(R"(http_server_requests_total{method="GET",route="unmatched",status="404"} 1)") !=
        std::string::npos);
  CHECK(
      text.find(
          R"(http_server_request_duration_seconds_count{method="GET",route="/healthz",status="200"} 1)") !=
      std::string::npos);
  CHECK(text.find("http_server_open_connections 1") != std::string::npos);
}

TEST_CASE("stop() lets an in-flight request finish while new connections are refused") {
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  Router router;
  router.get("/slow", [&](const Request&) {
    entered.set_value();
    released.wait();
    return Response::text(200, "finished");
  });
  ServerOptions options;
  options.drain_timeout = 60s;  // far longer than the test: stop() must not wait it out
  TestServer ts(std::move(router), options);
  const uint16_t port = ts.server.port();

  auto in_flight = std::async(std::launch::async, [&] { return ts.client().get("/slow"); });
  REQUIRE(entered.get_future().wait_for(kDeadline) == std::future_status::ready);

  auto stopper = std::async(std::launch::async, [&] { ts.server.stop(); });
  ts.server.stop_accepting();  // idempotent: returns once the listener is closed
  auto refused = HttpClient("127.0.0.1", port).get("/slow");
  CHECK(refused.status().code() == StatusCode::kUnavailable);
  CHECK(refused.status().message().find("refused") != std::string::npos);
  // The handler still blocks, so stop() cannot have returned.
  CHECK(stopper.wait_for(0s) == std::future_status::timeout);

  release.set_value();
  REQUIRE(in_flight.wait_for(kDeadline) == std::future_status::ready);
  auto res = in_flight.get();
  REQUIRE_MESSAGE(res.ok(), res.status().to_string());
  CHECK(res->status == 200);
  CHECK(res->body == "finished");
  CHECK(res->header("Connection") == "close");
  CHECK(stopper.wait_for(kDeadline) == std::future_status::ready);
}

TEST_CASE("stop() closes idle connections at once instead of waiting for the drain timeout") {
  Router router;
  add_standard_routes(router, {});
  ServerOptions options;
  options.drain_timeout = 60s;
  TestServer ts(std::move(router), options);

  auto client = ts.client();
  REQUIRE(client.get("/healthz").ok());    // a kept-alive, idle connection
  RawConnection silent(ts.server.port());  // a connection that never sends
  REQUIRE(silent.connected());
  RawConnection late(ts.server.port());  // one whose request comes after stop() began
  REQUIRE(late.connected());
  REQUIRE(eventually([&] {
    return ts.server.metrics_text().find("http_server_open_connections 3") != std::string::npos;
  }));

  auto stopper = std::async(std::launch::async, [&] { ts.server.stop(); });
  ts.server.stop_accepting();
  REQUIRE(late.send_all("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
  std::string answer = late.read_response();
  CHECK(status_of(answer) == 200);
  CHECK(answer.find("Connection: close") != std::string::npos);

  REQUIRE(stopper.wait_for(kDeadline) == std::future_status::ready);
  CHECK(silent.closed_by_peer());
  CHECK(late.closed_by_peer());
  // The client notices its connection is gone and the server with it.
  CHECK(client.get("/healthz").status().code() == StatusCode::kUnavailable);
}

TEST_CASE("stop() closes connections still busy after the drain timeout") {
  Router router;
  router.post("/upload", [](const Request&) { return Response::text(200, "ok"); });
  ServerOptions options;
  options.drain_timeout = 100ms;
  TestServer ts(std::move(router), options);

  // The interim 100 response proves the server is reading this request's body,
  // which never comes: only the drain timeout ends it.
  RawConnection raw(ts.server.port());
  REQUIRE(raw.connected());
  REQUIRE(
      raw.send_all("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
                   "Expect: 100-continue\r\n\r\n"));
  REQUIRE(status_of(raw.read_response()) == 100);
  REQUIRE(raw.send_all("012"));

  auto stopper = std::async(std::launch::async, [&] { ts.server.stop(); });
  REQUIRE(stopper.wait_for(kDeadline) == std::future_status::ready);
  CHECK(raw.read_response().empty());  // closed without an answer
}

TEST_CASE(
    "HttpClient reports refused connections as Unavailable and slow answers as DeadlineExceeded") {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  Router router;
  router.get("/slow", [&](const Request&) {
    released.wait();
    return Response::text(200, "late");
  });
  TestServer ts(std::move(router));

  ClientOptions quick;
  quick.request_timeout = 200ms;
  auto client = ts.client(quick);
  auto late = client.get("/slow");
  CHECK(late.status().code() == StatusCode::kDeadlineExceeded);
  CHECK(late.status().message().find("timed out") != std::string::npos);
  release.set_value();

  const uint16_t port = ts.server.port();
  ts.server.stop();
  CHECK(ts.server.start().code() == StatusCode::kFailedPrecondition);  // no restart
  auto refused = HttpClient("127.0.0.1", port).get("/slow");
  CHECK(refused.status().code() == StatusCode::kUnavailable);
  CHECK(refused.status().message().find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
}

TEST_CASE("a second server on a port in use fails to start with Unavailable") {
  TestServer first(Router{});
  ServerOptions same;
  same.host = "127.0.0.1";
  same.port = first.server.port();
  HttpServer second(same, Router{});
  Status s = second.start();
  CHECK(s.code() == StatusCode::kUnavailable);
  CHECK(s.message().find("cannot listen on 127.0.0.1:") != std::string::npos);

  ServerOptions bad_host;
  bad_host.host = "localhost";
  CHECK(HttpServer(bad_host, Router{}).start().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("ShutdownSignal wakes on SIGTERM, SIGINT and request()") {
  ShutdownSignal signals;
  std::raise(SIGTERM);  // caught, not fatal: the handler is installed
  CHECK(signals.wait() == SIGTERM);

  std::thread requester([&] { signals.request(); });
  CHECK(signals.wait() == 0);
  requester.join();

  Router router;
  add_standard_routes(router, {});
  TestServer ts(std::move(router));
  const uint16_t port = ts.server.port();
  std::raise(SIGINT);
  CHECK(stop_on_signal(ts.server, signals) == SIGINT);
  CHECK(HttpClient("127.0.0.1", port).get("/healthz").status().code() == StatusCode::kUnavailable);
}

TEST_CASE("configuration values come from the environment with clear errors") {
  SUBCASE("integers") {
    {
      ScopedEnv env("SAGA_TEST_PORT", "abc");
      auto port = env_int("SAGA_TEST_PORT", 8080, 1, 65535);
      CHECK(port.status().code() == StatusCode::kInvalidArgument);
      CHECK(port.status().message() == "SAGA_TEST_PORT must be an integer in 1..65535, got 'abc'");
    }
    {
      ScopedEnv env("SAGA_TEST_PORT", "70000");
      CHECK(env_int("SAGA_TEST_PORT", 8080, 1, 65535).status().message() ==
            "SAGA_TEST_PORT must be an integer in 1..65535, got '70000'");
    }
    {
      ScopedEnv env("SAGA_TEST_PORT", "12x");
      CHECK_FALSE(env_int("SAGA_TEST_PORT", 8080, 1, 65535).ok());
    }
    {
      ScopedEnv env("SAGA_TEST_PORT", " 8082 ");
      CHECK(env_int("SAGA_TEST_PORT", 8080, 1, 65535).value() == 8082);
    }
    {
      ScopedEnv env("SAGA_TEST_PORT", "");
      CHECK(env_int("SAGA_TEST_PORT", 8080, 1, 65535).value() == 8080);
    }
    ScopedEnv unset("SAGA_TEST_PORT", nullptr);
    CHECK(env_int("SAGA_TEST_PORT", 8080, 1, 65535).value() == 8080);
  }
  SUBCASE("booleans") {
    for (const char* yes : {"true", "TRUE", "1", "yes", "On"}) {
      ScopedEnv env("SAGA_TEST_FLAG", yes);
      CHECK(env_bool("SAGA_TEST_FLAG", false).value());
    }
    for (const char* no : {"false", "0", "no", "OFF"}) {
      ScopedEnv env("SAGA_TEST_FLAG", no);
      CHECK_FALSE(env_bool("SAGA_TEST_FLAG", true).value());
    }
    ScopedEnv env("SAGA_TEST_FLAG", "maybe");
    auto flag = env_bool("SAGA_TEST_FLAG", false);
    CHECK(flag.status().message() ==
          "SAGA_TEST_FLAG must be a boolean (true/false, 1/0, yes/no, on/off), got 'maybe'");
  }
  SUBCASE("engine settings") {
    {
      ScopedEnv a("SAGA_SHARDS", nullptr), b("SAGA_THREADS", nullptr), c("SAGA_CHANGELOG", nullptr);
      auto e = engine_settings_from_env();
      REQUIRE(e.ok());
      CHECK(e->shards == 0);
      CHECK(e->threads == 0);
      CHECK_FALSE(e->changelog);
      CHECK(e->dedup_horizon == std::chrono::hours(720));
    }
    {
      ScopedEnv a("SAGA_DEDUP_HORIZON", "48h");
      CHECK(engine_settings_from_env()->dedup_horizon == std::chrono::hours(48));
      ScopedEnv b("SAGA_DEDUP_HORIZON", "0");
      CHECK(engine_settings_from_env()->dedup_horizon.count() == 0);
      ScopedEnv c("SAGA_DEDUP_HORIZON", "soon");
      CHECK(engine_settings_from_env().status().message().find("SAGA_DEDUP_HORIZON") !=
            std::string::npos);
    }
    {
      ScopedEnv a("SAGA_SHARDS", "4"), b("SAGA_THREADS", "2"), c("SAGA_CHANGELOG", "on");
      auto e = engine_settings_from_env();
      REQUIRE(e.ok());
      CHECK(e->shards == 4);
      CHECK(e->threads == 2);
      CHECK(e->changelog);
    }
    {
      ScopedEnv a("SAGA_CHANGELOG", "1"), b("SAGA_REPLICAS", "1"),
          c("ADVERTISED_URL", "http://127.0.0.1:9082");
      auto e = engine_settings_from_env();
      REQUIRE_MESSAGE(e.ok(), e.status().to_string());
      CHECK(e->replicas);
      CHECK_FALSE(e->standby);
      CHECK(e->advertised_url == "http://127.0.0.1:9082");
      ScopedEnv d("SAGA_STANDBY", "on");
      auto with_standby = engine_settings_from_env();
      REQUIRE_MESSAGE(with_standby.ok(), with_standby.status().to_string());
      CHECK(with_standby->standby);
    }
    {
      ScopedEnv a("SAGA_STANDBY", "1");  // a standby copies other replicas' shards
      CHECK(engine_settings_from_env().status().message().find("SAGA_REPLICAS") !=
            std::string::npos);
    }
    {
      ScopedEnv a("SAGA_CHANGELOG", nullptr), b("SAGA_REPLICAS", "1"),
          c("ADVERTISED_URL", "http://127.0.0.1:9082");
      CHECK(engine_settings_from_env().status().message().find("SAGA_CHANGELOG") !=
            std::string::npos);
    }
    {
      ScopedEnv a("SAGA_CHANGELOG", "1"), b("SAGA_REPLICAS", "1"), c("ADVERTISED_URL", nullptr);
      CHECK(engine_settings_from_env().status().message().find("ADVERTISED_URL") !=
            std::string::npos);
    }
    for (const char* bad : {"127.0.0.1:9082", "https://a:1", "http://a", "http://a:0"}) {
      CAPTURE(bad);
      ScopedEnv a("SAGA_CHANGELOG", "1"), b("SAGA_REPLICAS", "1"), c("ADVERTISED_URL", bad);
      CHECK(engine_settings_from_env().status().code() == StatusCode::kInvalidArgument);
    }
    ScopedEnv a("SAGA_SHARDS", "-1");
    CHECK(engine_settings_from_env().status().message().find("SAGA_SHARDS") == 0);
  }
  SUBCASE("durations") {
    const std::pair<const char*, std::chrono::milliseconds> good[] = {
        {"250", 250ms}, {"250ms", 250ms}, {"30s", 30s}, {"5m", 5min}, {"1h", 1h}, {"0", 0ms}};
    for (const auto& [text, expected] : good) {
      CAPTURE(text);
      ScopedEnv env("SAGA_TEST_TIMEOUT", text);
      auto d = env_duration_ms("SAGA_TEST_TIMEOUT", 1s);
      REQUIRE(d.ok());
      CHECK(*d == expected);
    }
    for (const char* bad : {"-1", "5x", "ms", "1.5s"}) {
      CAPTURE(bad);
      ScopedEnv env("SAGA_TEST_TIMEOUT", bad);
      auto d = env_duration_ms("SAGA_TEST_TIMEOUT", 1s);
      CHECK(d.status().code() == StatusCode::kInvalidArgument);
      CHECK(d.status().message().find("SAGA_TEST_TIMEOUT must be a duration") == 0);
      CHECK(d.status().message().find(std::string("got '") + bad + "'") != std::string::npos);
    }
    ScopedEnv env("SAGA_TEST_TIMEOUT", "2h");
    CHECK_FALSE(env_duration_ms("SAGA_TEST_TIMEOUT", 1s, 0ms, 1h).ok());
  }
  SUBCASE("strings") {
    ScopedEnv env("SAGA_TEST_NAME", "kafka:9092");
    CHECK(env_string("SAGA_TEST_NAME", "x") == "kafka:9092");
    CHECK(env_string("SAGA_TEST_UNSET_NAME", "fallback") == "fallback");
  }
  SUBCASE("server options") {
    {
      ScopedEnv port("PORT", "abc");
      auto o = ServerOptions::from_env(8082);
      CHECK(o.status().message() == "PORT must be an integer in 0..65535, got 'abc'");
    }
    ScopedEnv port("PORT", nullptr);
    ScopedEnv threads("HTTP_THREADS", "4");
    ScopedEnv drain("HTTP_DRAIN_TIMEOUT_MS", "3s");
    auto o = ServerOptions::from_env(8082);
    REQUIRE(o.ok());
    CHECK(o->port == 8082);
    CHECK(o->threads == 4);
    CHECK(o->drain_timeout == 3s);
    CHECK(o->body_limit == 1024 * 1024);
  }
  SUBCASE("log level") {
    {
      ScopedEnv level("LOG_LEVEL", "verbose");
      Status s = setup_logging("test-service");
      CHECK(s.message() == "LOG_LEVEL must be one of trace|debug|info|warn|error, got 'verbose'");
    }
    ScopedEnv level("LOG_LEVEL", "WARN");
    CHECK(setup_logging("test-service").ok());
    CHECK(spdlog::get_level() == spdlog::level::warn);
    spdlog::set_level(spdlog::level::info);
  }
}

// ---- limits ----------------------------------------------------------------

TEST_CASE("an asynchronous handler holds no thread: a one-thread server answers others meanwhile") {
  std::mutex mu;
  std::vector<Responder> waiting;
  Router router;
  router.route_async("GET", "/later", [&](const Request&, Responder done) {
    std::lock_guard lock(mu);
    waiting.push_back(std::move(done));
  });
  router.get("/now", [](const Request& req) {
    return Response::json(200, {{"remote", req.remote_address()}});
  });
  ServerOptions one;
  one.threads = 1;
  TestServer ts(std::move(router), one);

  auto later = std::async(std::launch::async, [&] { return ts.client().get("/later"); });
  REQUIRE(eventually([&] {
    std::lock_guard lock(mu);
    return waiting.size() == 1;
  }));
  auto now = ts.client().get("/now");  // the only thread is free
  REQUIRE(now.ok());
  CHECK(now->status == 200);
  CHECK((*now->json())["remote"] == "127.0.0.1");

  std::thread answerer([&] {
    std::lock_guard lock(mu);
    waiting[0](Response::json(201, {{"late", true}}));
    waiting[0](Response::json(500, {}));  // a second answer is ignored
  });
  answerer.join();
  auto res = later.get();
  REQUIRE(res.ok());
  CHECK(res->status == 201);
  CHECK((*res->json())["late"] == true);
  std::lock_guard lock(mu);
  waiting.clear();  // a Responder may not outlive the server
}

TEST_CASE("connections over max_connections are answered 503 and closed") {
  Router router;
  router.get("/ping", [](const Request&) { return Response::text(200, "pong"); });
  ServerOptions capped;
  capped.max_connections = 2;
  TestServer ts(std::move(router), capped);

  auto first = std::make_unique<RawConnection>(ts.server.port());
  RawConnection second(ts.server.port());
  REQUIRE(first->connected());
  REQUIRE(second.connected());
  // Both are served (and so counted) before the third arrives.
  REQUIRE(first->send_all("GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"));
  REQUIRE(status_of(first->read_response()) == 200);
  REQUIRE(second.send_all("GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"));
  REQUIRE(status_of(second.read_response()) == 200);

  RawConnection third(ts.server.port());
  REQUIRE(third.connected());
  third.send_all("GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
  std::string refused = third.read_response();
  CHECK(status_of(refused) == 503);
  CHECK(refused.find("Retry-After: 1") != std::string::npos);
  CHECK(refused.find("application/problem+json") != std::string::npos);
  CHECK(third.closed_by_peer());
  CHECK(ts.server.metrics_text().find("http_server_connections_refused_total 1") !=
        std::string::npos);

  // A connection closes: room for a new one.
  first.reset();
  CHECK(eventually([&] {
    auto res = ts.client().get("/ping");
    return res.ok() && res->status == 200;
  }));
}

TEST_CASE("a body sent byte by byte is cut off at the read timeout (slowloris)") {
  Router router;
  router.post("/upload", [](const Request& req) {
    return Response::json(200, {{"bytes", req.body().size()}});
  });
  ServerOptions quick;
  quick.read_timeout = 500ms;
  TestServer ts(std::move(router), quick);

  RawConnection raw(ts.server.port());
  REQUIRE(raw.connected());
  const auto started = std::chrono::steady_clock::now();
  REQUIRE(raw.send_all(
      "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: "
      "100000\r\n\r\n"));
  // One byte every 20 ms would take 2000 s; every byte is inside any idle
  // timeout, but the deadline covers the whole body.
  bool cut = false;
  while (std::chrono::steady_clock::now() - started < kDeadline) {
    if (!raw.send_all("x")) {
      cut = true;
      break;
    }
    std::this_thread::sleep_for(20ms);  // the attacker's pace, not a synchronisation
  }
  CHECK(cut);
  CHECK(std::chrono::steady_clock::now() - started < 15s);
  CHECK(raw.closed_by_peer());

  // The server is fine.
  auto ok = ts.client().post_json("/upload", {{"a", 1}});
  REQUIRE(ok.ok());
  CHECK(ok->status == 200);
}

TEST_CASE("HTTP_MAX_CONNECTIONS comes from the environment") {
  ScopedEnv set("HTTP_MAX_CONNECTIONS", "7");
  auto o = ServerOptions::from_env(8080);
  REQUIRE(o.ok());
  CHECK(o->max_connections == 7);
  ScopedEnv bad("HTTP_MAX_CONNECTIONS", "0");
  auto refused = ServerOptions::from_env(8080);
  REQUIRE(!refused.ok());
  CHECK(refused.status().message().find("HTTP_MAX_CONNECTIONS") != std::string::npos);
}
