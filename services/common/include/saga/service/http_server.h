// HttpServer: the HTTP/1.1 front of every service (Boost.Beast, asynchronous,
// handlers run synchronously on a small pool of I/O threads).
//
//   ShutdownSignal signals;                  // first: SIGTERM now means "drain"
//   HttpServer server(options, std::move(router));
//   if (auto s = server.start(); !s.ok()) { spdlog::critical("{}", s.to_string()); return 1; }
//   stop_on_signal(server, signals);          // blocks; returns after a graceful stop
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "saga/service/router.h"
#include "saga/status.h"

namespace saga::service {

namespace internal {
class ServerImpl;
class SignalWaiter;
}  // namespace internal

/// Settings of an HttpServer.
struct ServerOptions {
  /// Address to listen on. Default "127.0.0.1": only this host can connect
  /// (HTTP_HOST=0.0.0.0 opens every interface; see docs/security.md).
  std::string host = "127.0.0.1";
  /// TCP port; 0 picks a free one (see HttpServer::port()). Default 0.
  uint16_t port = 0;
  /// I/O threads; they also run the handlers. Default 2.
  int threads = 2;
  /// Largest request line plus headers; more is answered 431. Default 8 KiB.
  size_t header_limit = 8 * 1024;
  /// Largest request body; more is answered 413. Default 1 MiB.
  size_t body_limit = 1024 * 1024;
  /// Longest wait for a request's line and headers (counted from the end of
  /// the previous response on a keep-alive connection), and again for its
  /// whole body: a deadline, not an idle timeout, so a client trickling
  /// bytes (slowloris) is cut off too. Then the connection closes.
  /// Default 30 s.
  std::chrono::milliseconds read_timeout{30'000};
  /// Longest time to write a response; then the connection closes. Default 30 s.
  std::chrono::milliseconds write_timeout{30'000};
  /// Most connections open at once; a connection beyond is answered 503
  /// problem+json with Retry-After: 1 and closed. Default 512.
  size_t max_connections = 512;
  /// PEM files of the certificate chain and of its private key. Both set: the
  /// server speaks HTTPS only (TLS 1.2 or later; a plain HTTP client is closed
  /// unanswered after a failed handshake); both empty: plain HTTP. Read at
  /// start(); their content is never logged or quoted in errors.
  /// TLS_CERT_FILE, TLS_KEY_FILE. Default empty.
  std::string tls_cert_file;
  std::string tls_key_file;
  /// How long stop() lets in-flight requests finish before closing their
  /// connections. Default 10 s.
  std::chrono::milliseconds drain_timeout{10'000};

  /// Options from the environment, `default_port` when PORT is unset:
  ///   PORT (0..65535; 0 picks a free port, logged at start), HTTP_HOST, HTTP_THREADS (1..256),
  ///   HTTP_HEADER_LIMIT_BYTES, HTTP_BODY_LIMIT_BYTES, HTTP_READ_TIMEOUT_MS,
  ///   HTTP_WRITE_TIMEOUT_MS, HTTP_DRAIN_TIMEOUT_MS, HTTP_MAX_CONNECTIONS (1..1000000),
  ///   TLS_CERT_FILE and TLS_KEY_FILE (both or neither) (defaults as above).
  /// InvalidArgument naming the variable, the accepted range and the bad value.
  static StatusOr<ServerOptions> from_env(uint16_t default_port);
};

/// An HTTP/1.1 server: keep-alive, pipelined requests answered in order,
/// Expect: 100-continue, header/body limits, read and write timeouts, request
/// ids and W3C traceparent on every request and response, Prometheus metrics
/// per route (http_server_requests_total, http_server_request_duration_seconds,
/// http_server_connections_total, http_server_open_connections; see
/// Request::server_metrics_text()), and a graceful stop.
///
/// Every response carries Content-Type, Content-Length (except 1xx/204/304),
/// X-Request-Id, traceparent and Date. Errors are application/problem+json.
///
/// Thread-safety: all methods may be called from any thread, except that
/// stop() and the destructor must not run on an I/O thread (from a handler).
class HttpServer {
 public:
  HttpServer(ServerOptions options, Router router);
  /// Stops (as stop()) if running.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds, listens and starts the I/O threads. Errors: InvalidArgument for a
  /// host that is not an IP address, for one TLS file without the other or a
  /// certificate or key that cannot be loaded (naming the file), Unavailable when the address cannot be
  /// bound (in use, not permitted), FailedPrecondition when called twice or
  /// after stop() (a stopped server does not restart; make a new one).
  Status start();

  /// The port bound by start() (the real one when options.port was 0); 0 before.
  uint16_t port() const noexcept;

  /// First half of stop(): closes the listening socket (new connections are
  /// refused), closes idle keep-alive connections and marks busy ones to close
  /// after their current response. Returns once the socket is closed; does not
  /// wait for in-flight requests. Idempotent.
  void stop_accepting();

  /// Graceful stop: stop_accepting(), then waits up to drain_timeout for
  /// in-flight requests to be answered, closes the connections left, stops the
  /// I/O threads and returns. Idempotent; concurrent callers all return once it
  /// is done. A handler that never returns blocks it (threads cannot be killed).
  /// Called from an I/O thread it only does stop_accepting() and returns.
  void stop();

  /// This server's metrics in Prometheus text format.
  std::string metrics_text() const;

 private:
  std::unique_ptr<internal::ServerImpl> impl_;
};

/// Catches SIGTERM and SIGINT from construction to destruction
/// (boost::asio::signal_set; the default disposition comes back afterwards).
/// Construct it early in main(), before starting anything to drain.
/// Thread-safe, but only one thread may wait() at a time.
class ShutdownSignal {
 public:
  ShutdownSignal();
  ~ShutdownSignal();
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  /// Blocks until SIGTERM or SIGINT arrives (one that arrived earlier counts)
  /// or request() is called. Returns the signal number, or 0 for request().
  int wait();
  /// Wakes wait() as if a signal had arrived (e.g. an admin shutdown call).
  void request();

 private:
  std::unique_ptr<internal::SignalWaiter> impl_;
};

/// signals.wait(), then server.stop(). Returns the signal number (0 for
/// ShutdownSignal::request()). Call it on the main thread once everything runs.
int stop_on_signal(HttpServer& server, ShutdownSignal& signals);

}  // namespace saga::service
