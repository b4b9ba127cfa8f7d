#include "saga/gateway/ui.h"

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

namespace saga::gateway {
namespace {

using service::Request;
using service::Response;

// One file as served: its bytes, type and entity tag.
struct Served {
  std::string_view body;
  std::string content_type;
  std::string etag;
};

// A strong entity tag from the bytes (FNV-1a, 64 bits): the files change only
// with the binary, so the tag only needs to tell two builds apart.
std::string etag_of(std::string_view body) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : body) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char out[19];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return "\"" + std::string(out) + "\"";
}

// The headers every UI answer carries, files and redirects alike.
Response& secured(Response& res) {
  res.set_header("Content-Security-Policy", std::string(kUiContentSecurityPolicy));
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_header("X-Frame-Options", "DENY");
  return res;
}

Response redirect_to_ui() {
  Response res = Response::text(302, "/ui/\n");
  res.set_header("Location", "/ui/");
  return secured(res);
}

Response serve(const Served& file, const Request& req) {
  Response res = Response::text(200, std::string(file.body), file.content_type);
  if (auto match = req.header("If-None-Match"); match && *match == file.etag)
    res = Response::text(304, "", file.content_type);
  res.set_header("ETag", file.etag);
  res.set_header("Cache-Control", "no-cache");  // revalidate: a new binary has new files
  return secured(res);
}

}  // namespace

std::optional<std::string_view> ui_content_type(std::string_view path) {
  static const std::map<std::string_view, std::string_view> kTypes = {
      {".html", "text/html; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".json", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
  };
  const size_t dot = path.rfind('.');
  if (dot == std::string_view::npos || path.find('/', dot) != std::string_view::npos)
    return std::nullopt;
  auto it = kTypes.find(path.substr(dot));
  if (it == kTypes.end()) return std::nullopt;
  return it->second;
}

void add_ui_routes(service::Router& router) {
  auto files = std::make_shared<std::map<std::string, Served, std::less<>>>();
  for (const UiFile& f : ui_files()) {
    auto type = ui_content_type(f.path);
    if (!type) continue;  // embed_ui.cmake embeds only known types; never serve a guess
    files->emplace(std::string(f.path), Served{f.body, std::string(*type), etag_of(f.body)});
  }
  router.get("/", [](const Request&) { return redirect_to_ui(); });
  router.get("/ui", [](const Request&) { return redirect_to_ui(); });
  router.get("/ui/{file...}", [files](const Request& req) {
    // The raw rest of the path, looked up as is: "..", "%2e%2e" or "a//b"
    // name no embedded file, so they are 404 like any other unknown name.
    const std::string_view name = req.param("file");
    auto it = files->find(name);
    if (it == files->end()) {
      Response res = Response::problem(404, "Not Found", "no such file in the web UI");
      return secured(res);
    }
    return serve(it->second, req);
  });
  router.get("/ui/", [files](const Request& req) {
    auto it = files->find(std::string_view("index.html"));
    if (it == files->end()) {
      Response res = Response::problem(404, "Not Found", "this gateway was built without its UI");
      return secured(res);
    }
    return serve(it->second, req);
  });
}

}  // namespace saga::gateway
