// HttpClient: a small synchronous HTTP/1.1 client for calls between services
// (the gateway's upstream calls) and for tests.
//
//   HttpClient payment("payment", 8083);
//   auto res = payment.post_json("/payments", body, {{"traceparent",
//   req.trace().child().to_string()}}); if (!res.ok()) return Response::from_status(res.status());
//   // 503 / 504
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "saga/service/http_message.h"
#include "saga/status.h"

namespace saga::service {

namespace internal {
class ClientConnection;
}  // namespace internal

/// Settings of an HttpClient.
struct ClientOptions {
  /// Longest time to resolve the host and connect. Default 2 s.
  std::chrono::milliseconds connect_timeout{2'000};
  /// Longest time to send a request and read its whole response. Default 10 s.
  std::chrono::milliseconds request_timeout{10'000};
  /// Largest response body accepted. Default 8 MiB.
  size_t body_limit = 8 * 1024 * 1024;
  /// Headers sent with every request unless the call passes one of the same
  /// name (e.g. Authorization for a test client acting as one user). Default none.
  Headers default_headers;
  /// HTTPS: TLS 1.2 or later, the server's certificate verified against
  /// `tls_ca_file` (PEM; empty = the system's CA certificates) and the host
  /// (its DNS name, or its IP address in the certificate's subjectAltName).
  /// Default false.
  bool tls = false;
  std::string tls_ca_file;
};

/// A response as received.
struct ClientResponse {
  int status = 0;
  Headers headers;
  std::string body;

  /// First header named `name` (case-insensitive).
  std::optional<std::string_view> header(std::string_view name) const {
    return find_header(headers, name);
  }
  /// The body parsed as JSON; InvalidArgument when it is not JSON or nests
  /// deeper than saga::kMaxJsonDepth (saga/json.h).
  StatusOr<nlohmann::json> json() const;
};

/// A synchronous client for one host:port that keeps its connection open
/// between calls (HTTP keep-alive) and reconnects when needed. An idempotent
/// request (GET, HEAD, PUT, DELETE, OPTIONS) that fails on a reused connection
/// the server had closed is sent once more on a new connection.
/// Not thread-safe: use one client per thread (or per call).
class HttpClient {
 public:
  HttpClient(std::string host, uint16_t port, ClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// Sends `method target` with `headers` and `body` and returns the response,
  /// whatever its status. Host, User-Agent and Content-Length are set for you;
  /// a non-empty body without a Content-Type header is sent as application/json.
  /// Errors: Unavailable when the host cannot be resolved or reached
  /// (connection refused or reset) or, with TLS, the handshake fails (an
  /// untrusted certificate, another host's); DeadlineExceeded when
  /// connect_timeout or request_timeout passes; Internal for a malformed or
  /// oversized response; InvalidArgument for an unreadable tls_ca_file.
  StatusOr<ClientResponse> request(std::string_view method, std::string_view target,
                                   const Headers& headers = {}, std::string body = {});

  StatusOr<ClientResponse> get(std::string_view target, const Headers& headers = {}) {
    return request("GET", target, headers);
  }
  StatusOr<ClientResponse> del(std::string_view target, const Headers& headers = {}) {
    return request("DELETE", target, headers);
  }
  /// `body` serialised as application/json.
  StatusOr<ClientResponse> post_json(std::string_view target, const nlohmann::json& body,
                                     const Headers& headers = {});
  StatusOr<ClientResponse> put_json(std::string_view target, const nlohmann::json& body,
                                    const Headers& headers = {});

  /// Closes the kept-alive connection, if any.
  void close();
  /// Connections opened so far (stays 1 while keep-alive holds).
  uint64_t connections_opened() const noexcept { return connections_opened_; }

 private:
  std::string host_;
  uint16_t port_;
  ClientOptions options_;
  std::unique_ptr<internal::ClientConnection> conn_;
  uint64_t connections_opened_ = 0;
};

}  // namespace saga::service
