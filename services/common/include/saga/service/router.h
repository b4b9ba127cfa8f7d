// Router: picks the handler for a request by method and path pattern.
//
//   Router router;
//   router.get("/reservations/{id}", get_reservation);
//   router.post("/reservations", with_json_body(create_reservation));
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "saga/service/http_message.h"

namespace saga::service {

/// Handles one request. Runs on a server I/O thread and may block briefly
/// (e.g. on a durable write); an exception it throws becomes a 500 problem.
using Handler = std::function<Response(const Request&)>;
/// A handler of a request whose body is a JSON document.
using JsonHandler = std::function<Response(const Request&, const nlohmann::json& body)>;

/// Wraps `handler` so it only runs for a JSON body: 415 problem when the
/// Content-Type is not JSON, 400 problem (with the parser's message) when the
/// body is empty or malformed.
Handler with_json_body(JsonHandler handler);

/// Routes by method and path pattern. A pattern is '/'-separated segments:
/// literal text, `{name}` (captures one non-empty segment, percent-decoded), or,
/// as the last segment only, `{name...}` (captures the non-empty rest of the
/// path, raw). When several patterns match, the one with literal segments
/// earliest wins ("/a/new" beats "/a/{id}", which beats "/a/{rest...}").
/// GET routes also answer HEAD.
///
/// Answers itself: 400 for a malformed target, 404 when no pattern matches the
/// path, 405 with Allow when patterns match the path but not the method.
///
/// Thread-safety: register routes before the server starts; handle() is const
/// and may then run concurrently.
class Router {
 public:
  /// Registers `handler` for `method` and `pattern`. Throws std::invalid_argument
  /// for a malformed pattern or a method+pattern already registered (a
  /// programming error, found at startup).
  Router& route(std::string method, std::string pattern, Handler handler);
  Router& get(std::string pattern, Handler handler) {
    return route("GET", std::move(pattern), std::move(handler));
  }
  Router& post(std::string pattern, Handler handler) {
    return route("POST", std::move(pattern), std::move(handler));
  }
  Router& put(std::string pattern, Handler handler) {
    return route("PUT", std::move(pattern), std::move(handler));
  }
  Router& patch(std::string pattern, Handler handler) {
    return route("PATCH", std::move(pattern), std::move(handler));
  }
  Router& del(std::string pattern, Handler handler) {
    return route("DELETE", std::move(pattern), std::move(handler));
  }

  /// Routes `req`: sets its route() and path parameters, runs the handler and
  /// returns its response; or returns the router's own 400/404/405 problem.
  /// Never throws: an exception from the handler is logged and becomes a 500
  /// problem. The response is not finalized (see HttpServer).
  Response handle(Request& req) const;

 private:
  enum class SegmentKind { kTail = 0, kParam = 1, kLiteral = 2 };
  struct Segment {
    SegmentKind kind;
    std::string text;  // literal text or parameter name
  };
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<Segment> segments;
    Handler handler;
  };

  std::vector<Route> routes_;
};

}  // namespace saga::service
