// Socket probes. Deadlines of the I/O use std::chrono::steady_clock: they
// bound system calls, they are not logic time (which goes through tw::Clock).
#include "agent/net_probe.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <optional>
#include <string_view>

#include "tw/log.h"

namespace tw {

namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string errnoText(int err) { return std::strerror(err); }

// Milliseconds left until `deadline` (0 when past), for poll().
int remainingMs(SteadyTime deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - std::chrono::steady_clock::now())
                  .count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 24 * 3600 * 1000));
}

// Waits for `events` on fd until the deadline. 1 = ready, 0 = timed out, -1 = error (errno).
int waitFor(int fd, short events, SteadyTime deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, remainingMs(deadline));
    if (n < 0 && errno == EINTR) continue;
    return n;
  }
}

std::string endpoint(const std::string& host, int port) {
  return host + ":" + std::to_string(port);
}

// A connected non-blocking socket. Errors: kUnavailable, kInvalidArgument for a bad address.
Result<std::unique_ptr<UniqueFd>> connectTo(const std::string& host, int port, SteadyTime deadline,
                                            Millis timeout_ms) {
  const std::string context = "connecting to " + endpoint(host, port);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (port <= 0 || port > 65535 || ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return invalidArgument(context + ": not an IPv4 address and port");
  }
  auto fd =
      std::make_unique<UniqueFd>(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd->get() < 0) return unavailable(context + ": socket: " + errnoText(errno));
  if (::connect(fd->get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
    return fd;
  }
  if (errno != EINPROGRESS) return unavailable(context + ": " + errnoText(errno));
  int ready = waitFor(fd->get(), POLLOUT, deadline);
  if (ready < 0) return unavailable(context + ": poll: " + errnoText(errno));
  if (ready == 0)
    return unavailable(context + ": timed out after " + std::to_string(timeout_ms) + " ms");
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(fd->get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  if (err != 0) return unavailable(context + ": " + errnoText(err));
  return fd;
}

// Sends all of `data` before the deadline.
Status sendAll(int fd, std::string_view data, SteadyTime deadline, const std::string& context) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int ready = waitFor(fd, POLLOUT, deadline);
      if (ready == 0) return unavailable(context + ": timed out sending the request");
      if (ready < 0) return unavailable(context + ": poll: " + errnoText(errno));
      continue;
    }
    return unavailable(context + ": sending the request: " + errnoText(errno));
  }
  return Status::ok();
}

// Bytes from the network for a message: printable ASCII as is, the rest
// escaped (\r, \n, \x00), cut after about 60 characters.
std::string printable(std::string_view data) {
  constexpr size_t kMaxChars = 60;
  std::string out;
  for (const char ch : data) {
    if (out.size() >= kMaxChars) return out + "...";
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c >= 0x20 && c < 0x7f) {
      out += ch;
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// What we know of an answer's head once its blank line came.
struct Head {
  size_t end = 0;  // offset of the body
  int status = 0;
  std::optional<size_t> content_length;
};

// Parses the status line and headers of `data` when they are complete:
// nullopt = not yet; kInvalidArgument = not HTTP.
Result<std::optional<Head>> parseHead(const std::string& data, const std::string& context) {
  size_t blank = data.find("\r\n\r\n");
  size_t sep = 4;
  const size_t bare = data.find("\n\n");
  if (bare != std::string::npos && (blank == std::string::npos || bare < blank)) {
    blank = bare;
    sep = 2;
  }
  if (blank == std::string::npos) return std::optional<Head>();
  Head head;
  head.end = blank + sep;
  const std::string_view text(data.data(), blank);
  const size_t line_end = std::min(text.find('\n'), text.size());
  std::string_view status_line = text.substr(0, line_end);
  if (!status_line.empty() && status_line.back() == '\r') status_line.remove_suffix(1);
  // "HTTP/1.1 200 OK"
  const size_t space = status_line.find(' ');
  if (status_line.rfind("HTTP/", 0) != 0 || space == std::string_view::npos ||
      status_line.size() < space + 4) {
    return invalidArgument(context + ": not an HTTP answer: '" + std::string(status_line) + "'");
  }
  const std::string_view code = status_line.substr(space + 1, 3);
  auto [end, ec] = std::from_chars(code.data(), code.data() + code.size(), head.status);
  if (ec != std::errc() || end != code.data() + code.size()) {
    return invalidArgument(context + ": bad status line: '" + std::string(status_line) + "'");
  }
  size_t at = line_end;
  while (at < text.size()) {
    size_t next = std::min(text.find('\n', at + 1), text.size());
    std::string_view line = text.substr(at + 1, next - at - 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos && lower(line.substr(0, colon)) == "content-length") {
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
        value.remove_prefix(1);
      }
      size_t length = 0;
      auto [vend, vec] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (vec == std::errc() && vend != value.data()) head.content_length = length;
    }
    at = next;
  }
  return std::optional<Head>(head);
}

}  // namespace

