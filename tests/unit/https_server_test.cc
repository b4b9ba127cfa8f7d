// HttpServer with TLS: a self-signed certificate made at test time (the
// openssl command line, into a temporary folder), an HTTPS round trip that
// verifies it, and plain HTTP refused on the TLS port; HttpClient over TLS:
// verified, keep-alive, and refusing an untrusted certificate or another host's.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "saga/service/http_client.h"
#include "saga/service/http_server.h"
#include "saga/service/router.h"
#include "support/temp_dir.h"

using namespace saga::service;
namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

// A self-signed certificate for 127.0.0.1 (its CN and subjectAltName) and its key, in `dir`.
struct SelfSigned {
  explicit SelfSigned(const std::filesystem::path& dir)
      : cert((dir / "cert.pem").string()), key((dir / "key.pem").string()) {
    const std::string cmd =
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
        "-addext subjectAltName=IP:127.0.0.1 -keyout '" + key +
        "' -out '" + cert + "' >/dev/null 2>&1";
    REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "openssl could not make a certificate");
  }
  std::string cert;
  std::string key;
};

ServerOptions tls_options(const SelfSigned& files) {
  ServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.tls_cert_file = files.cert;
  o.tls_key_file = files.key;
  return o;
}

Router ping_router() {
  Router r;
  r.get("/ping", [](const Request&) { return Response::text(200, "pong"); });
  return r;
}

}  // namespace

TEST_CASE("a server given a certificate and key answers HTTPS, verified against the certificate") {
  saga::testing::TempDir dir("https-test");
  SelfSigned files(dir.path());
  HttpServer server(tls_options(files), ping_router());
  auto started = server.start();
  REQUIRE_MESSAGE(started.ok(), started.to_string());

  net::io_context ioc;
  net::ssl::context ctx(net::ssl::context::tls_client);
  ctx.load_verify_file(files.cert);
  ctx.set_verify_mode(net::ssl::verify_peer);
  beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
  beast::get_lowest_layer(stream).connect(
      tcp::endpoint(net::ip::make_address("127.0.0.1"), server.port()));
  beast::error_code ec;
  stream.handshake(net::ssl::stream_base::client, ec);
  REQUIRE_MESSAGE(!ec, ec.message());
  for (int i = 0; i < 2; ++i) {  // keep-alive over TLS
    http::request<http::empty_body> req(http::verb::get, "/ping", 11);
    req.set(http::field::host, "127.0.0.1");
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    CHECK(res.result_int() == 200);
    CHECK(res.body() == "pong");
  }
}

TEST_CASE("plain HTTP on the TLS port gets no HTTP answer and the connection closes") {
  saga::testing::TempDir dir("https-test");
  SelfSigned files(dir.path());
  HttpServer server(tls_options(files), ping_router());
  REQUIRE(server.start().ok());

  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(server.port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  const std::string plain = "GET /ping HTTP/1.1\r\nHost: t\r\n\r\n";
  REQUIRE(::send(fd, plain.data(), plain.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(plain.size()));
  std::string got;
  char buf[1024];
  ssize_t n;
  bool closed = false;
  while (true) {
    n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      got.append(buf, static_cast<size_t>(n));
      continue;
    }
    closed = n == 0 || errno == ECONNRESET;
    break;
  }
  ::close(fd);
  CHECK(closed);
  CHECK(got.find("HTTP/1.1") == std::string::npos);
  CHECK(got.find("pong") == std::string::npos);
}

TEST_CASE(
    "a missing or unreadable key stops start() with an error naming the file, not its content") {
  saga::testing::TempDir dir("https-test");
  SelfSigned files(dir.path());
  ServerOptions o = tls_options(files);
  o.tls_key_file = (dir.path() / "missing.pem").string();
  HttpServer missing(o, ping_router());
  auto s = missing.start();
  REQUIRE(!s.ok());
  CHECK(s.message().find("missing.pem") != std::string::npos);

  ServerOptions half = tls_options(files);
  half.tls_key_file.clear();
  HttpServer one_file(half, ping_router());
  CHECK(!one_file.start().ok());

  // A certificate given as the key: refused; the error does not quote the file.
  std::ifstream in(files.cert);
  std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ServerOptions wrong = tls_options(files);
  wrong.tls_key_file = files.cert;
  HttpServer wrong_key(wrong, ping_router());
  auto w = wrong_key.start();
  REQUIRE(!w.ok());
  CHECK(w.message().find("BEGIN") == std::string::npos);
  CHECK(w.message().find(pem.substr(30, 40)) == std::string::npos);
}

TEST_CASE("HttpClient speaks HTTPS: verified against a CA file, kept alive; refuses what it cannot trust") {
  saga::testing::TempDir dir("https-test");
  SelfSigned files(dir.path());
  HttpServer server(tls_options(files), ping_router());
  REQUIRE(server.start().ok());

  ClientOptions trusting;
  trusting.tls = true;
  trusting.tls_ca_file = files.cert;
  HttpClient client("127.0.0.1", server.port(), trusting);
  for (int i = 0; i < 3; ++i) {
    auto r = client.get("/ping");
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    CHECK(r->status == 200);
    CHECK(r->body == "pong");
  }
  CHECK(client.connections_opened() == 1);

  // The system's CAs do not know a self-signed certificate.
  ClientOptions system_cas;
  system_cas.tls = true;
  auto untrusted = HttpClient("127.0.0.1", server.port(), system_cas).get("/ping");
  REQUIRE_FALSE(untrusted.ok());
  CHECK(untrusted.status().code() == saga::StatusCode::kUnavailable);
  CHECK(untrusted.status().message().find("TLS handshake") != std::string::npos);
  // A certificate for 127.0.0.1 is not one for "localhost".
  auto other_host = HttpClient("localhost", server.port(), trusting).get("/ping");
  REQUIRE_FALSE(other_host.ok());
  CHECK(other_host.status().message().find("TLS handshake") != std::string::npos);
  // A CA file that cannot be read is named.
  ClientOptions missing = trusting;
  missing.tls_ca_file = (dir.path() / "nope.pem").string();
  auto no_file = HttpClient("127.0.0.1", server.port(), missing).get("/ping");
  REQUIRE_FALSE(no_file.ok());
  CHECK(no_file.status().code() == saga::StatusCode::kInvalidArgument);
  CHECK(no_file.status().message().find("nope.pem") != std::string::npos);

  // TLS to a plain HTTP server fails its handshake.
  ServerOptions plain_options;
  plain_options.host = "127.0.0.1";
  plain_options.port = 0;
  HttpServer plain(plain_options, ping_router());
  REQUIRE(plain.start().ok());
  auto mismatch = HttpClient("127.0.0.1", plain.port(), trusting).get("/ping");
  REQUIRE_FALSE(mismatch.ok());
  CHECK(mismatch.status().message().find("TLS handshake") != std::string::npos);
}
