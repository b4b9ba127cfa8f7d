// sagactl against the running stack (docs/admin.md): five real services and a
// real broker; the tool goes through the gateway with an admin token, as an
// operator's shell would. Its --json output is parsed here, its tables read,
// and its exit codes checked.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "e2e/e2e_support.h"
#include "saga/service/http_server.h"
#include "saga/service/router.h"
#include "support/temp_dir.h"

namespace saga::testing::e2e {
namespace {

TEST_CASE("sagactl lists, shows and compensates sagas through the gateway; exit codes fit scripts") {
  ServiceStack stack;
  start_or_fail(stack);
  auto gw = stack.admin_gateway();
  set_stock(*gw, "ctl-1", 5);
  std::vector<Booking> bookings;
  for (int i = 0; i < 2; ++i) {
    bookings.push_back(Booking{"", "u" + std::to_string(i), "ctl-1", "2030-06-01", "2030-06-02", 1,
                               seed_amount("2030-06-01", "2030-06-02", 1)});
    book(*gw, bookings.back());
  }
  for (const auto& [id, status] : settle_all(*gw, bookings, 120s)) CHECK(status == "CONFIRMED");

  const std::string url = "http://127.0.0.1:" + std::to_string(stack.port("gateway"));
  const std::string ctl =
      std::string(SAGA_SAGACTL_BIN) + " --url " + url + " --token " + stack.token("ops", {"admin"});

  // --json list, every page of one: both bookings, COMPLETED.
  CommandResult r = run_capturing(ctl + " --json list --type booking --limit 1 --all");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  const json listed = json::parse(r.out);
  REQUIRE(listed.is_array());
  std::map<std::string, std::string> state;
  for (const json& s : listed) state[s["id"]] = s["state"];
  for (const Booking& b : bookings) CHECK_MESSAGE(state[b.id] == "COMPLETED", r.out);
  // The table: a header and a row per saga.
  r = run_capturing(ctl + " list --type booking");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(r.out.rfind("ID ", 0) == 0);
  for (const Booking& b : bookings) CHECK(r.out.find(b.id) != std::string::npos);
  // show: the saga and its steps.
  r = run_capturing(ctl + " --json show " + bookings[0].id);
  REQUIRE_MESSAGE(r.code == 0, r.out);
  const json shown = json::parse(r.out);
  CHECK(shown["state"] == "COMPLETED");
  CHECK(shown["steps"].size() == 3);
  r = run_capturing(ctl + " show " + bookings[0].id);
  CHECK(r.code == 0);
  CHECK(r.out.find("state     COMPLETED") != std::string::npos);
  CHECK(r.out.find("reserve") != std::string::npos);

  // Payment away: a booking waits at pay; the operator compensates it.
  REQUIRE(stack.stop("payment") == 0);
  Booking waiting{"", "u9", "ctl-1", "2030-06-01", "2030-06-02", 1,
                  seed_amount("2030-06-01", "2030-06-02", 1)};
  book(*gw, waiting);
  REQUIRE(eventually(
      [&] {
        const json s = get_json(*gw, "/admin/sagas/" + waiting.id);
        return s["steps"][1]["status"] == "RUNNING";
      },
      60s));
  // It shows in the counts and in the list of sagas awaiting payment.
  r = run_capturing(ctl + " --json counts");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  const json counts = json::parse(r.out);
  CHECK(counts["byState"]["RUNNING"] == 1);
  CHECK(counts["byParticipant"] == json::array({{{"participant", "payment"}, {"count", 1}}}));
  r = run_capturing(ctl + " counts");
  CHECK(r.code == 0);
  CHECK(r.out.find("booking  pay   RUNNING  1") != std::string::npos);
  r = run_capturing(ctl + " --json list --awaiting payment");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  REQUIRE(json::parse(r.out).size() == 1);
  CHECK(json::parse(r.out)[0]["id"] == waiting.id);
  r = run_capturing(ctl + " compensate " + waiting.id + " --reason 'payment provider down'");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(r.out.find("COMPENSAT") != std::string::npos);
  CHECK(r.out.find("OPERATOR_COMPENSATE") != std::string::npos);  // the timeline
  try {
    stack.start("payment");
  } catch (const std::exception& e) {
    FAIL(e.what());
  }
  // watch: the timeline as it grows, one JSON entry a line, until it settles.
  r = run_capturing(ctl + " --json watch " + waiting.id + " --interval-ms 100");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  std::vector<json> entries;
  for (size_t at = 0, end; (end = r.out.find('\n', at)) != std::string::npos; at = end + 1)
    entries.push_back(json::parse(r.out.substr(at, end - at)));
  REQUIRE(entries.size() >= 4);
  CHECK(entries.front()["event"] == "STARTED");
  CHECK(entries.back()["state"] == "COMPENSATED");
  const auto by_operator = std::find_if(entries.begin(), entries.end(), [](const json& e) {
    return e["event"] == "OPERATOR_COMPENSATE";
  });
  REQUIRE(by_operator != entries.end());
  CHECK((*by_operator)["actor"] == "ops");
  CHECK((*by_operator)["reason"] == "payment provider down");
  CHECK(settle_all(*gw, {waiting}, 120s).at(waiting.id) == "REJECTED");
  r = run_capturing(ctl + " --json show " + waiting.id);
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(json::parse(r.out)["state"] == "COMPENSATED");

  // Exit codes: 1 refused (no token: 401; unknown saga: 404; wrong state: 409),
  // 2 bad usage, 3 unreachable.
  r = run_capturing(std::string(SAGA_SAGACTL_BIN) + " --url " + url + " list");
  CHECK_MESSAGE(r.code == 1, r.out);
  CHECK(r.out.find("401") != std::string::npos);
  r = run_capturing(ctl + " show no-such-saga");
  CHECK_MESSAGE(r.code == 1, r.out);
  CHECK(r.out.find("404") != std::string::npos);
  r = run_capturing(ctl + " abort " + waiting.id + " --reason again");
  CHECK_MESSAGE(r.code == 1, r.out);
  CHECK(r.out.find("409") != std::string::npos);
  CHECK(run_capturing(ctl + " abort " + waiting.id).code == 2);  // no --reason
  CHECK(run_capturing(ctl + " list --limit 0").code == 2);
  CHECK(run_capturing(std::string(SAGA_SAGACTL_BIN) + " --url http://127.0.0.1:1 list").code == 3);
}

// An https:// URL: the server's certificate is verified against --cacert
// (or $SAGA_CACERT); one it cannot verify is "unreachable" (3), a CA file it
// cannot read bad usage (2). The server here stands in for the gateway.
TEST_CASE("sagactl over https trusts the certificate it is given and no other") {
  TempDir dir("sagactl-https");
  const std::string cert = (dir.path() / "cert.pem").string();
  const std::string key = (dir.path() / "key.pem").string();
  REQUIRE(run_capturing("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
              "-addext subjectAltName=IP:127.0.0.1 -keyout '" + key + "' -out '" + cert + "'")
              .code == 0);
  service::Router router;
  router.get("/admin/sagas/{id}", [](const service::Request& req) {
    return service::Response::json(
        200, json{{"id", std::string(req.param("id"))}, {"type", "booking"}, {"state", "COMPLETED"},
                  {"steps", json::array()}, {"timeline", json::array()}});
  });
  service::ServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.tls_cert_file = cert;
  o.tls_key_file = key;
  service::HttpServer server(o, std::move(router));
  REQUIRE(server.start().ok());
  const std::string ctl = std::string(SAGA_SAGACTL_BIN) + " --url https://127.0.0.1:" +
                          std::to_string(server.port()) + " --token t";

  CommandResult r = run_capturing(ctl + " --cacert '" + cert + "' --json show b-1");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(json::parse(r.out)["id"] == "b-1");
  r = run_capturing("SAGA_CACERT='" + cert + "' " + ctl + " show b-2");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(r.out.find("b-2") != std::string::npos);
  r = run_capturing(ctl + " show b-1");  // the system's CAs: self-signed is not trusted
  CHECK_MESSAGE(r.code == 3, r.out);
  CHECK(r.out.find("TLS handshake") != std::string::npos);
  r = run_capturing(ctl + " --cacert '" + (dir.path() / "none.pem").string() + "' show b-1");
  CHECK_MESSAGE(r.code == 2, r.out);
  CHECK(r.out.find("none.pem") != std::string::npos);
  CHECK(run_capturing(std::string(SAGA_SAGACTL_BIN) + " --url ftp://127.0.0.1:1 list").code == 2);
}

}  // namespace
}  // namespace saga::testing::e2e
