// A bare HTTP/1.1 client on loopback sockets, for tests of the listener
// itself (http_guard.h): a connection is a descriptor the test holds, so it
// can keep it alive, half-send a request or close it at a chosen moment.
// Every wait is bounded (a hang becomes a failure) and none is a timing.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace tw {

// A connection to 127.0.0.1:port; -1 when refused.
inline int connectTo(int port) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

// Sends a kept-alive GET without waiting for its answer; false when it could not.
inline bool sendGet(int s, const std::string& path) {
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  return ::send(s, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
}

// Sends a kept-alive GET and reads its answer (Content-Length body); "" on error.
inline std::string get(int s, const std::string& path, int timeout_ms = 3000) {
  if (!sendGet(s, path)) return "";
  std::string in;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    size_t end = in.find("\r\n\r\n");
    if (end != std::string::npos) {
      size_t cl = in.find("Content-Length: ");
      size_t want = cl == std::string::npos ? 0 : std::stoul(in.substr(cl + 16));
      if (in.size() >= end + 4 + want) return in;
    }
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    pollfd p{s, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, left) != 1) return "";
    ssize_t n = ::recv(s, buf, sizeof(buf), 0);
    if (n <= 0) return "";
    in.append(buf, static_cast<size_t>(n));
  }
}

// True when the listener closed `s` (within timeout_ms) with nothing more to read.
inline bool closedByPeer(int s, int timeout_ms) {
  pollfd p{s, POLLIN, 0};
  char c;
  return ::poll(&p, 1, timeout_ms) == 1 && ::recv(s, &c, 1, MSG_DONTWAIT) <= 0;
}

}  // namespace tw
