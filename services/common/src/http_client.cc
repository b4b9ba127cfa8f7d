// Synchronous calls built from Beast's asynchronous ones on a private
// io_context: that is how each step gets a deadline (beast::tcp_stream's
// timeouts only apply to asynchronous operations).
#include "saga/service/http_client.h"

#include <openssl/ssl.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <optional>

#include "saga/json.h"

namespace saga::service {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace internal {

class ClientConnection {
 public:
  net::io_context ioc{1};
  std::optional<beast::tcp_stream> stream;  // plain HTTP
  std::optional<net::ssl::context> tls;     // with ClientOptions::tls
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;  // HTTPS: over its own TCP stream
  beast::flat_buffer buffer;

  bool connected() const { return stream || secure; }
  beast::tcp_stream& tcp() { return secure ? beast::get_lowest_layer(*secure) : *stream; }
  // Calls `f` with the stream HTTP goes over.
  template <class F>
  void with_stream(F&& f) {
    if (secure) {
      f(*secure);
    } else {
      f(*stream);
    }
  }

  // Runs the queued operations to completion.
  void run() {
    ioc.restart();
    ioc.run();
  }

  // Whether the connection can carry another request: still open, and the
  // server has neither closed it nor sent anything unasked.
  bool reusable() {
    if (!connected() || !tcp().socket().is_open() || buffer.size() != 0) return false;
    auto& socket = tcp().socket();
    beast::error_code ec;
    socket.non_blocking(true, ec);
    if (ec) return false;
    char byte;
    socket.receive(net::buffer(&byte, 1), tcp::socket::message_peek, ec);
    beast::error_code restore;
    socket.non_blocking(false, restore);
    return ec == net::error::would_block || ec == net::error::try_again;
  }
};

}  // namespace internal

namespace {

bool is_idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" ||
         method == "OPTIONS";
}

bool is_http_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

// Moves the connected TCP stream into a TLS stream and shakes hands by
// `deadline`, checking the certificate names the host (SNI for a name).
Status handshake(internal::ClientConnection& c, const std::string& host, Clock::time_point deadline,
                 const std::string& where) {
  c.secure.emplace(std::move(*c.stream), *c.tls);
  c.stream.reset();
  beast::error_code ec;
  (void)net::ip::make_address(host, ec);
  const bool is_ip = !ec;
  ec.clear();
  SSL* ssl = c.secure->native_handle();
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  const bool named = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1
                           : SSL_set_tlsext_host_name(ssl, host.c_str()) == 1 &&
                                 X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0) == 1;
  if (!named) return Status::internal("cannot set the TLS host name " + host);
  c.tcp().expires_at(deadline);
  c.secure->async_handshake(net::ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
  c.run();
  if (ec == beast::error::timeout)
    return Status::deadline_exceeded("TLS handshake with " + where + " timed out");
  if (ec) return Status::unavailable("TLS handshake with " + where + " failed: " + ec.message());
  return Status();
}

}  // namespace

StatusOr<nlohmann::json> ClientResponse::json() const {
  StatusOr<nlohmann::json> parsed = parse_json(body);
  if (!parsed.ok()) {
    return Status::invalid_argument("response body is not JSON: " + parsed.status().message());
  }
  return parsed;
}

HttpClient::HttpClient(std::string host, uint16_t port, ClientOptions options)
    : host_(std::move(host)), port_(port), options_(options) {}

HttpClient::~HttpClient() = default;

void HttpClient::close() {
  if (conn_ && conn_->connected()) {
    beast::error_code ec;
    conn_->tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
    conn_->tcp().close();
  }
  if (conn_) {
    conn_->secure.reset();
    conn_->stream.reset();
    conn_->buffer.clear();
  }
}

StatusOr<ClientResponse> HttpClient::post_json(std::string_view target, const nlohmann::json& body,
                                               const Headers& headers) {
  Headers h = headers;
  if (!find_header(h, "Content-Type")) h.emplace_back("Content-Type", "application/json");
  return request("POST", target, h, body.dump());
}

StatusOr<ClientResponse> HttpClient::put_json(std::string_view target, const nlohmann::json& body,
                                              const Headers& headers) {
  Headers h = headers;
  if (!find_header(h, "Content-Type")) h.emplace_back("Content-Type", "application/json");
  return request("PUT", target, h, body.dump());
}

