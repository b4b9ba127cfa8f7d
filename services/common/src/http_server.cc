// The server follows Boost.Beast's advanced server example: one Session per
// connection on its own strand, every asynchronous step holding the session
// alive through shared_from_this(), limits and timeouts on every read and
// write. Handlers run synchronously on the strand, so one connection's
// requests are answered strictly in order (HTTP/1.1 pipelining).
#include "saga/service/http_server.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cassert>
#include <condition_variable>
#include <csignal>
#include <ctime>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "beast_request.h"
#include "message_access.h"

namespace saga::service {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

// A connection accepted but not yet used when stop() begins gets this long to
// send its first request (a client may have sent it already: closing at once
// would drop a request the kernel accepted for us).
constexpr std::chrono::milliseconds kNewConnectionGrace{1'000};
// After the last response on a connection we stop sending and discard what
// the client still sends for at most this long before closing: closing with
// unread data makes the kernel send RST, which can destroy the response (413
// to a client still uploading, Connection: close to a pipelining client).
constexpr std::chrono::milliseconds kLingerTimeout{2'000};
// After the drain timeout, connections are closed; this is how long stop()
// then waits for them to go before stopping the I/O threads outright.
constexpr std::chrono::milliseconds kForceCloseGrace{2'000};

thread_local bool t_on_io_thread = false;

std::string http_date() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::array<char, 64> buf{};
  size_t n = std::strftime(buf.data(), buf.size(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return std::string(buf.data(), n);
}

// Method label for metrics: unknown methods share one label so that a client
// cannot grow the series count.
std::string method_label(std::string_view method) {
  for (std::string_view known : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}) {
    if (method == known) return std::string(known);
  }
  return "OTHER";
}

bool is_http_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

}  // namespace

namespace internal {
// What the server keeps of a connection, whatever its transport.
class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void start() = 0;
  // The server is stopping: close now if idle, else after the current response.
  virtual void notify_stop() = 0;
  // The drain timeout passed: close whatever is going on.
  virtual void force_close() = 0;
};
template <class Stream>
class Session;
}  // namespace internal

class internal::ServerImpl {
 public:
  ServerImpl(ServerOptions options, Router router);
  ~ServerImpl();

  Status start();
  void stop_accepting();
  void stop();
  uint16_t port() const noexcept { return port_.load(); }
  std::string metrics_text() const {
    return prometheus::TextSerializer().Serialize(registry_->Collect());
  }

  // For sessions.
  const ServerOptions& options() const noexcept { return options_; }
  const Router& router() const noexcept { return router_; }
  bool stopping() const noexcept { return stopping_.load(); }
  std::function<std::string()> metrics_source() {
    return [this] { return metrics_text(); };
  }
  net::any_io_executor executor() const { return ioc_->get_executor(); }
  void record(const std::string& route, const std::string& method, int status, double seconds);
  void on_session_closed(SessionBase* session);

 private:
  struct RouteMetrics {
    prometheus::Counter* requests;
    prometheus::Histogram* duration;
  };

  void do_accept();  // REQUIRES: mu_ held
  void on_accept(beast::error_code ec, tcp::socket socket);
  // Answers a connection over max_connections with 503 and closes it.
  void refuse(tcp::socket socket);

  const ServerOptions options_;
  const Router router_;

  // Metrics outlive the sessions (destroyed with the io_context in ~ServerImpl).
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& durations_;
  prometheus::Counter& connections_total_;
  prometheus::Gauge& open_connections_;
  prometheus::Counter& connections_refused_;
  std::mutex metrics_mu_;
  std::unordered_map<std::string, RouteMetrics> route_metrics_;  // guarded by metrics_mu_

  std::atomic<uint16_t> port_{0};
  std::atomic<bool> stopping_{false};

  std::mutex mu_;
  std::condition_variable sessions_cv_;
  bool started_ = false;                                                   // guarded by mu_
  std::unordered_map<SessionBase*, std::weak_ptr<SessionBase>> sessions_;  // guarded by mu_
  // Set by start() when options_ name a certificate and key: every connection is TLS.
  std::optional<net::ssl::context> tls_;
  std::unique_ptr<tcp::acceptor> acceptor_;          // guarded by mu_
  std::unique_ptr<net::steady_timer> accept_retry_;  // guarded by mu_

  std::mutex stop_mu_;    // serialises stop()
  bool stopped_ = false;  // guarded by stop_mu_

  std::unique_ptr<net::io_context> ioc_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
};

// One client connection over `Stream`: beast::tcp_stream, or
// beast::ssl_stream<beast::tcp_stream> for TLS (handshake first). Lives as
// long as an asynchronous operation holds it.
template <class Stream>
class internal::Session final : public internal::SessionBase,
                                public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  Session(tcp::socket socket, internal::ServerImpl& server, net::ssl::context* tls)
      : stream_(make_stream(std::move(socket), tls)),
        server_(server),
        grace_timer_(stream_.get_executor()) {
    beast::error_code ec;
    auto peer = lowest().socket().remote_endpoint(ec);
    if (!ec) remote_ = peer.address().to_string();
  }
  ~Session() override { server_.on_session_closed(this); }

  void start() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (kTls) {
        self->handshake();
      } else {
        self->do_read();
      }
    });
  }
  void notify_stop() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->on_stop(); });
  }
  void force_close() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->close_now(); });
  }

 private:
  static Stream make_stream(tcp::socket socket, net::ssl::context* tls) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *tls);
    } else {
      (void)tls;
      return Stream(std::move(socket));
    }
  }
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  // TLS only: the handshake, within the read timeout. A client that does not
  // speak TLS (plain HTTP on this port) fails it and is closed unanswered.
  void handshake() {
    lowest().expires_after(options().read_timeout);
    stream_.async_handshake(
        net::ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
          if (ec) {
            spdlog::debug("TLS handshake with {} failed: {}", self->remote_, ec.message());
            return self->close_now();
          }
          self->do_read();
        });
  }

  enum class State { kIdle, kReading, kHandling, kWriting, kClosing, kClosed };

  const ServerOptions& options() const { return server_.options(); }

  void do_read() {
    if (state_ == State::kClosed) return;
    state_ = State::kIdle;
    parser_.emplace();
    parser_->header_limit(
        static_cast<uint32_t>(std::min<size_t>(options().header_limit, UINT32_MAX)));
    parser_->body_limit(options().body_limit);
    lowest().expires_after(options().read_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&Session<Stream>::on_header, this->shared_from_this()));
  }

  void on_header(beast::error_code ec, size_t) {
    if (ec) return on_read_error(ec);
    state_ = State::kReading;
    started_ = Clock::now();
    const auto& req = parser_->get();
    if (internal::iequals(req[http::field::expect], "100-continue") && !parser_->is_done()) {
      continue_.emplace(http::status::continue_, req.version());
      lowest().expires_after(options().write_timeout);
      http::async_write(stream_, *continue_,
                        [self = this->shared_from_this()](beast::error_code ec, size_t) {
                          self->continue_.reset();
                          if (ec) return self->close_now();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    if (parser_->is_done()) return on_read({}, 0);
    lowest().expires_after(options().read_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&Session<Stream>::on_read, this->shared_from_this()));
  }

  void on_read_error(beast::error_code ec) {
    if (ec == net::error::operation_aborted || state_ == State::kClosed) return;
    if (ec == http::error::header_limit) {
      return respond_error(431, "request line and headers exceed " +
                                    std::to_string(options().header_limit) + " bytes");
    }
    if (ec == http::error::body_limit) {
      return respond_error(
          413, "request body exceeds " + std::to_string(options().body_limit) + " bytes");
    }
    // end_of_stream / partial_message: the client went away; timeout: it
    // was silent too long (an idle keep-alive connection, usually).
    if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
        ec == beast::error::timeout || !is_http_error(ec)) {
      return close_now();
    }
    respond_error(400, "malformed HTTP request: " + ec.message());
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec) return on_read_error(ec);
    state_ = State::kHandling;
    auto& breq = parser_->get();
    Request& req = request_.emplace(internal::request_from_beast(breq));
    internal::MessageAccess::set_server_metrics(req, server_.metrics_source());
    internal::MessageAccess::set_connection(req, remote_, server_.executor());
    version_ = breq.version();
    client_keep_alive_ = breq.keep_alive();
    head_ = breq.method() == http::verb::head;
    // A synchronous handler answers before dispatch() returns, an asynchronous
    // one later from any thread: either way the answer comes back to this
    // connection's strand. The session stays alive until then.
    server_.router().dispatch(req, [self = this->shared_from_this()](Response res) {
      net::post(self->stream_.get_executor(),
                [self, res = std::move(res)]() mutable { self->on_response(std::move(res)); });
    });
  }

  void on_response(Response res) {
    if (state_ != State::kHandling || !request_) return;  // force-closed meanwhile
    route_ = request_->route().empty() ? "unmatched" : request_->route();
    method_ = method_label(request_->method());
    bool keep_alive = client_keep_alive_ && !stop_requested_ && !server_.stopping();
    send(*request_, std::move(res), version_, keep_alive, head_);
  }

  // Answers a request that could not be read whole; the connection then closes
  // (the rest of the request is still on the wire).
  void respond_error(int status, std::string detail) {
    state_ = State::kHandling;
    started_ = Clock::now();
    unsigned version = 11;
    std::optional<Request> req;
    // A Content-Length over the limit fails right after the last header field,
    // before the parser calls the header done: the fields are all there.
    bool have_header = parser_ && (parser_->is_header_done() || status == 413);
    if (have_header) {
      const auto& h = parser_->get();
      version = h.version();
      req.emplace(std::string(h.method_string()), std::string(h.target()));
      method_ = method_label(req->method());
    } else {
      req.emplace(std::string(), std::string());
      method_ = "OTHER";
    }
    route_ = "unmatched";
    spdlog::debug("HTTP {}: {} (requestId {})", status, detail, req->request_id());
    send(*req, Response::problem(status, std::string(reason_phrase(status)), std::move(detail)),
         version, /*keep_alive=*/false, /*head=*/false);
  }

  void send(const Request& req, Response res, unsigned version, bool keep_alive, bool head) {
    if (res.status() < 100 || res.status() > 599) {
      spdlog::error("handler for {} {} returned HTTP status {} (requestId {})", req.method(),
                    req.path(), res.status(), req.request_id());
      res = Response::problem(500, "Internal Server Error", "the handler returned no valid status");
    }
    internal::MessageAccess::finalize(res, req);
    status_ = res.status();
    auto& out = response_.emplace();
    out.version(version);
    out.result(static_cast<unsigned>(res.status()));
    for (auto& [name, value] : internal::MessageAccess::headers(res)) {
      if (internal::iequals(name, "Content-Length") || internal::iequals(name, "Connection") ||
          internal::iequals(name, "Transfer-Encoding")) {
        continue;
      }
      out.insert(name, value);
    }
    out.set(http::field::date, http_date());
    out.keep_alive(keep_alive);
    std::string& body = internal::MessageAccess::body(res);
    if (status_ / 100 == 1 || status_ == 204 || status_ == 304) {
      // These carry neither a body nor Content-Length.
    } else if (head) {
      out.content_length(body.size());
    } else {
      out.body() = std::move(body);
      out.prepare_payload();
    }
    close_after_write_ = !keep_alive;
    state_ = State::kWriting;
    lowest().expires_after(options().write_timeout);
    http::async_write(
        stream_, out,
        beast::bind_front_handler(&Session<Stream>::on_write, this->shared_from_this()));
  }

  void on_write(beast::error_code ec, size_t) {
    server_.record(route_, method_, status_,
                   std::chrono::duration<double>(Clock::now() - started_).count());
    response_.reset();
    ++served_;
    if (ec) return close_now();
    if (close_after_write_ || stop_requested_ || server_.stopping()) return linger_close();
    do_read();
  }

  void on_stop() {
    stop_requested_ = true;
    bool nothing_received =
        state_ == State::kIdle && buffer_.size() == 0 && !(parser_ && parser_->got_some());
    if (!nothing_received) return;  // closes after the response being built/written
    if (served_ > 0) return close_now();
    grace_timer_.expires_after(std::min(kNewConnectionGrace, options().drain_timeout));
    grace_timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      bool still_nothing = self->state_ == State::kIdle && self->buffer_.size() == 0 &&
                           !(self->parser_ && self->parser_->got_some());
      if (!ec && still_nothing) self->close_now();
    });
  }

  void linger_close() {
    state_ = State::kClosing;
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close_now();
    lowest().expires_after(std::min(kLingerTimeout, options().read_timeout));
    do_linger();
  }

  void do_linger() {
    stream_.async_read_some(net::buffer(linger_buf_),
                            [self = this->shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->close_now();
                              self->do_linger();
                            });
  }

  void close_now() {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    grace_timer_.cancel();
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
  }

  Stream stream_;
  std::string remote_;  // the client's IP address
  internal::ServerImpl& server_;
  net::steady_timer grace_timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::empty_body>> continue_;
  std::optional<http::response<http::string_body>> response_;
  // The request being handled (kept until its answer is sent).
  std::optional<Request> request_;
  unsigned version_ = 11;
  bool client_keep_alive_ = false;
  bool head_ = false;
  std::array<char, 4096> linger_buf_{};
  State state_ = State::kIdle;
  bool stop_requested_ = false;
  bool close_after_write_ = false;
  uint64_t served_ = 0;
  // The exchange in progress, for metrics.
  Clock::time_point started_{};
  std::string route_;
  std::string method_;
  int status_ = 0;
};

