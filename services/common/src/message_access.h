// Internal: the router and the server fill in parts of Request and Response
// that handlers only read.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "saga/service/http_message.h"

namespace saga::service::internal {

struct MessageAccess {
  static void set_route(Request& req, std::string route,
                        std::vector<std::pair<std::string, std::string>> params) {
    req.route_ = std::move(route);
    req.params_ = std::move(params);
  }
  static void set_server_metrics(Request& req, std::function<std::string()> source) {
    req.server_metrics_ = std::move(source);
  }
  static void set_connection(Request& req, std::string remote_address,
                             boost::asio::any_io_executor executor) {
    req.remote_address_ = std::move(remote_address);
    req.io_executor_ = std::move(executor);
  }
  static std::string& body(Response& res) { return res.body_; }
  static Headers& headers(Response& res) { return res.headers_; }

  // Completes a response for `req`: fills `instance` and `requestId` of a
  // problem, makes sure Content-Type is set, and adds X-Request-Id and
  // traceparent.
  static void finalize(Response& res, const Request& req);
};

// ASCII case-insensitive equality (header names, media types).
bool iequals(std::string_view a, std::string_view b) noexcept;

}  // namespace saga::service::internal
