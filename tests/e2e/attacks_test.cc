// Hostile callers through the gateway of the five real services: users
// reaching for other users' bookings, owners for other owners' places, and
// requests with missing, expired, wrongly signed or `alg: none` tokens or
// forged identity headers. Every attack is refused, changes nothing, and
// leaves every service alive. One stack for all of them, in blocks.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "e2e/e2e_support.h"
#include "support/jwt_forge.h"
#include "support/raw_connection.h"

namespace saga::testing::e2e {
namespace {

// Every service still runs and answers /healthz.
void check_all_alive(ServiceStack& stack, const std::string& after) {
  for (const std::string& name : all_services()) {
    CHECK_MESSAGE(stack.running(name), name << " died after " << after);
    auto r = stack.client(name)->get("/healthz");
    CHECK_MESSAGE((r.ok() && r->status == 200), name << " /healthz after " << after);
  }
}

// The status of `r`, and its body when it is not `want`.
void expect_status(const StatusOr<ClientResponse>& r, int want, const std::string& what) {
  REQUIRE_MESSAGE(r.ok(), what << ": " << r.status().to_string());
  CHECK_MESSAGE(r->status == want, what << ": " << r->status << " " << r->body);
  if (want >= 400) CHECK_MESSAGE(r->header("Content-Type") == "application/problem+json", what);
}

TEST_CASE("attacks through the gateway are refused, change nothing and kill nothing") {
  ServiceStack stack;
  start_or_fail(stack);
  auto admin = stack.admin_gateway();
  auto o1 = stack.gateway_as("o1", {"owner"});
  auto o2 = stack.gateway_as("o2", {"owner"});
  auto alice = stack.gateway_as("alice", {"guest"});
  auto bob = stack.gateway_as("bob", {"guest"});

  auto stocked = o1->post_json("/reservationManagements", {{"placeId", "atk-1"}, {"stock", 2}});
  expect_status(stocked, 201, "o1 stocks its place");
  expect_status(o2->post_json("/reservationManagements", {{"placeId", "atk-2"}, {"stock", 1}}), 201,
                "o2 stocks its place");
  Booking a{"", "alice", "atk-1", "2030-09-01", "2030-09-02", 1, kSeedPrice};
  book(*alice, a);
  const auto status = settle_all(*alice, {a}, 60s);  // alice polls her own booking
  REQUIRE(status.at(a.id) == "CONFIRMED");
  const json pays = get_json(*alice, "/payments?reservationId=" + a.id);
  REQUIRE(pays.size() == 1);
  const std::string pay_id = pays[0]["id"];
  check_all_alive(stack, "the setup");

  {  // cross-user read and list: 404, as if nothing were there
    for (const std::string& target : {"/reservations/" + a.id, "/accommodations/" + a.id}) {
      auto r = bob->get(target);
      expect_status(r, 404, "bob reads " + target);
      CHECK(body_of(*r)["detail"] == "reservation " + a.id + " not found");
    }
    expect_status(bob->get("/reservations?userId=alice"), 404, "bob lists alice's bookings");
    CHECK(get_json(*bob, "/reservations").empty());
    expect_status(bob->get("/mypages/" + a.id), 404, "bob reads alice's mypage row");
    expect_status(bob->get("/mypages?userId=alice"), 404, "bob lists alice's mypage");
    expect_status(bob->get("/payments/" + pay_id), 404, "bob reads alice's payment");
    CHECK(get_json(*bob, "/payments?reservationId=" + a.id).empty());
    // A guest token plus forged identity headers is still bob.
    expect_status(
        bob->get("/reservations/" + a.id, {{"X-Saga-Subject", "alice"}, {"X-Saga-Roles", "admin"}}),
        404, "bob with forged identity headers");
    check_all_alive(stack, "cross-user reads");
  }

  {  // cross-user cancel and booking as someone else are refused; nothing changes
    expect_status(bob->post_json("/reservations/" + a.id + "/cancel", json::object()), 404,
                  "bob cancels alice's booking");
    Booking as_alice{"", "alice", "atk-1", "2030-09-01", "2030-09-02", 1, kSeedPrice};
    expect_status(bob->post_json("/reservations", request_body(as_alice)), 403,
                  "bob books as alice");
    CHECK(get_json(*admin, "/reservations/" + a.id)["status"] == "CONFIRMED");
    CHECK(get_json(*admin, "/reservations?userId=alice").size() == 1);
    const json night = get_json(*admin, "/places/atk-1/availability?from=2030-09-01&to=2030-09-02");
    CHECK(night[0]["confirmed"] == 1);
    CHECK(get_json(*admin, "/payments/" + pay_id)["status"] == "APPROVED");
    check_all_alive(stack, "cross-user cancel");
  }

  {  // price tampering: the server sets the price; a guest cannot lower it or pay less
    Booking cheap{"", "alice", "atk-2", "2030-09-01", "2030-09-03", 1, 0};
    for (const json& amount : {json(0), json(1), json(kSeedPrice), json(2 * kSeedPrice - 1)}) {
      json body = request_body(cheap);
      body["amount"] = amount;
      expect_status(alice->post_json("/reservations", body), 422,
                    "alice states amount " + amount.dump() + " for 10000 of stay");
    }
    json fractional = request_body(cheap);
    fractional["amount"] = 9999.99;
    expect_status(alice->post_json("/reservations", fractional), 400, "a fractional amount");
    json seed = {{"placeId", "atk-2"}, {"usrId", "alice"}, {"strDt", "20300901"},
                 {"endDt", "20300903"}, {"qty", "1"},      {"amount", "1"}};
    expect_status(alice->post_json("/accommodations", seed), 422, "the seed call with amount 1");
    // Neither a guest nor another owner may change the price; the owner may.
    const json free = {{"amount", 0}, {"currency", "KRW"}};
    expect_status(alice->put_json("/places/atk-2/price", free), 403, "a guest sets a price");
    expect_status(o1->put_json("/places/atk-2/price", free), 403, "o1 sets o2's price");
    CHECK(get_json(*admin, "/places/atk-2")["price"] ==
          json{{"amount", kSeedPrice}, {"currency", "KRW"}});
    CHECK(get_json(*alice, "/reservations").size() == 1);  // nothing booked but `a`
    check_all_alive(stack, "price tampering");
  }

  {  // an owner acting on another owner's place is refused
    expect_status(o2->post_json("/reservationManagements", {{"placeId", "atk-1"}, {"stock", 0}}),
                  403, "o2 sets the stock of o1's place");
    expect_status(o2->put_json("/places/atk-1/rooms", {{"rooms", 0}}), 403,
                  "o2 sets the rooms of o1's place");
    expect_status(o2->get("/owners/o1/reservations"), 403, "o2 reads o1's guest list");
    expect_status(bob->post_json("/reservationManagements", {{"placeId", "atk-1"}, {"stock", 0}}),
                  403, "a guest sets stock");
    expect_status(bob->get("/owners/o1/reservations"), 403, "a guest reads a guest list");
    expect_status(o1->post_json("/places", {{"name", "x"}, {"ownerId", "o2"}, {"rooms", 1}}), 403,
                  "o1 creates a place for o2");
    CHECK(get_json(*admin, "/places/atk-1")["rooms"] == 2);
    const json guests = get_json(*o1, "/owners/o1/reservations");  // o1's own: allowed
    REQUIRE(guests.size() == 1);
    CHECK(guests[0]["reservationId"] == a.id);
    check_all_alive(stack, "owner attacks");
  }

  {  // missing, expired, wrongly signed and alg none tokens are 401
    auto anonymous = stack.client("gateway");
    const json live = {{"sub", "alice"}, {"roles", {"admin"}}, {"exp", unix_now() + 600}};
    json expired = live;
    expired["exp"] = unix_now() - 600;
    const std::vector<std::pair<std::string, service::Headers>> attempts = {
        {"no token", {}},
        {"identity headers, no token", {{"X-Saga-Subject", "alice"}, {"X-Saga-Roles", "admin"}}},
        {"expired",
         {{"Authorization",
           "Bearer " + sign_hs256({{"alg", "HS256"}}, expired, stack.gateway_secret())}}},
        {"wrong signature",
         {{"Authorization",
           "Bearer " + sign_hs256({{"alg", "HS256"}}, live, "not-the-secret-0123456789abcdef")}}},
        {"alg none", {{"Authorization", "Bearer " + signing_input({{"alg", "none"}}, live) + "."}}},
        {"garbage", {{"Authorization", "Bearer x.y.z"}}},
    };
    for (const auto& [what, headers] : attempts) {
      CAPTURE(what);
      for (const std::string& target :
           {"/reservations/" + a.id, std::string("/mypages?userId=alice")}) {
        auto r = anonymous->get(target, headers);
        expect_status(r, 401, what + " " + target);
        CHECK(r->header("WWW-Authenticate").has_value());
      }
      auto cancel = anonymous->request(
          "POST", "/reservations/" + a.id + "/cancel",
          [&] {
            service::Headers h = headers;
            h.emplace_back("Content-Type", "application/json");
            return h;
          }(),
          "{}");
      expect_status(cancel, 401, what + " cancel");
      check_all_alive(stack, what);
    }
    // The services themselves, reached without the gateway and without identity: 401.
    expect_status(stack.client("reservation")->get("/reservations/" + a.id), 401,
                  "reservation without identity");
    expect_status(stack.client("mypage")->get("/mypages?userId=alice"), 401,
                  "mypage without identity");
    CHECK(get_json(*admin, "/reservations/" + a.id)["status"] == "CONFIRMED");
    check_all_alive(stack, "bad tokens");
  }

  check_consistency(*admin, {a}, status);
  check_all_alive(stack, "the consistency check");
}


TEST_CASE(
    "floods, oversized headers and slow bodies through the gateway are cut off, kill nothing") {
  ServiceStack stack;
  // The per-identity limit at its defaults. Every e2e client comes from
  // 127.0.0.1, so the per-address limit (unit-tested) stays off (ServiceStack).
  stack.set_env("gateway", "RATE_LIMIT_IDENTITY_RPS", "50");
  stack.set_env("gateway", "RATE_LIMIT_IDENTITY_BURST", "100");
  stack.set_env("gateway", "HTTP_READ_TIMEOUT_MS", "2000");  // slow bodies are cut at 2 s
  start_or_fail(stack);
  auto admin = stack.admin_gateway();
  auto owner = stack.gateway_as("fo1", {"owner"});
  auto alice = stack.gateway_as("flood-alice", {"guest"});
  auto bob = stack.gateway_as("flood-bob", {"guest"});
  expect_status(owner->post_json("/reservationManagements", {{"placeId", "flood-1"}, {"stock", 2}}),
                201, "the owner stocks its place");
  Booking a{"", "flood-alice", "flood-1", "2030-10-01", "2030-10-02", 1, kSeedPrice};
  book(*alice, a);
  const auto status = settle_all(*alice, {a}, 60s);
  REQUIRE(status.at(a.id) == "CONFIRMED");

  {  // 1,000 requests in a second from one identity: most 429, another identity unaffected
    const std::string token = stack.token("flood-alice", {"guest"});
    constexpr int kThreads = 10;
    constexpr int kEach = 100;  // one every 10 ms per thread: 1,000/s together
    std::atomic<int> ok{0};
    std::atomic<int> limited{0};
    std::atomic<int> other{0};
    std::atomic<bool> retry_after_ok{true};
    const auto started = std::chrono::steady_clock::now();
    std::vector<std::thread> flooders;
    for (int t = 0; t < kThreads; ++t) {
      flooders.emplace_back([&] {
        auto http = stack.gateway_with(token);
        for (int i = 0; i < kEach; ++i) {
          auto r = http->get("/reservations/" + a.id);
          if (r.ok() && r->status == 200) {
            ++ok;
          } else if (r.ok() && r->status == 429) {
            ++limited;
            if (!r->header("Retry-After")) retry_after_ok = false;
          } else {
            ++other;
          }
          std::this_thread::sleep_until(started + std::chrono::milliseconds(10 * (i + 1)));
        }
      });
    }
    // Meanwhile bob reads his bookings, unaffected.
    int bob_ok = 0;
    for (int i = 0; i < 10; ++i) {
      auto r = bob->get("/reservations?userId=flood-bob");
      if (r.ok() && r->status == 200) ++bob_ok;
    }
    for (auto& t : flooders) t.join();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    MESSAGE("flood: " << ok.load() << " answered, " << limited.load() << " limited, "
                      << other.load() << " other in " << seconds << " s");
    CHECK(bob_ok == 10);
    CHECK(other.load() == 0);
    CHECK(limited.load() > 0);
    CHECK(retry_after_ok.load());
    // At most the burst (100) plus 50/s while it ran, with a margin for rounding.
    CHECK(ok.load() <= 100 + static_cast<int>(50 * seconds) + 5);
    CHECK(ok.load() + limited.load() == kThreads * kEach);
    check_all_alive(stack, "the flood");
  }

  {  // oversized headers: 431 at the gateway and at a service, nothing dies
    for (const std::string& name : {std::string("gateway"), std::string("reservation")}) {
      auto http = stack.client(name);
      auto r = http->get("/reservations/" + a.id, {{"X-Padding", std::string(16 * 1024, 'h')}});
      if (r.ok()) {
        CHECK_MESSAGE((r->status == 431 || r->status == 400), name << ": " << r->status);
      }  // or the connection was closed under the rest of the headers: refused too
      service::Headers many;
      for (int i = 0; i < 400; ++i)
        many.emplace_back("X-H" + std::to_string(i), "0123456789abcdef0123");
      auto m = http->get("/reservations/" + a.id, many);
      if (m.ok()) CHECK_MESSAGE((m->status == 431 || m->status == 400), name << ": " << m->status);
    }
    check_all_alive(stack, "oversized headers");
  }

  {  // slowloris: bodies trickled byte by byte are cut off; the gateway serves others meanwhile
    constexpr int kSlow = 20;
    std::vector<std::unique_ptr<RawConnection>> slow;
    for (int i = 0; i < kSlow; ++i) {
      auto s = std::make_unique<RawConnection>(stack.port("gateway"));
      REQUIRE(s->connected());
      REQUIRE(
          s->send_all("POST /reservations HTTP/1.1\r\nHost: t\r\nContent-Type: "
                      "application/json\r\nContent-Length: 100000\r\n\r\n{"));
      slow.push_back(std::move(s));
    }
    const auto started = std::chrono::steady_clock::now();
    std::vector<bool> cut(kSlow, false);
    size_t cut_count = 0;
    bool served_meanwhile = true;
    while (cut_count < slow.size() && std::chrono::steady_clock::now() - started < 60s) {
      for (size_t i = 0; i < slow.size(); ++i) {
        if (!cut[i] && !slow[i]->send_all(" ")) {
          cut[i] = true;
          ++cut_count;
        }
      }
      if (cut_count == 0) {
        auto r = bob->get("/reservations?userId=flood-bob");
        served_meanwhile = served_meanwhile && r.ok() && r->status == 200;
      }
      std::this_thread::sleep_for(50ms);  // the attacker's pace, not a synchronisation
    }
    const auto took = std::chrono::steady_clock::now() - started;
    CHECK(cut_count == slow.size());
    CHECK(took < 30s);  // 2 s read timeout; a trickle of 100,000 bytes would take 80 min
    CHECK(served_meanwhile);
    check_all_alive(stack, "slow bodies");
  }

  check_consistency(*admin, {a}, status);
  check_all_alive(stack, "the consistency check");
}

TEST_CASE("X-Forwarded-For names the client only behind TRUSTED_PROXIES; forging it is no use") {
  ServiceStack stack;
  // Every e2e client comes from 127.0.0.1: a small per-address limit.
  stack.set_env("gateway", "RATE_LIMIT_ADDRESS_RPS", "1");
  stack.set_env("gateway", "RATE_LIMIT_ADDRESS_BURST", "5");
  start_or_fail(stack);
  auto http = stack.client("gateway");  // no token: the public catalogue, only the address limit
  struct Tally {
    int passed = 0;
    int limited = 0;
    int other = 0;
  };
  auto send = [&](int n, const std::function<std::string(int)>& xff) {
    Tally t;
    for (int i = 0; i < n; ++i) {
      auto r = http->get("/places/xff-unknown", {{"X-Forwarded-For", xff(i)}});
      if (r.ok() && r->status == 404) {
        ++t.passed;  // the inventory's answer: forwarded
      } else if (r.ok() && r->status == 429) {
        ++t.limited;
      } else {
        ++t.other;
      }
    }
    return t;
  };
  auto started = std::chrono::steady_clock::now();
  auto most_passing = [&](int burst) {  // the burst, a token a second since, and one to spare
    return burst + 1 +
           static_cast<int>(std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                          started)
                                .count());
  };