internal::ServerImpl::ServerImpl(ServerOptions options, Router router)
    : options_(std::move(options)),
      router_(std::move(router)),
      requests_(prometheus::BuildCounter()
                    .Name("http_server_requests_total")
                    .Help("HTTP requests answered, by route pattern, method and status")
                    .Register(*registry_)),
      durations_(prometheus::BuildHistogram()
                     .Name("http_server_request_duration_seconds")
                     .Help("Time from a request's headers to the end of its response, by route "
                           "pattern, method and status")
                     .Register(*registry_)),
      connections_total_(prometheus::BuildCounter()
                             .Name("http_server_connections_total")
                             .Help("TCP connections accepted")
                             .Register(*registry_)
                             .Add({})),
      open_connections_(prometheus::BuildGauge()
                            .Name("http_server_open_connections")
                            .Help("TCP connections open now")
                            .Register(*registry_)
                            .Add({})),
      connections_refused_(prometheus::BuildCounter()
                               .Name("http_server_connections_refused_total")
                               .Help("TCP connections answered 503 and closed at once because "
                                     "HTTP_MAX_CONNECTIONS were open")
                               .Register(*registry_)
                               .Add({})),
      ioc_(std::make_unique<net::io_context>(std::max(1, options_.threads))) {}

internal::ServerImpl::~ServerImpl() {
  assert(!t_on_io_thread && "HttpServer destroyed from one of its own handlers");
  stop();
  // Destroy pending handlers (and the sessions they hold) while the members
  // sessions report to still exist.
  {
    std::lock_guard lock(mu_);
    accept_retry_.reset();
    acceptor_.reset();
  }
  ioc_.reset();
}

