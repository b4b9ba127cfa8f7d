// The gateway's OpenAPI description (GET /openapi.json) against the running
// stack: five real services and a real broker, checked by schemathesis
// (scripts/schemathesis, pinned, from PyPI): no 5xx; every status code,
// content type, header and body as the description says; a route that needs a
// token refuses a request without one; a method a path lacks is 405 with the
// right Allow. Bounded and repeatable: a fixed number of examples per
// operation and a fixed seed.
// docs/openapi.md says how to run the same check by hand.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>

#include "e2e/e2e_support.h"
#include "support/temp_dir.h"

namespace saga::testing::e2e {
namespace {


// A schemathesis.toml (operations by name -> fixed parameters): the reads of
// one object get the ids of objects that exist, so that their bodies are
// checked too (random ids only ever find 404s). Everything else is generated.
std::string fixed_ids_config(const std::map<std::string, std::map<std::string, std::string>>& ops) {
  std::string out;
  for (const auto& [name, params] : ops) {
    out += "[[operations]]\ninclude-name = \"" + name + "\"\nparameters = {";
    std::string sep = " ";
    for (const auto& [key, value] : params) {
      out += sep + "\"" + key + "\" = \"" + value + "\"";
      sep = ", ";
    }
    out += " }\n\n";
  }
  return out;
}

TEST_CASE("schemathesis finds no server error and no answer the OpenAPI description denies") {
  ServiceStack stack;
  start_or_fail(stack);
  // Something to read and list: a place and a confirmed booking of the caller's.
  const std::string subject = "schemathesis";
  const std::string token = stack.token(subject, {"guest", "owner", "admin"});
  auto gw = stack.gateway_with(token);
  set_stock(*gw, "st-1", 3);  // an admin's: owned by owner-st-1
  Booking b{"", subject, "st-1", "2031-01-10", "2031-01-12", 1,
            seed_amount("2031-01-10", "2031-01-12", 1)};
  book(*gw, b);
  REQUIRE(settle_all(*gw, {b}, 120s).at(b.id) == "CONFIRMED");
  REQUIRE(eventually(
      [&] {
        auto row = gw->get("/mypages/" + b.id);
        return row.ok() && row->status == 200;
      },
      60s));

  TempDir dir("saga-openapi");
  const std::string config = (dir.path() / "schemathesis.toml").string();
  std::ofstream(config) << fixed_ids_config({
      {"GET /reservations/{id}", {{"path.id", b.id}}},
      {"GET /accommodations/{id}", {{"path.id", b.id}}},
      {"GET /mypages/{id}", {{"path.id", b.id}}},
      {"GET /payments/{id}", {{"path.id", "pay-" + b.id}}},
      {"GET /payments", {{"query.reservationId", b.id}}},
      {"GET /admin/sagas/{id}", {{"path.id", b.id}}},
      {"GET /places/{id}", {{"path.id", "st-1"}}},
      {"GET /owners/{ownerId}/reservations", {{"path.ownerId", "owner-st-1"}}},
  });

  const std::string url =
      "http://127.0.0.1:" + std::to_string(stack.port("gateway")) + "/openapi.json";
  std::string command = std::string(SAGA_SCHEMATHESIS) + " --config-file " + config + " run " +
                        url + " --header 'Authorization: Bearer " + token + "'" +
                        " --checks not_a_server_error,status_code_conformance,"
                        "content_type_conformance,response_headers_conformance,"
                        "response_schema_conformance,ignored_auth,missing_required_header,"
                        "unsupported_method,allow_header_conformance" +
                        " --phases examples,coverage,fuzzing --max-examples 200 --seed 20261205"
                        " --workers 2 --request-timeout 15 --generation-database none --no-color";
  const auto started = Steady::now();
  const auto [code, out] = run_capturing(command);
  MESSAGE("schemathesis took "
          << std::chrono::duration_cast<std::chrono::seconds>(Steady::now() - started).count()
          << " s; the end of its report:\n"
          << out.substr(out.size() > 3000 ? out.size() - 3000 : 0));
  CHECK_MESSAGE(code == 0, "schemathesis exited with " << code << ":\n"
                                                       << out << "\n"
                                                       << stack.all_log_tails());
}

}  // namespace
}  // namespace saga::testing::e2e
