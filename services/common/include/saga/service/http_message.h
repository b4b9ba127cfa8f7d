// Request and Response: what a handler reads and what it returns.
//
//   Response get_reservation(const Request& req) {
//     auto r = store.get(req.param("id"));
//     if (!r.ok()) return Response::from_status(r.status());   // 404, 503, ...
//     return Response::json(200, to_json(*r));
//   }
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "saga/service/trace.h"
#include "saga/status.h"

namespace saga::service {

/// HTTP header fields in arrival order. Names compare case-insensitively.
using Headers = std::vector<std::pair<std::string, std::string>>;

/// The value of the first header named `name` (case-insensitive), if any.
/// The view points into `headers`.
std::optional<std::string_view> find_header(const Headers& headers, std::string_view name);

/// Decodes %XX escapes; with `plus_is_space` also '+' (query strings).
/// InvalidArgument for a '%' not followed by two hex digits.
StatusOr<std::string> percent_decode(std::string_view in, bool plus_is_space);
/// Encodes `in` for use as one path segment or query value: every byte but
/// the unreserved ones (A-Z a-z 0-9 - . _ ~) becomes %XX.
std::string percent_encode(std::string_view in);

namespace internal {
struct MessageAccess;
}

/// An HTTP request as a handler sees it. The server builds it (a test may too);
/// the router fills in the route and path parameters. Handlers get it const.
/// A value type: thread-compatible.
class Request {
 public:
  /// Builds a request from what arrived. Takes the request id from X-Request-Id
  /// when is_valid_request_id() (else generates one) and the trace context from
  /// `traceparent` when valid (else starts a new trace). A query string with bad
  /// percent-encoding is recorded in target_status() (the router answers 400).
  Request(std::string method, std::string target, Headers headers = {}, std::string body = {});

  /// The method as sent, e.g. "GET".
  const std::string& method() const noexcept { return method_; }
  /// The request target as sent, e.g. "/reservations/42?x=1".
  const std::string& target() const noexcept { return target_; }
  /// The path part of the target, still percent-encoded, e.g. "/reservations/42".
  const std::string& path() const noexcept { return path_; }
  const Headers& headers() const noexcept { return headers_; }
  /// First header named `name` (case-insensitive); the view lives as long as the request.
  std::optional<std::string_view> header(std::string_view name) const {
    return find_header(headers_, name);
  }
  const std::string& body() const noexcept { return body_; }

  /// The path parameter `name` captured by the matched route: `{id}` gives one
  /// percent-decoded segment; a tail `{rest...}` gives the raw (still encoded)
  /// remainder of the path. "" when the route has no such parameter.
  std::string_view param(std::string_view name) const noexcept;
  /// The first value of query parameter `name`, percent-decoded ('+' is a
  /// space): "" for `?flag` or `?flag=`, nullopt when absent.
  std::optional<std::string> query(std::string_view name) const;
  /// Query parameter `name` as a whole decimal integer in [min, max]:
  /// nullopt when absent, InvalidArgument (400) naming the parameter and
  /// `what` it must be (default "an integer in min..max") otherwise.
  StatusOr<std::optional<int64_t>> query_int(std::string_view name, int64_t min, int64_t max,
                                             std::string_view what = {}) const;
  /// Every query parameter in order, decoded.
  const std::vector<std::pair<std::string, std::string>>& query_params() const noexcept {
    return query_;
  }
  /// OK, or InvalidArgument when the target's query string is malformed.
  const Status& target_status() const noexcept { return target_status_; }
  /// The route pattern that matched, e.g. "/reservations/{id}"; "" before
  /// routing or when no route matched.
  const std::string& route() const noexcept { return route_; }

  /// This request's id: the client's X-Request-Id when usable, else a new one.
  /// Every response carries it back in X-Request-Id.
  const std::string& request_id() const noexcept { return request_id_; }
  /// The trace this request belongs to (the client's traceparent when valid,
  /// else a new trace). Use trace().child().to_string() on outgoing calls.
  const TraceContext& trace() const noexcept { return trace_; }
  /// trace() as a header value; every response carries it back in traceparent.
  std::string traceparent() const { return trace_.to_string(); }