Status internal::ServerImpl::start() {
  std::lock_guard lock(mu_);
  if (started_ || stopping_) {
    return Status::failed_precondition("HttpServer::start called twice or after stop");
  }
  if (options_.threads < 1) {
    return Status::invalid_argument("HTTP threads must be at least 1, got " +
                                    std::to_string(options_.threads));
  }
  beast::error_code ec;
  auto address = net::ip::make_address(options_.host, ec);
  if (ec)
    return Status::invalid_argument("HTTP host must be an IP address, got '" + options_.host + "'");
  tcp::endpoint endpoint(address, options_.port);
  if (options_.tls_cert_file.empty() != options_.tls_key_file.empty()) {
    return Status::invalid_argument("TLS needs both a certificate file and a key file");
  }
  if (!options_.tls_cert_file.empty()) {
    // TLS 1.2 and later. Errors name the file and OpenSSL's reason, never its content.
    net::ssl::context tls(net::ssl::context::tls_server);
    tls.set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                    net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                    net::ssl::context::no_tlsv1_1 | net::ssl::context::single_dh_use);
    if (tls.use_certificate_chain_file(options_.tls_cert_file, ec); ec) {
      return Status::invalid_argument("cannot load the TLS certificate chain from " +
                                      options_.tls_cert_file + ": " + ec.message());
    }
    if (tls.use_private_key_file(options_.tls_key_file, net::ssl::context::pem, ec); ec) {
      return Status::invalid_argument("cannot load the TLS private key from " +
                                      options_.tls_key_file + ": " + ec.message());
    }
    tls_.emplace(std::move(tls));
  }
  std::string where = options_.host + ":" + std::to_string(options_.port);
  auto acceptor = std::make_unique<tcp::acceptor>(*ioc_);
  if (acceptor->open(endpoint.protocol(), ec); ec) {
    return Status::unavailable("cannot open a socket for " + where + ": " + ec.message());
  }
  acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (acceptor->bind(endpoint, ec); ec) {
    return Status::unavailable("cannot listen on " + where + ": " + ec.message());
  }
  if (acceptor->listen(net::socket_base::max_listen_connections, ec); ec) {
    return Status::unavailable("cannot listen on " + where + ": " + ec.message());
  }
  port_ = acceptor->local_endpoint().port();
  acceptor_ = std::move(acceptor);
  accept_retry_ = std::make_unique<net::steady_timer>(*ioc_);
  started_ = true;
  do_accept();
  work_.emplace(ioc_->get_executor());
  for (int i = 0; i < options_.threads; ++i) {
    threads_.emplace_back([this] {
      t_on_io_thread = true;
      while (true) {
        try {
          ioc_->run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("HTTP server I/O thread caught: {}", e.what());
        }
      }
    });
  }
  spdlog::info("HTTP{} server listening on {}:{} with {} threads", tls_ ? "S" : "", options_.host,
               port_.load(), options_.threads);
  return ok_status();
}

