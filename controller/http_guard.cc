#include "controller/http_guard.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "tw/log.h"

namespace tw {

namespace {

using Steady = std::chrono::steady_clock;

// Best effort: a refused client gets a reason instead of a bare reset.
void refuse(int fd, const std::string& why) {
  std::string body = "{\"error\":\"" + why + "\"}";
  std::string answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                       "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body;
  (void)::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
}

// httplib's own per-connection processing, a private virtual in 0.11.4: an
// explicit instantiation may name a private member (C++ [temp.spec]), which
// hands its pointer out through a friend. Called on inner_ (a plain
// httplib::Server), the virtual call lands in httplib's implementation.
using ProcessFn = bool (httplib::Server::*)(socket_t);
struct ProcessTag {
  using type = ProcessFn;
};
template <typename Tag, typename Tag::type Member>
struct Expose {
  friend typename Tag::type exposed(Tag) { return Member; }
};
ProcessFn exposed(ProcessTag);
template struct Expose<ProcessTag, &httplib::Server::process_and_close_socket>;

// httplib serves a connection's requests only while its server socket is
// valid (svr_sock_, private): inner_ never listens, so it is given a stand-in
// while the outer server runs, and INVALID_SOCKET to end keep-alive loops.
using SvrSockPtr = std::atomic<socket_t> httplib::Server::*;
struct SvrSockTag {
  using type = SvrSockPtr;
};
SvrSockPtr exposed(SvrSockTag);
template struct Expose<SvrSockTag, &httplib::Server::svr_sock_>;

}  // namespace

std::string peerAddressOf(int fd, int* port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "";
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "";
  }
  if (port) *port = std::atoi(serv);
  return host;
}

GuardedHttpServer::GuardedHttpServer(std::string name, ListenerLimits limits)
    : name_(std::move(name)), limits_(limits) {
  size_t threads = limits_.threads;
  new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  inner_.set_keep_alive_max_count(static_cast<size_t>(std::max(1, limits_.keep_alive_requests)));
  inner_.set_keep_alive_timeout(limits_.keep_alive_timeout_s);
  // Per read; the whole request is bounded by request_deadline_ms (watchdog).
  time_t read_s = static_cast<time_t>(std::max<Millis>(1, limits_.request_deadline_ms / 1000));
  inner_.set_read_timeout(read_s, 0);
  inner_.set_write_timeout(static_cast<time_t>(limits_.write_timeout_ms / 1000),
                           static_cast<time_t>((limits_.write_timeout_ms % 1000) * 1000));
  // The end of an answer re-arms the deadline for the next request on the
  // same connection (keep-alive).
  inner_.set_logger([this](const httplib::Request& req, const httplib::Response&) {
    rearm(req, Steady::now() + std::chrono::seconds(limits_.keep_alive_timeout_s) +
                   std::chrono::milliseconds(limits_.request_deadline_ms));
  });
  (inner_.*exposed(SvrSockTag{})) = 0;  // any valid descriptor number: "serving"
  watchdog_ = std::thread([this] { watchdog(); });
}

void GuardedHttpServer::raiseBacklog(int backlog) {
  socket_t fd = this->*exposed(SvrSockTag{});
  if (fd != INVALID_SOCKET) ::listen(fd, backlog);
}

void GuardedHttpServer::stop() {
  (inner_.*exposed(SvrSockTag{})) = INVALID_SOCKET;  // keep-alive loops end
  if (is_running()) httplib::Server::stop();
}

GuardedHttpServer::~GuardedHttpServer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (watchdog_.joinable()) watchdog_.join();
}

void GuardedHttpServer::setDivert(std::string prefix, Divert divert) {
  divert_prefix_ = std::move(prefix);
  divert_ = std::move(divert);
}

bool GuardedHttpServer::admit(const Key& key, int watch_fd, TimePoint deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  int& n = per_address_[key.first];
  if (n >= limits_.per_address) {
    ++stats_.refused_per_address;
    return false;
  }
  if (stats_.open >= limits_.total) {
    // Full: make room by closing the oldest connection that never presented
    // a credential and is still waiting for its request.
    Conn* oldest = nullptr;
    for (auto& [k, c] : conns_) {
      if (c.authenticated || c.evicted || !c.armed) continue;
      if (!oldest || c.since < oldest->since) oldest = &c;
    }
    if (!oldest) {
      ++stats_.refused_total;
      if (n == 0) per_address_.erase(key.first);
      return false;
    }
    ::shutdown(oldest->watch_fd, SHUT_RDWR);
    oldest->evicted = true;
    oldest->armed = false;
    --stats_.open;
    ++stats_.evicted;
    for (auto& [k, c] : conns_) {
      if (&c == oldest) {
        auto a = per_address_.find(k.first);
        if (a != per_address_.end()) --a->second;
        break;
      }
    }
  }
  ++per_address_[key.first];
  ++stats_.open;
  ++stats_.admitted;
  conns_[key] = Conn{watch_fd, true, deadline, Steady::now(), false, false};
  cv_.notify_all();
  return true;
}