  /// True when Content-Type is application/json or application/<x>+json, with
  /// no charset parameter or charset=utf-8.
  bool has_json_content_type() const;
  /// The body parsed as JSON. InvalidArgument, with a message saying what is
  /// wrong, when the Content-Type is not JSON (see has_json_content_type()),
  /// the body is empty, or it is not valid JSON (the message has the parser's
  /// position) or nests deeper than saga::kMaxJsonDepth (saga/json.h). Use
  /// with_json_body() (router.h) to answer 415 for the first case.
  StatusOr<nlohmann::json> json() const;

  /// The serving HttpServer's own metrics (requests, latency, connections) in
  /// Prometheus text format; "" for a request not served by an HttpServer.
  std::string server_metrics_text() const {
    return server_metrics_ ? server_metrics_() : std::string();
  }
  /// The client's IP address as the server saw it (e.g. "127.0.0.1"); "" for a
  /// request not served by an HttpServer.
  const std::string& remote_address() const noexcept { return remote_address_; }
  /// The serving HttpServer's I/O executor, for asynchronous work of an
  /// AsyncHandler (router.h) that must end before the server does; null
  /// (no target) for a request not served by an HttpServer.
  const boost::asio::any_io_executor& io_executor() const noexcept { return io_executor_; }

 private:
  friend struct internal::MessageAccess;

  std::string method_;
  std::string target_;
  std::string path_;
  Headers headers_;
  std::string body_;
  std::vector<std::pair<std::string, std::string>> params_;
  std::vector<std::pair<std::string, std::string>> query_;
  Status target_status_;
  std::string route_;
  std::string request_id_;
  TraceContext trace_;
  std::function<std::string()> server_metrics_;
  std::string remote_address_;
  boost::asio::any_io_executor io_executor_;
};

/// An HTTP response built by a handler. Content-Length, X-Request-Id,
/// traceparent and Date are added by the server. A value type.
/// The response header of a list route that carries the cursor to its next
/// page (absent on the last page); the client sends it back as ?pageToken=.
inline constexpr char kNextPageTokenHeader[] = "Next-Page-Token";

class Response {
 public:
  /// 200 with an empty text/plain body.
  Response();

  /// `body` serialised as application/json (invalid UTF-8 in strings is
  /// replaced, never thrown on).
  static Response json(int status, const nlohmann::json& body);
  /// A text body; Content-Type `content_type` (default text/plain; charset=utf-8).
  static Response text(int status, std::string body,
                       std::string content_type = "text/plain; charset=utf-8");
  /// An RFC 7807 problem: application/problem+json with type "about:blank",
  /// `title` (a short, fixed summary), `status` and `detail` (what went wrong
  /// with this request). The server adds `instance` (the request path) and
  /// `requestId`.
  static Response problem(int status, std::string title, std::string detail);
  /// The one mapping from saga::Status to HTTP, as a problem whose detail is the
  /// status message and whose `code` member is the status code name:
  ///   InvalidArgument, OutOfRange -> 400    NotFound -> 404
  ///   AlreadyExists, FailedPrecondition, Aborted -> 409
  ///   ResourceExhausted -> 429              Unavailable -> 503
  ///   DeadlineExceeded -> 504               Unimplemented -> 501
  ///   anything else -> 500
  /// 429 and 503 carry Retry-After (whole seconds, rounded up) when
  /// status.retry_after() > 0. An OK status gives 200 with `{}`.
  static Response from_status(const saga::Status& status);

  int status() const noexcept { return status_; }
  const std::string& body() const noexcept { return body_; }
  const Headers& headers() const noexcept { return headers_; }
  std::optional<std::string_view> header(std::string_view name) const {
    return find_header(headers_, name);
  }
  /// Sets header `name` to `value`, replacing any earlier value. Content-Length
  /// is always computed by the server: setting it has no effect.
  Response& set_header(std::string name, std::string value);
  /// The problem document of a problem response; nullptr otherwise.
  const nlohmann::json* problem_details() const noexcept { return problem_ ? &*problem_ : nullptr; }

 private:
  friend struct internal::MessageAccess;

  int status_ = 200;
  Headers headers_;
  std::string body_;
  std::optional<nlohmann::json> problem_;
};

/// The HTTP status Response::from_status() uses for `code` (200 for kOk).
int http_status_for(StatusCode code) noexcept;

/// The standard reason phrase of an HTTP status, e.g. "Not Found"; "Unknown"
/// for codes without one.
std::string_view reason_phrase(int status) noexcept;

}  // namespace saga::service
