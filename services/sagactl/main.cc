// sagactl: the saga admin API (docs/admin.md) from a shell.
//
//   sagactl [--url URL] [--token TOKEN] [--json] list [--type T] [--state S] [--awaiting P]
//                                                     [--limit N] [--all]
//   sagactl show ID                      the saga, its steps and its timeline
//   sagactl watch ID [--interval-ms MS] [--follow]
//                                        its timeline as it grows, until it settles
//   sagactl counts                       sagas in flight by state, step and participant
//   sagactl retry|compensate|abort|skip ID --reason "why"
//
// URL (default $SAGA_URL, else http://127.0.0.1:8080) is the gateway, http://
// or https:// (verified against --cacert FILE, default $SAGA_CACERT, else the
// system's CAs); TOKEN (default $SAGA_TOKEN) a bearer token with the admin role. Exit codes: 0 done;
// 1 the server refused (its problem detail on stderr); 2 bad usage; 3 the
// server could not be reached.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <thread>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "saga/service/config.h"
#include "saga/service/http_client.h"
#include "saga/service/http_message.h"
#include "saga/version.h"

namespace {

using Json = nlohmann::json;
using saga::service::ClientResponse;

constexpr int kRefused = 1;
constexpr int kUsage = 2;
constexpr int kUnreachable = 3;

struct Failure {
  int code;
  std::string message;
};

std::string env_or(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string utc(int64_t ms) {
  if (ms <= 0) return "-";
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Calls the API; a response other than 200 or no response is a Failure.
class Api {
 public:
  Api(const std::string& url, std::string token, std::string cacert) : token_(std::move(token)) {
    std::string rest = url;
    saga::service::ClientOptions options;
    if (rest.rfind("https://", 0) == 0) {
      options.tls = true;
      options.tls_ca_file = std::move(cacert);
      rest = rest.substr(8);
    } else if (rest.rfind("http://", 0) == 0) {
      rest = rest.substr(7);
    } else if (rest.find("://") != std::string::npos) {
      throw Failure{kUsage, "--url: only http:// and https:// URLs"};
    }
    while (!rest.empty() && rest.back() == '/') rest.pop_back();
    auto hp = saga::service::parse_host_port("--url", rest);
    if (!hp.ok()) throw Failure{kUsage, hp.status().message()};
    client_ = std::make_unique<saga::service::HttpClient>(hp->host, hp->port, options);
  }

  Json call(const std::string& method, const std::string& target, const Json& body = nullptr,
            ClientResponse* raw = nullptr) {
    saga::service::Headers headers;
    if (!token_.empty()) headers.emplace_back("Authorization", "Bearer " + token_);
    if (!body.is_null()) headers.emplace_back("Content-Type", "application/json");
    auto r = client_->request(method, target, headers, body.is_null() ? "" : body.dump());
    if (!r.ok()) {
      throw Failure{r.status().code() == saga::StatusCode::kInvalidArgument ? kUsage : kUnreachable,
                    r.status().to_string()};
    }
    auto json = r->json();
    if (r->status != 200) {
      std::string detail = json.ok() && json->is_object() ? json->value("detail", r->body) : r->body;
      throw Failure{kRefused, method + " " + target + ": " + std::to_string(r->status) + " " + detail};
    }
    if (!json.ok()) throw Failure{kRefused, method + " " + target + ": " + json.status().message()};
    if (raw) *raw = *r;
    return *json;
  }

 private:
  std::string token_;
  std::unique_ptr<saga::service::HttpClient> client_;
};

// `j`'s member `name`, or null (which iterates as empty) when `j` is not an
// object or lacks it: the server's answer is read, never trusted to be whole.
const Json& member(const Json& j, const char* name) {
  static const Json kNull;
  if (!j.is_object()) return kNull;
  const auto it = j.find(name);
  return it == j.end() ? kNull : *it;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i)
      line += i + 1 == row.size() ? row[i] : row[i] + std::string(width[i] - row[i].size() + 2, ' ');
    std::cout << line << "\n";
  }
}

std::string step_of(const Json& s) {
  const Json& steps = member(s, "steps");
  const size_t at = s.value("currentStep", size_t{0});
  return at < steps.size() ? steps[at].value("name", "") : "-";
}

std::vector<std::string> timeline_row(const Json& e) {
  std::string by = e.value("actor", "");
  if (!e.value("reason", "").empty()) by += (by.empty() ? "" : ": ") + e.value("reason", "");
  std::string note = e.value("error", "");
  if (!by.empty()) note += (note.empty() ? "by " : "; by ") + by;
  return {utc(e.value("atMs", int64_t{0})), e.value("event", ""), e.value("stepName", ""),
          e.value("stepStatus", ""), std::to_string(e.value("attempt", 0)), e.value("state", ""),
          e.value("commandId", ""), note};
}

const std::vector<std::string> kTimelineHeader = {"TIME",    "EVENT", "STEP",    "STEP STATUS",
                                                  "ATTEMPT", "STATE", "COMMAND", "ERROR / BY"};

void print_saga(const Json& s) {
  std::cout << "id        " << s.value("id", "") << "\n"
            << "type      " << s.value("type", "") << " v" << s.value("version", 0) << "\n"
            << "state     " << s.value("state", "") << "\n"
            << "created   " << utc(s.value("createdMs", int64_t{0})) << "\n"
            << "updated   " << utc(s.value("updatedMs", int64_t{0})) << "\n"
            << "finished  " << utc(s.value("finishedMs", int64_t{0})) << "\n";
  if (!s.value("lastError", "").empty()) std::cout << "error     " << s.value("lastError", "") << "\n";
  std::vector<std::vector<std::string>> rows = {
      {"STEP", "STATUS", "ATTEMPTS", "COMP.ATTEMPTS", "STARTED", "FINISHED", "ERROR"}};
  for (const Json& st : member(s, "steps"))
    rows.push_back({st.value("name", ""), st.value("status", ""),
                    std::to_string(st.value("attempts", 0)),
                    std::to_string(st.value("compensationAttempts", 0)),
                    utc(st.value("startedMs", int64_t{0})), utc(st.value("finishedMs", int64_t{0})),
                    st.value("lastError", "")});
  std::cout << "\n";
  print_table(rows);
  if (!s.contains("timeline")) return;
  std::cout << "\n";
  if (const int dropped = s.value("timelineDropped", 0); dropped > 0)
    std::cout << "(" << dropped << " entries after the first are no longer kept)\n";
  std::vector<std::vector<std::string>> timeline = {kTimelineHeader};
  for (const Json& e : member(s, "timeline")) timeline.push_back(timeline_row(e));
  print_table(timeline);
}

bool settled(const std::string& state, bool follow) {
  return state == "COMPLETED" || state == "COMPENSATED" || state == "ABORTED" ||
         (state == "FAILED" && !follow);
}

// Prints a saga's timeline entries as they appear, polling every
// `interval`, until the saga settles; entries are numbered across the ones
// the saga no longer keeps, so none prints twice.
int watch(Api& api, const std::string& target, std::chrono::milliseconds interval, bool follow,
          bool json) {
  size_t next = 0;  // the next entry to print, numbered over every entry ever recorded
  for (bool first = true;; first = false) {
    if (!first) std::this_thread::sleep_for(interval);  // polling the API is the wait itself
    const Json saga = api.call("GET", target);
    const Json& timeline = member(saga, "timeline");
    // Kept: entry 0, then entries dropped + 1 ... total - 1.
    const size_t dropped = saga.value("timelineDropped", size_t{0});
    const size_t total = dropped + timeline.size();
    if (first && !json) std::cout << saga.value("id", "") << " (" << saga.value("type", "") << ")\n";
    for (; next < total; ++next) {
      if (next >= 1 && next <= dropped) {  // no longer kept when we looked
        if (!json) std::cout << "(" << dropped + 1 - next << " entries no longer kept)\n";
        next = dropped;
        continue;
      }
      const Json& e = timeline[next == 0 ? 0 : next - dropped];
      if (json) {
        std::cout << e.dump() << std::endl;
        continue;
      }
      std::string line;
      for (const std::string& cell : timeline_row(e))
        if (!cell.empty()) line += (line.empty() ? "" : "  ") + cell;
      std::cout << line << std::endl;
    }
    if (settled(saga.value("state", ""), follow)) return 0;
  }
}

void print_counts(const Json& c) {
  std::vector<std::vector<std::string>> states = {{"STATE", "SAGAS"}};
  for (const auto& [state, n] : member(c, "byState").items()) states.push_back({state, n.dump()});
  print_table(states);
  std::vector<std::vector<std::string>> steps = {{"TYPE", "STEP", "STATE", "SAGAS"}};
  for (const Json& s : member(c, "bySteps"))
    steps.push_back({s.value("type", ""), s.value("step", ""), s.value("state", ""),
                     std::to_string(s.value("count", 0))});
  std::cout << "\n";
  print_table(steps);
  std::vector<std::vector<std::string>> parts = {{"AWAITING", "SAGAS"}};
  for (const Json& p : member(c, "byParticipant"))
    parts.push_back({p.value("participant", ""), std::to_string(p.value("count", 0))});
  std::cout << "\n";
  print_table(parts);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sagactl: list, read and act on sagas through the admin API (docs/admin.md)"};
  app.set_version_flag("--version", std::string("sagactl ") + std::string(saga::version()));
  std::string url = env_or("SAGA_URL", "http://127.0.0.1:8080");
  std::string token = env_or("SAGA_TOKEN", "");
  std::string cacert = env_or("SAGA_CACERT", "");
  bool json = false;
  app.add_option("--url", url, "the gateway (default $SAGA_URL, else http://127.0.0.1:8080)");
  app.add_option("--token", token, "a bearer token with the admin role (default $SAGA_TOKEN)");
  app.add_option("--cacert", cacert,
                 "https: the CA certificates (PEM) to trust (default $SAGA_CACERT, else the "
                 "system's)");
  app.add_flag("--json", json, "print the API's JSON instead of tables");
  app.require_subcommand(1);
  app.fallthrough();  // --url, --token and --json also after the subcommand

  std::string type, state, awaiting;
  int limit = 50;
  bool all = false;
  auto* list = app.add_subcommand("list", "sagas, oldest first");
  list->add_option("--type", type, "only this saga type");
  list->add_option("--state", state, "only this state (RUNNING, COMPENSATING, COMPLETED, ...)");
  list->add_option("--awaiting", awaiting, "only sagas waiting for this participant");
  list->add_option("--limit", limit, "sagas per page (1..1000)")->check(CLI::Range(1, 1000));
  list->add_flag("--all", all, "every page, not only the first");

  std::string id, reason;
  auto* show = app.add_subcommand("show", "one saga, its steps and its timeline");
  show->add_option("id", id, "the saga's id")->required();
  int interval_ms = 500;
  bool follow = false;
  auto* watcher = app.add_subcommand("watch", "print a saga's timeline as it grows, until it settles");
  watcher->add_option("id", id, "the saga's id")->required();
  watcher->add_option("--interval-ms", interval_ms, "how often to look (default 500)")
      ->check(CLI::Range(50, 60'000));
  watcher->add_flag("--follow", follow, "go on watching a FAILED saga until it ends");
  auto* counts = app.add_subcommand("counts", "sagas in flight by state, step and awaited participant");
  const std::vector<std::pair<std::string, std::string>> kActions = {
      {"retry", "a Failed saga compensates again, or its pivot is sent again"},
      {"compensate", "compensate a Running or Failed saga now"},
      {"abort", "stop a saga where it is; nothing more is sent"},
      {"skip", "give up a failed compensation as done by hand; the earlier steps are compensated"}};
  std::vector<std::pair<CLI::App*, std::string>> actions;
  for (const auto& [action, what] : kActions) {
    auto* sub = app.add_subcommand(action, what);
    sub->add_option("id", id, "the saga's id")->required();
    sub->add_option("--reason", reason, "why (recorded with your name)")->required();
    actions.emplace_back(sub, action);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kUsage;
  }

  try {
    Api api(url, token, cacert);
    const auto encode = [](const std::string& s) { return saga::service::percent_encode(s); };
    if (*list) {
      std::string query = "limit=" + std::to_string(limit);
      if (!type.empty()) query += "&type=" + encode(type);
      if (!state.empty()) query += "&state=" + encode(state);
      if (!awaiting.empty()) query += "&awaiting=" + encode(awaiting);
      Json items = Json::array();
      std::string next;
      do {
        ClientResponse raw;
        Json page = api.call("GET", "/admin/sagas?" + query + (next.empty() ? "" : "&pageToken=" + encode(next)),
                             nullptr, &raw);
        for (Json& s : page) items.push_back(std::move(s));
        next = std::string(raw.header(saga::service::kNextPageTokenHeader).value_or(""));
      } while (all && !next.empty());
      if (json) {
        std::cout << items.dump(2) << "\n";
      } else {
        std::vector<std::vector<std::string>> rows = {{"ID", "TYPE", "STATE", "STEP", "CREATED", "ERROR"}};
        for (const Json& s : items)
          rows.push_back({s.value("id", ""), s.value("type", ""), s.value("state", ""), step_of(s),
                          utc(s.value("createdMs", int64_t{0})), s.value("lastError", "")});
        print_table(rows);
        if (!next.empty()) std::cout << "(more: --all for every page)\n";
      }
      return 0;
    }
    if (*watcher)
      return watch(api, "/admin/sagas/" + encode(id), std::chrono::milliseconds(interval_ms), follow,
                   json);
    if (*counts) {
      const Json c = api.call("GET", "/admin/saga-counts");
      if (json) {
        std::cout << c.dump(2) << "\n";
      } else {
        print_counts(c);
      }
      return 0;
    }
    Json saga;
    if (*show) {
      saga = api.call("GET", "/admin/sagas/" + encode(id));
    } else {
      for (const auto& [sub, action] : actions)
        if (*sub) saga = api.call("POST", "/admin/sagas/" + encode(id) + "/" + action, {{"reason", reason}});
    }
    if (json) {
      std::cout << saga.dump(2) << "\n";
    } else {
      print_saga(saga);
    }
    return 0;
  } catch (const Failure& f) {
    std::cerr << "sagactl: " << f.message << "\n";
    return f.code;
  } catch (const Json::exception& e) {
    std::cerr << "sagactl: the server's answer is not shaped as sagactl expects: " << e.what()
              << "\n";
    return kRefused;
  }
}