void GuardedHttpServer::release(const Key& key, const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  bool evicted = it->second.evicted;
  ::close(it->second.watch_fd);
  conns_.erase(it);
  if (evicted) return;  // already uncounted
  auto a = per_address_.find(address);
  if (a != per_address_.end() && --a->second <= 0) per_address_.erase(a);
  --stats_.open;
}

void GuardedHttpServer::requestRead(const httplib::Request& req) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = conns_.find(Key{req.remote_addr, req.remote_port});
  if (it != conns_.end()) it->second.armed = false;
}

void GuardedHttpServer::authenticated(const httplib::Request& req) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = conns_.find(Key{req.remote_addr, req.remote_port});
  if (it != conns_.end()) it->second.authenticated = true;
}

void GuardedHttpServer::rearm(const httplib::Request& req, TimePoint deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = conns_.find(Key{req.remote_addr, req.remote_port});
  if (it == conns_.end()) return;
  it->second.armed = true;
  it->second.deadline = deadline;
  cv_.notify_all();
}

ListenerStats GuardedHttpServer::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

bool GuardedHttpServer::peekDivert(int fd, TimePoint deadline, bool& timed_out) {
  timed_out = false;
  const size_t want = divert_prefix_.size();
  char buf[128];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()).count();
    if (left <= 0) {
      timed_out = true;
      return false;
    }
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r == 0) {
      timed_out = true;
      return false;
    }
    if (r < 0) return false;  // let httplib see the error
    ssize_t n = ::recv(fd, buf, std::min(sizeof(buf), want), MSG_PEEK);
    if (n <= 0) return false;
    size_t got = static_cast<size_t>(n);
    if (std::memcmp(buf, divert_prefix_.data(), std::min(got, want)) != 0) return false;
    if (got >= want) {
      // The prefix must end the path or be followed by a query or a space.
      return true;
    }
    // A prefix of the prefix so far: wait for more (the bytes stay queued, so
    // poll() would return at once; sleep a little instead).
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool GuardedHttpServer::process_and_close_socket(socket_t sock) {
  int port = 0;
  std::string address = peerAddressOf(sock, &port);
  Key key{address, port};
  TimePoint deadline = Steady::now() + std::chrono::milliseconds(limits_.request_deadline_ms);
  int watch_fd = ::dup(sock);
  if (watch_fd < 0 || !admit(key, watch_fd, deadline)) {
    if (watch_fd >= 0) ::close(watch_fd);
    refuse(sock, "too many connections from " + address);
    return false;
  }
  if (divert_) {
    bool timed_out = false;
    if (peekDivert(sock, deadline, timed_out)) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.diverted;
        conns_[key].armed = false;  // the divert bounds its own reads
      }
      release(key, address);
      divert_(sock, address, deadline);
      return true;
    }
    if (timed_out) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.deadline_kills;
      }
      release(key, address);
      ::shutdown(sock, SHUT_RDWR);
      ::close(sock);
      return false;
    }
  }
  bool ok = (inner_.*exposed(ProcessTag{}))(sock);
  release(key, address);
  return ok;
}

void GuardedHttpServer::watchdog() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    auto now = Steady::now();
    auto next = now + std::chrono::seconds(1);
    for (auto& [key, c] : conns_) {
      if (!c.armed) continue;
      if (c.deadline <= now) {
        // shutdown() on the dup ends the socket itself: the pool thread's
        // blocked read returns and httplib closes the connection.
        ::shutdown(c.watch_fd, SHUT_RDWR);
        c.armed = false;
        ++stats_.deadline_kills;
        log::debug("{} listener: request from {}:{} not read within {} ms: connection closed", name_,
                   key.first, key.second, limits_.request_deadline_ms);
      } else if (c.deadline < next) {
        next = c.deadline;
      }
    }
    cv_.wait_until(lock, next);
  }
}

}  // namespace tw