void internal::ServerImpl::do_accept() {
  acceptor_->async_accept(
      net::make_strand(*ioc_),
      [this](beast::error_code ec, tcp::socket socket) { on_accept(ec, std::move(socket)); });
}

void internal::ServerImpl::on_accept(beast::error_code ec, tcp::socket socket) {
  // Declared before the lock so that it is released after it: if the session
  // has already finished on another thread, this is the last reference, and
  // ~Session takes mu_.
  std::shared_ptr<SessionBase> session;
  std::lock_guard lock(mu_);
  if (stopping_) return;  // `socket` closes as it goes out of scope
  if (ec) {
    // Out of file descriptors, usually: try again shortly instead of spinning.
    spdlog::warn("HTTP accept failed: {}", ec.message());
    accept_retry_->expires_after(std::chrono::milliseconds(100));
    accept_retry_->async_wait([this](beast::error_code wait_ec) {
      std::lock_guard lock(mu_);
      if (!wait_ec && !stopping_) do_accept();
    });
    return;
  }
  if (sessions_.size() >= options_.max_connections) {
    refuse(std::move(socket));
    do_accept();
    return;
  }
  if (tls_) {
    session = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(std::move(socket),
                                                                              *this, &*tls_);
  } else {
    session = std::make_shared<Session<beast::tcp_stream>>(std::move(socket), *this, nullptr);
  }
  sessions_.emplace(session.get(), session);
  connections_total_.Increment();
  open_connections_.Increment();
  session->start();
  do_accept();
}

