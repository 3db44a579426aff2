#include "controller/http_guard.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

// httplib's processing of one request on a Stream (protected): the TLS path
// feeds it the decrypted stream.
using ProcessRequestFn = bool (httplib::Server::*)(httplib::Stream&, bool, bool&,
                                                   const std::function<void(httplib::Request&)>&);
struct ProcessRequestTag {
  using type = ProcessRequestFn;
};
ProcessRequestFn exposed(ProcessRequestTag);
template struct Expose<ProcessRequestTag, &httplib::Server::process_request>;

bool pollFor(int fd, short events, Millis ms) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, static_cast<int>(std::max<Millis>(ms, 0))) > 0 && (p.revents & events) != 0;
}

// A TLS connection as httplib reads and writes it, with httplib's
// per-read and per-write timeouts.
class TlsStream final : public httplib::Stream {
 public:
  TlsStream(Transport& io, Millis read_ms, Millis write_ms) : io_(io), read_ms_(read_ms), write_ms_(write_ms) {}
  bool is_readable() const override { return io_.pending() || pollFor(io_.fd(), POLLIN, read_ms_); }
  bool is_writable() const override { return pollFor(io_.fd(), POLLOUT, write_ms_); }
  ssize_t read(char* ptr, size_t size) override {
    if (!is_readable()) return -1;
    return io_.read(ptr, size);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    return io_.write(ptr, size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = peerAddressOf(io_.fd(), &port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    ip.clear();
    port = 0;
    if (::getsockname(io_.fd(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) return;
    char host[NI_MAXHOST];
    char serv[NI_MAXSERV];
    if (::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof(host), serv, sizeof(serv),
                      NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }
  socket_t socket() const override { return io_.fd(); }

 private:
  Transport& io_;
  Millis read_ms_;
  Millis write_ms_;
};

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

bool GuardedHttpServer::peekDivert(int fd, Transport* io, TimePoint deadline, bool& timed_out) {
  timed_out = false;
  const size_t want = divert_prefix_.size();
  char buf[128];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()).count();
    if (left <= 0) {
      timed_out = true;
      return false;
    }
    if (io == nullptr || !io->pending()) {
      pollfd p{fd, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(left));
      if (r == 0) {
        timed_out = true;
        return false;
      }
      if (r < 0) return false;  // let httplib see the error
    }
    // TLS: a blocking read of one record, ended by the watchdog at the deadline.
    ssize_t n = io != nullptr ? io->peek(buf, std::min(sizeof(buf), want))
                              : ::recv(fd, buf, std::min(sizeof(buf), want), MSG_PEEK);
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
  // Answers are written in pieces (head, body): no Nagle wait between them.
  int one = 1;
  ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  Key key{address, port};
  TimePoint deadline = Steady::now() + std::chrono::milliseconds(limits_.request_deadline_ms);
  int watch_fd = ::dup(sock);
  if (watch_fd < 0 || !admit(key, watch_fd, deadline)) {
    if (watch_fd >= 0) ::close(watch_fd);
    if (tls_) {
      // No plain-HTTP answer into a TLS handshake: the client would read it
      // as a protocol error. Closed: it retries.
      ::shutdown(sock, SHUT_RDWR);
      ::close(sock);
    } else {
      refuse(sock, "too many connections from " + address);
    }
    return false;
  }
  if (tls_) return serveTls(sock, key, address, deadline);
  if (divert_) {
    bool timed_out = false;
    if (peekDivert(sock, nullptr, deadline, timed_out)) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.diverted;
        conns_[key].armed = false;  // the divert bounds its own reads
      }
      release(key, address);
      divert_(std::make_unique<Transport>(sock), address, deadline);
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

bool GuardedHttpServer::serveTls(int sock, const Key& key, const std::string& address, TimePoint deadline) {
  auto io = std::make_unique<Transport>(sock);  // closes the socket when done
  // Every blocking read and write of the handshake and of the requests is
  // bounded per call; the watchdog bounds the handshake and request as a whole.
  auto timeval_of = [](Millis ms) {
    return timeval{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  };
  timeval rcv = timeval_of(limits_.request_deadline_ms);
  timeval snd = timeval_of(limits_.write_timeout_ms);
  ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv));
  ::setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd));
  Status shaken = io->handshake(*tls_);
  if (!shaken.isOk()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.tls_failures;
    }
    log::debug("{} listener: {} from {}:{}", name_, shaken.message(), key.first, key.second);
    release(key, address);
    return false;
  }
  if (tls_->verifiesClients()) {
    // The client proved a key that the cluster's CA certified: it is no
    // anonymous holder of a connection, and a flood of those must not evict
    // it before its first request (bench/tls_heartbeat --silent).
    std::lock_guard<std::mutex> lock(mu_);
    auto it = conns_.find(key);
    if (it != conns_.end()) it->second.authenticated = true;
    ++stats_.certified;
  }
  if (divert_) {
    bool timed_out = false;
    if (peekDivert(sock, io.get(), deadline, timed_out)) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.diverted;
        conns_[key].armed = false;
      }
      release(key, address);
      divert_(std::move(io), address, deadline);
      return true;
    }
    if (timed_out) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.deadline_kills;
      }
      release(key, address);
      return false;
    }
  }
  // httplib's keep-alive loop (process_server_socket_core), on the TLS stream.
  TlsStream stream(*io, limits_.request_deadline_ms, limits_.write_timeout_ms);
  const SSL* ssl = io->ssl();
  const auto& serving = inner_.*exposed(SvrSockTag{});
  bool ok = false;
  int left = std::max(1, limits_.keep_alive_requests);
  while (serving != INVALID_SOCKET && left > 0 &&
         (io->pending() || pollFor(sock, POLLIN, Millis{limits_.keep_alive_timeout_s} * 1000))) {
    bool closed = false;
    ok = (inner_.*exposed(ProcessRequestTag{}))(stream, left == 1, closed,
                                                 [ssl](httplib::Request& req) { req.ssl = ssl; });
    if (!ok || closed) break;
    --left;
  }
  if (ok) io->closeGracefully();
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