  {  // Without TRUSTED_PROXIES: a new forged address each time, all counted on 127.0.0.1.
    Tally forged = send(20, [](int i) { return "203.0.113." + std::to_string(i + 1); });
    CHECK(forged.other == 0);
    CHECK(forged.limited > 0);
    CHECK(forged.passed <= most_passing(5));
    check_all_alive(stack, "forged X-Forwarded-For");
  }

  stack.restart("gateway", {{"TRUSTED_PROXIES", "127.0.0.1"}});  // fresh buckets
  started = std::chrono::steady_clock::now();
  {  // Behind the trusted proxy: each forwarded client has its own bucket.
    Tally clients = send(30, [](int i) { return "198.51.100." + std::to_string(i % 10 + 1); });
    CHECK(clients.other == 0);
    CHECK(clients.limited == 0);
    CHECK(clients.passed == 30);
    // One of them over its burst; addresses it writes left of its own change nothing.
    Tally one = send(10, [](int i) { return "192.0.2." + std::to_string(i) + ", 198.51.100.1"; });
    CHECK(one.limited > 0);
    CHECK(one.passed <= most_passing(5) - 3);
    // A malformed header counts against the proxy itself, not a client's bucket.
    Tally malformed = send(10, [](int) { return std::string("not-an-address"); });
    CHECK(malformed.limited > 0);
    CHECK(send(1, [](int) { return std::string("198.51.100.77"); }).passed == 1);
    check_all_alive(stack, "X-Forwarded-For behind a trusted proxy");
  }
}

}  // namespace
}  // namespace saga::testing::e2e