StatusOr<ClientResponse> HttpClient::request(std::string_view method, std::string_view target,
                                             const Headers& headers, std::string body) {
  if (!conn_) {
    auto fresh = std::make_unique<internal::ClientConnection>();
    if (options_.tls) {
      auto& ctx = fresh->tls.emplace(net::ssl::context::tls_client);
      ctx.set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                      net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                      net::ssl::context::no_tlsv1_1);
      ctx.set_verify_mode(net::ssl::verify_peer);
      beast::error_code ec;
      if (options_.tls_ca_file.empty()) {
        ctx.set_default_verify_paths(ec);
      } else {
        ctx.load_verify_file(options_.tls_ca_file, ec);
      }
      if (ec) {
        return Status::invalid_argument("cannot load CA certificates" +
                                        (options_.tls_ca_file.empty()
                                             ? std::string(" from the system's paths")
                                             : " from " + options_.tls_ca_file) +
                                        ": " + ec.message());
      }
    }
    conn_ = std::move(fresh);
  }
  auto& c = *conn_;
  const std::string where = host_ + ":" + std::to_string(port_);

  http::request<http::string_body> req;
  req.version(11);
  if (http::verb v = http::string_to_verb(method); v != http::verb::unknown) {
    req.method(v);
  } else {
    req.method_string(method);
  }
  req.target(target);
  req.set(http::field::host, where);
  req.set(http::field::user_agent, "saga-service-client");
  for (const auto& [name, value] : options_.default_headers)
    if (!find_header(headers, name)) req.set(name, value);
  for (const auto& [name, value] : headers) req.set(name, value);
  if (!body.empty() && !find_header(headers, "Content-Type")) {
    req.set(http::field::content_type, "application/json");
  }
  req.body() = std::move(body);
  req.prepare_payload();
  req.keep_alive(true);

  for (int attempt = 0;; ++attempt) {
    bool reused = c.reusable();
    if (!reused) {
      close();
      // Connect (resolving first unless the host is an IP address).
      auto deadline = Clock::now() + options_.connect_timeout;
      beast::error_code ec;
      tcp::resolver::results_type endpoints;
      auto address = net::ip::make_address(host_, ec);
      if (!ec) {
        endpoints = tcp::resolver::results_type::create(tcp::endpoint(address, port_), host_,
                                                        std::to_string(port_));
      } else {
        tcp::resolver resolver(c.ioc);
        net::steady_timer timer(c.ioc);
        bool timed_out = false;
        resolver.async_resolve(host_, std::to_string(port_),
                               [&](beast::error_code e, tcp::resolver::results_type r) {
                                 ec = e;
                                 endpoints = std::move(r);
                                 timer.cancel();
                               });
        timer.expires_at(deadline);
        timer.async_wait([&](beast::error_code e) {
          if (e) return;
          timed_out = true;
          resolver.cancel();
        });
        c.run();
        if (timed_out) {
          return Status::deadline_exceeded("resolving " + host_ + " timed out after " +
                                           std::to_string(options_.connect_timeout.count()) +
                                           " ms");
        }
        if (ec) return Status::unavailable("cannot resolve " + host_ + ": " + ec.message());
      }
      c.stream.emplace(c.ioc);
      c.stream->expires_at(deadline);
      c.stream->async_connect(endpoints,
                              [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
      c.run();
      if (ec) {
        close();
        if (ec == beast::error::timeout) {
          return Status::deadline_exceeded("connecting to " + where + " timed out after " +
                                           std::to_string(options_.connect_timeout.count()) +
                                           " ms");
        }
        return Status::unavailable("cannot connect to " + where + ": " + ec.message());
      }
      c.stream->socket().set_option(tcp::no_delay(true), ec);
      if (c.tls) {
        if (Status s = handshake(c, host_, deadline, where); !s.ok()) {
          close();
          return s;
        }
      }
      ++connections_opened_;
    }

    auto deadline = Clock::now() + options_.request_timeout;
    auto timeout_status = [&] {
      return Status::deadline_exceeded(std::string(method) + " " + std::string(target) + " on " +
                                       where + " timed out after " +
                                       std::to_string(options_.request_timeout.count()) + " ms");
    };
    beast::error_code write_ec;
    c.tcp().expires_at(deadline);
    c.with_stream([&](auto& s) {
      http::async_write(s, req, [&](beast::error_code e, size_t) { write_ec = e; });
    });
    c.run();
    if (write_ec == beast::error::timeout) {
      close();
      return timeout_status();
    }
    // A server may answer early and close while we are still sending (413 to a
    // large upload): read whatever it said before reporting the write error.
    bool try_read = !write_ec || write_ec == net::error::broken_pipe ||
                    write_ec == net::error::connection_reset;
    http::response_parser<http::string_body> parser;
    parser.header_limit(64 * 1024);
    parser.body_limit(options_.body_limit);
    if (method == "HEAD") parser.skip(true);
    beast::error_code read_ec = write_ec;
    if (try_read) {
      c.tcp().expires_at(deadline);
      c.with_stream([&](auto& s) {
        http::async_read(s, c.buffer, parser, [&](beast::error_code e, size_t) { read_ec = e; });
      });
      c.run();
    }
    if (read_ec) {
      close();
      if (read_ec == beast::error::timeout) return timeout_status();
      bool nothing_received = !parser.got_some();
      if (reused && nothing_received && attempt == 0 && is_idempotent(method)) {
        continue;  // the server closed the kept-alive connection under us: try a new one
      }
      if (is_http_error(read_ec) && read_ec != http::error::end_of_stream &&
          read_ec != http::error::partial_message) {
        return Status::internal("bad response to " + std::string(method) + " " +
                                std::string(target) + " from " + where + ": " + read_ec.message());
      }
      return Status::unavailable(std::string(method) + " " + std::string(target) + " on " + where +
                                 " failed: " + read_ec.message());
    }

    auto& res = parser.get();
    ClientResponse out;
    out.status = static_cast<int>(res.result_int());
    for (const auto& field : res) {
      out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    out.body = std::move(res.body());
    if (!res.keep_alive() || write_ec) close();
    return out;
  }
}

}  // namespace saga::service
