// Router: picks the handler for a request by method and path pattern.
//
//   Router router;
//   router.get("/reservations/{id}", get_reservation);
//   router.post("/reservations", with_json_body(create_reservation));
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "saga/service/http_message.h"

namespace saga::service {

/// Handles one request. Runs on a server I/O thread and may block briefly
/// (e.g. on a durable write); an exception it throws becomes a 500 problem.
using Handler = std::function<Response(const Request&)>;
/// Delivers the response of an asynchronous handler. Call it exactly once,
/// from any thread (later calls are ignored). Until called it holds the
/// client's connection: call it, or drop it, before the server is destroyed
/// (work on Request::io_executor() is dropped with the server's io_context).
using Responder = std::function<void(Response)>;
/// Handles one request without holding a server thread: starts the work and
/// returns; the work calls `done` once with the response (e.g. the gateway's
/// upstream calls). Copy from the request what the work needs: the request
/// lives only until the handler returns. An exception thrown by the handler
/// becomes a 500 problem (when `done` was not called yet).
using AsyncHandler = std::function<void(const Request&, Responder done)>;
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
  /// Registers an asynchronous handler (see AsyncHandler); same rules as route().
  Router& route_async(std::string method, std::string pattern, AsyncHandler handler);
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
  /// An asynchronous handler's answer is waited for (handle() then blocks
  /// until it calls `done`: not from a thread its work needs).
  Response handle(Request& req) const;

  /// As handle(), but delivers the response to `done` (exactly once), at once
  /// for a synchronous handler or a refusal, later for an asynchronous one.
  void dispatch(Request& req, Responder done) const;

  /// A registered route: its method and pattern as given to route().
  struct RouteInfo {
    std::string method;
    std::string pattern;
  };
  /// Every registered route, in registration order (to check an API description against it).
  std::vector<RouteInfo> routes() const;

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
    Handler handler;  // one of these two
    AsyncHandler async_handler;
  };

  Router& add(std::string method, std::string pattern, Handler handler, AsyncHandler async_handler);
  // The response, or nullopt when an asynchronous handler took `answer`.
  std::optional<Response> route_and_run(Request& req, const Responder& answer) const;

  std::vector<Route> routes_;
};

}  // namespace saga::service
