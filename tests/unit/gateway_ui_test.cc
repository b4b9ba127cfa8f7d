// The web UI's routes (saga/gateway/ui.h) on a Router, and the embedded files
// themselves: every file served with its type and the CSP, redirects to
// /ui/, 404 for anything not embedded, and every file the pages load present.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <map>
#include <regex>
#include <set>
#include <string>

#include "saga/gateway/ui.h"
#include "saga/service/http_message.h"
#include "saga/service/router.h"

using saga::service::Request;
using saga::service::Response;
namespace gw = saga::gateway;

namespace {

Response get(const saga::service::Router& router, const std::string& target,
             saga::service::Headers headers = {}) {
  Request req("GET", target, std::move(headers));
  return router.handle(req);
}

saga::service::Router ui_router() {
  saga::service::Router router;
  gw::add_ui_routes(router);
  return router;
}

std::set<std::string> embedded() {
  std::set<std::string> out;
  for (const gw::UiFile& f : gw::ui_files()) out.insert(std::string(f.path));
  return out;
}

}  // namespace

TEST_CASE("every embedded file is served with its type, the CSP and nosniff") {
  const auto router = ui_router();
  REQUIRE(embedded().count("index.html") == 1);
  REQUIRE(embedded().count("js/app.js") == 1);
  for (const gw::UiFile& f : gw::ui_files()) {
    CAPTURE(f.path);
    const Response res = get(router, "/ui/" + std::string(f.path));
    CHECK(res.status() == 200);
    CHECK(res.body() == f.body);
    CHECK(res.header("Content-Type") == gw::ui_content_type(f.path));
    CHECK(res.header("Content-Security-Policy") == gw::kUiContentSecurityPolicy);
    CHECK(res.header("X-Content-Type-Options") == "nosniff");
  }
  const Response index = get(router, "/ui/");
  CHECK(index.status() == 200);
  CHECK(index.header("Content-Type") == "text/html; charset=utf-8");
  CHECK(index.body().find("<script type=\"module\" src=\"js/app.js\">") != std::string::npos);
  CHECK(get(router, "/ui/js/app.js").header("Content-Type") == "text/javascript; charset=utf-8");
  CHECK(get(router, "/ui/app.css").header("Content-Type") == "text/css; charset=utf-8");
}

TEST_CASE("/ and /ui redirect to /ui/") {
  const auto router = ui_router();
  for (const char* target : {"/", "/ui"}) {
    CAPTURE(target);
    const Response res = get(router, target);
    CHECK(res.status() == 302);
    CHECK(res.header("Location") == "/ui/");
  }
}

TEST_CASE("names not embedded are 404, however they are spelt") {
  const auto router = ui_router();
  for (const char* target :
       {"/ui/nope.js", "/ui/../CMakeLists.txt", "/ui/%2e%2e/%2e%2e/etc/passwd", "/ui/js/../index.html",
        "/ui//index.html", "/ui/js", "/ui/js/", "/ui/index.html%00", "/ui/INDEX.HTML",
        "/ui/%69ndex.html"}) {
    CAPTURE(target);
    const Response res = get(router, target);
    CHECK(res.status() == 404);
    CHECK(res.header("Content-Security-Policy") == gw::kUiContentSecurityPolicy);
  }
}

TEST_CASE("a matching If-None-Match is 304 with the same ETag") {
  const auto router = ui_router();
  const Response first = get(router, "/ui/app.css");
  const auto etag = first.header("ETag");
  REQUIRE(etag.has_value());
  const Response again = get(router, "/ui/app.css", {{"If-None-Match", std::string(*etag)}});
  CHECK(again.status() == 304);
  CHECK(again.body().empty());
  CHECK(again.header("ETag") == etag);
  CHECK(get(router, "/ui/app.css", {{"If-None-Match", "\"other\""}}).status() == 200);
}

TEST_CASE("the pages load only embedded files, and never an inline script") {
  const std::set<std::string> files = embedded();
  for (const gw::UiFile& f : gw::ui_files()) {
    CAPTURE(f.path);
    const std::string body(f.body);
    const std::string dir = f.path.find('/') == std::string_view::npos
                                ? std::string()
                                : std::string(f.path.substr(0, f.path.rfind('/') + 1));
    if (f.path.ends_with(".html")) {
      // Every <script> has a src; every src/href that is a file is embedded.
      const std::regex script(R"(<script\b([^>]*)>)");
      for (auto it = std::sregex_iterator(body.begin(), body.end(), script);
           it != std::sregex_iterator(); ++it)
        CHECK_MESSAGE((*it)[1].str().find("src=") != std::string::npos, (*it)[0].str());
      CHECK_FALSE(std::regex_search(body, std::regex(R"(\son[a-z]+\s*=)")));  // no onclick=...
      const std::regex ref(R"re((?:src|href)="([^"#:]+)")re");
      for (auto it = std::sregex_iterator(body.begin(), body.end(), ref);
           it != std::sregex_iterator(); ++it)
        CHECK_MESSAGE(files.count(dir + (*it)[1].str()) == 1, (*it)[1].str());
    }
    if (f.path.ends_with(".js")) {
      // Every relative import resolves to an embedded module; no innerHTML.
      const std::regex import(R"(from '\./([^']+)')");
      for (auto it = std::sregex_iterator(body.begin(), body.end(), import);
           it != std::sregex_iterator(); ++it)
        CHECK_MESSAGE(files.count(dir + (*it)[1].str()) == 1, (*it)[1].str());
      CHECK(body.find("innerHTML") == std::string::npos);
      CHECK(body.find("insertAdjacentHTML") == std::string::npos);
      CHECK(body.find("document.write") == std::string::npos);
    }
  }
}

TEST_CASE("the Korean and English labels have the same keys, each a string") {
  std::map<std::string, std::set<std::string>> keys;
  for (const gw::UiFile& f : gw::ui_files()) {
    if (!f.path.starts_with("js/i18n/")) continue;
    const auto labels = nlohmann::json::parse(f.body);
    REQUIRE(labels.is_object());
    for (const auto& [key, text] : labels.items()) {
      CHECK_MESSAGE(text.is_string(), f.path << ": " << key);
      keys[std::string(f.path)].insert(key);
    }
  }
  REQUIRE(keys.size() == 2);
  CHECK(keys["js/i18n/en.json"] == keys["js/i18n/ko.json"]);
  CHECK(keys["js/i18n/en.json"].count("ops.act.compensate") == 1);
}

TEST_CASE("content types by extension; unknown extensions have none") {
  CHECK(gw::ui_content_type("a/b.js") == "text/javascript; charset=utf-8");
  CHECK(gw::ui_content_type("x.png") == "image/png");
  CHECK_FALSE(gw::ui_content_type("x.exe").has_value());
  CHECK_FALSE(gw::ui_content_type("README").has_value());
  CHECK_FALSE(gw::ui_content_type("dir.js/file").has_value());
}
