// The web UI (docs/ui.md): static files under services/gateway/ui/, embedded
// into the binary at build time (embed_ui.cmake generates ui_files.cc), so an
// installed gateway serves them without a share directory.
//
//   GET /, GET /ui        -> 302 to /ui/
//   GET /ui/              -> index.html
//   GET /ui/{file...}     -> the embedded file of that exact path, else 404
//
// Files are looked up by exact name in the embedded table: nothing is read
// from disk, so no path reaches outside it. Every answer carries a strict
// Content-Security-Policy (scripts, styles and requests from this origin only;
// no inline script), X-Content-Type-Options: nosniff and an ETag (a matching
// If-None-Match is 304). No token is needed: the files hold no data; the pages
// call the API with the caller's bearer token.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "saga/service/router.h"

namespace saga::gateway {

/// One embedded file: its path under ui/ ("index.html", "js/app.js") and its
/// bytes. Both views point into static storage.
struct UiFile {
  std::string_view path;
  std::string_view body;
};

/// Every embedded file, sorted by path (defined in the generated ui_files.cc).
std::span<const UiFile> ui_files();

/// The Content-Type of a UI file by its extension; nullopt for an extension
/// the UI does not use (such a file is not served).
std::optional<std::string_view> ui_content_type(std::string_view path);

/// The Content-Security-Policy every UI response carries.
inline constexpr std::string_view kUiContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Registers the routes above on `router`. Throws std::invalid_argument when
/// one is already registered (as Router::route does).
void add_ui_routes(service::Router& router);

}  // namespace saga::gateway
