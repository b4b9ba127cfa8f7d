// Internal: the Request a parsed Beast request becomes, as HttpServer hands it
// to the router. Shared with the HTTP fuzz target (tests/fuzz), which parses
// raw bytes with the same Beast parser and routes them without a socket.
#pragma once

#include <boost/beast/http.hpp>
#include <string>
#include <utility>

#include "saga/service/http_message.h"

namespace saga::service::internal {

/// Moves the body out of `breq`.
inline Request request_from_beast(
    boost::beast::http::request<boost::beast::http::string_body>& breq) {
  Headers headers;
  for (const auto& field : breq) {
    headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  return Request(std::string(breq.method_string()), std::string(breq.target()), std::move(headers),
                 std::move(breq.body()));
}

}  // namespace saga::service::internal
