// Test support: a plain blocking TCP connection to 127.0.0.1, for what
// HttpClient will not send (pipelined requests, Expect: 100-continue,
// half-sent requests, bodies trickled byte by byte). Header-only, tests only.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <regex>
#include <string>
#include <string_view>

namespace saga::testing {

/// A blocking socket with 10 s send and receive timeouts.
class RawConnection {
 public:
  explicit RawConnection(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawConnection() { ::close(fd_); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool connected() const { return connected_; }

  bool send_all(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // One whole response (head and Content-Length body); "" on EOF, timeout or error.
  std::string read_response() {
    while (true) {
      size_t head_end = buf_.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        size_t length = 0;
        std::smatch m;
        std::string head = buf_.substr(0, head_end);
        if (std::regex_search(head, m,
                              std::regex("\r\ncontent-length: *([0-9]+)", std::regex::icase))) {
          length = std::stoul(m[1]);
        }
        size_t total = head_end + 4 + length;
        if (buf_.size() >= total) {
          std::string out = buf_.substr(0, total);
          buf_.erase(0, total);
          return out;
        }
      }
      if (!receive()) return {};
    }
  }

  // True once the server has closed the connection (EOF or reset) within the
  // receive timeout; any data still arriving is discarded.
  bool closed_by_peer() {
    while (true) {
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
  }

 private:
  bool receive() {
    char chunk[4096];
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

}  // namespace saga::testing