namespace {

// A connection refused for want of room: answered 503 and closed. The client
// may still be sending its request: we stop writing, then read and discard for
// a moment so that closing does not reset the connection under the response.
class Refusal : public std::enable_shared_from_this<Refusal> {
 public:
  explicit Refusal(tcp::socket socket) : stream_(std::move(socket)) {}
  void start() {
    stream_.expires_after(std::chrono::seconds(1));
    net::async_write(stream_, net::buffer(kAnswer),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->close();
                       self->stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
                       self->stream_.expires_after(std::chrono::seconds(1));
                       self->drain();
                     });
  }

 private:
  static constexpr std::string_view kBody =
      R"({"type":"about:blank","title":"Service Unavailable","status":503,)"
      R"("detail":"too many open connections; try again later"})";
  static inline const std::string kAnswer =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
      "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
      std::to_string(kBody.size()) + "\r\n\r\n" + std::string(kBody);

  void drain() {
    stream_.async_read_some(net::buffer(buf_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->close();
                              self->drain();
                            });
  }
  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  std::array<char, 1024> buf_{};
};

}  // namespace

void internal::ServerImpl::refuse(tcp::socket socket) {
  connections_refused_.Increment();
  spdlog::debug("HTTP: {} connections open (HTTP_MAX_CONNECTIONS): refusing one", sessions_.size());
  std::make_shared<Refusal>(std::move(socket))->start();
}

void internal::ServerImpl::on_session_closed(SessionBase* session) {
  std::lock_guard lock(mu_);
  sessions_.erase(session);
  open_connections_.Decrement();
  sessions_cv_.notify_all();
}