Status probeTcp(const std::string& host, int port, Millis timeout_ms) {
  const SteadyTime start = std::chrono::steady_clock::now();
  const SteadyTime deadline = start + std::chrono::milliseconds(timeout_ms);
  auto fd = connectTo(host, port, deadline, timeout_ms);
  if (!fd.isOk()) return fd.status();
  // Connected. Closed at once by the far side = nothing behind a port forward.
  const SteadyTime settle = std::min(
      deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(kClosedAtOnceMs));
  int ready = waitFor((*fd)->get(), POLLIN, settle);
  if (ready <= 0) return Status::ok();  // quiet and open: something listens
  char byte = 0;
  ssize_t n = ::recv((*fd)->get(), &byte, 1, MSG_PEEK);
  if (n > 0) return Status::ok();  // it speaks first (a greeting)
  const std::string context = "connecting to " + endpoint(host, port);
  if (n == 0) return unavailable(context + ": the connection was closed at once");
  if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::ok();
  return unavailable(context + ": " + errnoText(errno));
}

Status probeTcpGreeting(const std::string& host, int port, const std::string& expect,
                        Millis timeout_ms) {
  const SteadyTime deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto fd = connectTo(host, port, deadline, timeout_ms);
  if (!fd.isOk()) return fd.status();
  const int sock = (*fd)->get();
  const std::string ep = endpoint(host, port);
  const std::string wanted = "\"" + printable(expect) + "\"";
  std::string data;  // what the server sent, at most kMaxGreeting bytes
  // For the messages below: without "X", and an excerpt of what came.
  auto without = [&] {
    return " without " + wanted + (data.empty() ? "" : ": \"" + printable(data) + "\"");
  };
  char buf[1024];
  while (data.size() < kMaxGreeting) {
    ssize_t n = ::recv(sock, buf, std::min(sizeof(buf), kMaxGreeting - data.size()), 0);
    if (n > 0) {
      // The text may straddle two reads: look again from where it could start.
      const size_t from = data.size() >= expect.size() ? data.size() - expect.size() + 1 : 0;
      data.append(buf, static_cast<size_t>(n));
      if (data.find(expect, from) != std::string::npos) return Status::ok();
      continue;
    }
    if (n == 0) {
      return unavailable(ep + " closed after " + std::to_string(data.size()) + " bytes" +
                         without());
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int ready = waitFor(sock, POLLIN, deadline);
      if (ready < 0) return unavailable(ep + ": poll: " + errnoText(errno));
      if (ready > 0) continue;
      // A port forward whose guest does not answer yet: accepted, then silence.
      if (data.empty()) {
        return unavailable(
            fmt::format("{} sent 0 bytes in {} ms, expected {}", ep, timeout_ms, wanted));
      }
      return unavailable(
          fmt::format("{} sent {} bytes in {} ms{}", ep, data.size(), timeout_ms, without()));
    }
    return unavailable(ep + ": reading the greeting after " + std::to_string(data.size()) +
                       " bytes: " + errnoText(errno));
  }
  return unavailable(ep + " sent " + std::to_string(data.size()) +
                     " bytes (as many as a probe reads)" + without());
}

