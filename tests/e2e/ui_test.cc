// The web UI (docs/ui.md) in a real browser against the running stack: the
// five services and a broker, the gateway serving the UI. tests/ui/ui_test.mjs
// drives Debian's chromium with playwright-core, one phase per run; between
// phases this test stops and starts the payment service. Each phase exits 0
// only when all its checks and waits passed; its output is in the failure
// message. Screenshots go to SAGA_UI_SHOTS when set (docs/ui/ holds some).
#include <doctest/doctest.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "e2e/e2e_support.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace saga::testing::e2e {
namespace {

// What one run of a program printed, and how it ended.
struct Ran {
  int code = -1;
  std::string out;
  // The value of the line "RESULT <key> <value>"; "" when none.
  std::string result(const std::string& key) const {
    const std::string mark = "RESULT " + key + " ";
    const size_t at = out.find(mark);
    if (at == std::string::npos) return "";
    const size_t from = at + mark.size();
    return out.substr(from, out.find('\n', from) - from);
  }
};

// Runs argv (argv[0] an absolute path) with `env` added, output to a log in
// `dir`; waits up to `limit`.
Ran run(const std::vector<std::string>& argv, const TempDir& dir, const std::string& name,
        std::chrono::milliseconds limit, const std::map<std::string, std::string>& env = {}) {
  const std::string log = (dir.path() / (name + ".log")).string();
  Process p(argv, log, env);
  Ran r;
  r.code = p.wait(limit);
  r.out = read_file(log);
  return r;
}

TEST_CASE("in a browser, a guest books, the owner sees it and an operator compensates a stuck saga") {
  REQUIRE_MESSAGE(std::string(SAGA_NODE).size() > 0, "node not found when configured: run scripts/setup");
  TempDir dir("saga-ui");
  const std::string ui = SAGA_UI_TEST_DIR;
  // playwright-core, pinned; a no-op once installed (scripts/setup runs it too).
  Ran installed = run({ui + "/install"}, dir, "install", 300s);
  REQUIRE_MESSAGE(installed.code == 0, "tests/ui/install failed:\n" << installed.out);

  ServiceStack stack;
  start_or_fail(stack);
  const std::string url = "http://127.0.0.1:" + std::to_string(stack.port("gateway"));
  std::map<std::string, std::string> env;
  const char* shots = std::getenv("SAGA_UI_SHOTS");
  env["SAGA_UI_SHOTS"] = shots && *shots ? shots : dir.path().string();
  auto phase = [&](const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> argv = {SAGA_NODE, ui + "/ui_test.mjs", name, "--url", url};
    argv.insert(argv.end(), extra.begin(), extra.end());
    Ran r = run(argv, dir, "phase-" + name, 600s, env);
    MESSAGE(r.out);
    REQUIRE_MESSAGE(r.code == 0, "phase " << name << " failed (exit " << r.code << "):\n"
                                          << r.out << "\n" << stack.all_log_tails());
    return r;
  };
  auto gw = stack.admin_gateway();

  // An owner's place, a guest's booking CONFIRMED and another CANCELLED.
  const Ran booked = phase("book", {});
  const std::string place = booked.result("place");
  const std::string confirmed = booked.result("booking");
  const std::string cancelled = booked.result("cancelled");
  REQUIRE(!place.empty());
  CHECK(get_json(*gw, "/reservations/" + confirmed)["status"] == "CONFIRMED");
  CHECK(get_json(*gw, "/reservations/" + cancelled)["status"] == "CANCELLED");

  // Answers of the wrong shape, served by the browser: every page still draws.
  phase("junk", {});

  // Payment away: the next booking waits for it; the operator compensates.
  REQUIRE(stack.stop("payment") == 0);
  const Ran stuck = phase("stuck", {"--place", place});
  const std::string saga = stuck.result("saga");
  REQUIRE(!saga.empty());
  const json acted = get_json(*gw, "/admin/sagas/" + saga);
  bool by_operator = false;
  for (const json& e : acted["timeline"])
    by_operator = by_operator || (e["event"] == "OPERATOR_COMPENSATE" && e["actor"] == "ops" &&
                                  e["reason"] == "payment provider down");
  CHECK_MESSAGE(by_operator, acted.dump());

  // Payment back: the compensation completes; the UI shows it.
  try {
    stack.start("payment");
  } catch (const std::exception& e) {
    FAIL(e.what());
  }
  phase("settle", {"--saga", saga});
  CHECK(get_json(*gw, "/admin/sagas/" + saga)["state"] == "COMPENSATED");
  CHECK(get_json(*gw, "/reservations/" + saga)["status"] == "REJECTED");
}

}  // namespace
}  // namespace saga::testing::e2e