void internal::ServerImpl::record(const std::string& route, const std::string& method, int status,
                                  double seconds) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  std::string status_text = std::to_string(status);
  std::string key = route + '\n' + method + '\n' + status_text;
  RouteMetrics m{};
  {
    std::lock_guard lock(metrics_mu_);
    auto it = route_metrics_.find(key);
    if (it == route_metrics_.end()) {
      prometheus::Labels labels{{"route", route}, {"method", method}, {"status", status_text}};
      RouteMetrics created{&requests_.Add(labels), &durations_.Add(labels, kBuckets)};
      it = route_metrics_.emplace(std::move(key), created).first;
    }
    m = it->second;
  }
  m.requests->Increment();
  m.duration->Observe(seconds);
}

void internal::ServerImpl::stop_accepting() {
  std::vector<std::weak_ptr<SessionBase>> sessions;
  {
    std::lock_guard lock(mu_);
    if (stopping_.exchange(true)) return;
    beast::error_code ec;
    if (acceptor_) acceptor_->close(ec);
    if (accept_retry_) accept_retry_->cancel();
    for (const auto& [ptr, weak] : sessions_) sessions.push_back(weak);
  }
  if (port_ != 0) spdlog::info("HTTP server on port {} stopped accepting", port_.load());
  // Outside mu_: dropping the last reference to a session takes mu_ again.
  for (const auto& weak : sessions) {
    if (auto session = weak.lock()) session->notify_stop();
  }
}

void internal::ServerImpl::stop() {
  if (t_on_io_thread) {
    stop_accepting();
    return;
  }
  std::lock_guard stop_lock(stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard lock(mu_);
    if (!started_) {
      stopping_ = true;
      return;
    }
  }
  stop_accepting();

  auto wait_for_sessions = [this](Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    sessions_cv_.wait_until(lock, deadline, [this] { return sessions_.empty(); });
    std::vector<std::weak_ptr<SessionBase>> left;
    for (const auto& [ptr, weak] : sessions_) left.push_back(weak);
    return left;
  };
  auto left = wait_for_sessions(Clock::now() + options_.drain_timeout);
  if (!left.empty()) {
    spdlog::warn("HTTP server: closing {} connections still busy after the {} ms drain timeout",
                 left.size(), options_.drain_timeout.count());
    for (const auto& weak : left) {
      if (auto session = weak.lock()) session->force_close();
    }
    left = wait_for_sessions(Clock::now() + kForceCloseGrace);
  }
  work_.reset();
  // Only a handler that does not return keeps a session now; do not wait for
  // its connection (the join below still waits for the handler itself).
  if (!left.empty()) ioc_->stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  spdlog::info("HTTP server on port {} stopped", port_.load());
}

HttpServer::HttpServer(ServerOptions options, Router router)
    : impl_(std::make_unique<internal::ServerImpl>(std::move(options), std::move(router))) {}
HttpServer::~HttpServer() = default;
Status HttpServer::start() { return impl_->start(); }
uint16_t HttpServer::port() const noexcept { return impl_->port(); }
void HttpServer::stop_accepting() { impl_->stop_accepting(); }
void HttpServer::stop() { impl_->stop(); }
std::string HttpServer::metrics_text() const { return impl_->metrics_text(); }

class internal::SignalWaiter {
 public:
  int wait() {
    int result = 0;
    signals_.async_wait([&result](beast::error_code ec, int signal) { result = ec ? 0 : signal; });
    ioc_.restart();
    ioc_.run();
    return result;
  }
  void request() {
    net::post(ioc_, [this] { signals_.cancel(); });
  }

 private:
  net::io_context ioc_{1};
  net::signal_set signals_{ioc_, SIGINT, SIGTERM};
};

ShutdownSignal::ShutdownSignal() : impl_(std::make_unique<internal::SignalWaiter>()) {}
ShutdownSignal::~ShutdownSignal() = default;
int ShutdownSignal::wait() { return impl_->wait(); }
void ShutdownSignal::request() { impl_->request(); }

int stop_on_signal(HttpServer& server, ShutdownSignal& signals) {
  int signal = signals.wait();
  spdlog::info("shutting down ({})", signal == SIGTERM  ? "SIGTERM"
                                     : signal == SIGINT ? "SIGINT"
                                                        : "requested");
  server.stop();
  return signal;
}

}  // namespace saga::service