Result<HttpAnswer> httpGet(const std::string& host, int port, const std::string& path,
                           Millis timeout_ms) {
  const SteadyTime deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const std::string target = path.empty() ? "/" : path;
  const std::string context = "GET http://" + endpoint(host, port) + target;
  if (target.find_first_of("\r\n ") != std::string::npos || target[0] != '/') {
    return invalidArgument(context + ": bad path");
  }
  auto fd = connectTo(host, port, deadline, timeout_ms);
  if (!fd.isOk()) return fd.status().withContext(context);
  const int sock = (*fd)->get();
  const std::string request = "GET " + target + " HTTP/1.0\r\nHost: " + endpoint(host, port) +
                              "\r\nUser-Agent: tierwarden-agent\r\nConnection: close\r\n\r\n";
  TW_RETURN_IF_ERROR(sendAll(sock, request, deadline, context));

  std::string data;          // head and the first kMaxHttpBody bytes of body
  size_t received = 0;       // every byte received
  std::optional<Head> head;  // once complete
  char buf[4096];
  for (;;) {
    if (head && head->content_length && received >= head->end + *head->content_length) break;
    ssize_t n = ::recv(sock, buf, sizeof(buf), 0);
    if (n > 0) {
      received += static_cast<size_t>(n);
      const size_t limit = (head ? head->end : data.size() + sizeof(buf)) + kMaxHttpBody;
      if (data.size() < limit) {
        data.append(buf, std::min(static_cast<size_t>(n), limit - data.size()));
      }
      if (!head) {
        auto parsed = parseHead(data, context);
        if (!parsed.isOk()) return parsed.status();
        head = *parsed;
        if (!head && data.size() > kMaxHttpBody) {
          return invalidArgument(context + ": no end of the headers in " +
                                 std::to_string(data.size()) + " bytes");
        }
      }
      continue;
    }
    if (n == 0) break;  // the server closed: the end of the answer
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int ready = waitFor(sock, POLLIN, deadline);
      if (ready == 0) {
        return unavailable(context + ": " + (head ? "the answer did not end" : "no answer") +
                           " within " + std::to_string(timeout_ms) + " ms");
      }
      if (ready < 0) return unavailable(context + ": poll: " + errnoText(errno));
      continue;
    }
    if (head && !head->content_length && errno == ECONNRESET)
      break;  // some servers reset at the end
    return unavailable(context + ": reading the answer: " + errnoText(errno));
  }
  if (!head) {
    return unavailable(context + ": the connection was closed before a complete answer (" +
                       std::to_string(received) + " bytes)");
  }
  if (head->content_length && received < head->end + *head->content_length) {
    return unavailable(context + ": the connection was closed after " +
                       std::to_string(received - head->end) + " of " +
                       std::to_string(*head->content_length) + " body bytes");
  }
  HttpAnswer answer;
  answer.status = head->status;
  answer.body = data.substr(head->end);
  if (head->content_length && answer.body.size() > *head->content_length) {
    answer.body.resize(*head->content_length);
  }
  return answer;
}

Status probeService(const std::string& host, int port, const HealthCheckSpec& check) {
  switch (check.kind) {
    case HealthKind::kTcp:
      if (!check.expect.empty())
        return probeTcpGreeting(host, port, check.expect, check.timeout_ms);
      return probeTcp(host, port, check.timeout_ms);
    case HealthKind::kHttp: {
      Result<HttpAnswer> answer = httpGet(host, port, check.path, check.timeout_ms);
      if (!answer.isOk()) return answer.status();
      if (answer->status != check.expect_status) {
        return unavailable(fmt::format("GET http://{}{} answered {}, expected {}",
                                       endpoint(host, port), check.path, answer->status,
                                       check.expect_status));
      }
      return Status::ok();
    }
    case HealthKind::kNone:
      break;
  }
  return Status::ok();
}

}  // namespace tw
