#include "controller/http_guard.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "tw/listen_socket.h"
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

// httplib's private members are reached through explicit instantiations,
// which may name private members (C++ [temp.spec]) and hand their pointers
// out through a friend.
template <typename Tag, typename Tag::type Member>
struct Expose {
  friend typename Tag::type exposed(Tag) { return Member; }
};

// httplib serves a connection's requests only while its server socket is
// valid (svr_sock_, private): inner_ never listens, so it is given a stand-in
// while the outer server runs, and INVALID_SOCKET to end keep-alive loops.
using SvrSockPtr = std::atomic<socket_t> httplib::Server::*;
struct SvrSockTag {
  using type = SvrSockPtr;
};
SvrSockPtr exposed(SvrSockTag);
template struct Expose<SvrSockTag, &httplib::Server::svr_sock_>;

// httplib's processing of one request on a Stream (protected): the guard's
// request loop feeds it each connection's stream (TLS decrypted, or plain).
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

// A connection (TLS or plain, tls.h's Transport) as httplib reads and
// writes it, with httplib's per-read and per-write timeouts. Reads are
// buffered (httplib reads a request's head a byte at a time). Writes are
// buffered too, and go out at flush(): httplib writes an answer's head and
// its body in two calls, and on a kept-alive connection each call was a TCP
// segment of its own (at 1,000 hosts a heartbeat's answer paid two sends,
// two polls and the receiver's wake-ups twice; issue #16). What is buffered
// goes out before any read that has to wait (an interim "100 Continue"
// reaches the client before its body is read), when the buffer passes
// kFlushBytes, and when the request is done (GuardedHttpServer::serve).
// While swallowing, writes are dropped: the answer of a deferred request.
class TransportStream final : public httplib::Stream {
 public:
  TransportStream(Transport& io, Millis read_ms, Millis write_ms) : io_(io), read_ms_(read_ms), write_ms_(write_ms) {}
  // Bytes of the next request are already here (buffered or decrypted).
  bool ready() const { return pos_ < len_ || io_.pending(); }
  void swallow(bool on) { swallow_ = on; }
  bool is_readable() const override { return ready() || pollFor(io_.fd(), POLLIN, read_ms_); }
  bool is_writable() const override { return pollFor(io_.fd(), POLLOUT, write_ms_); }
  ssize_t read(char* ptr, size_t size) override {
    if (pos_ == len_) {
      if (!out_.empty() && !flush()) return -1;
      if (!is_readable()) return -1;
      if (size >= sizeof(buf_)) return io_.read(ptr, size);
      ssize_t n = io_.read(buf_, sizeof(buf_));
      if (n <= 0) return n;
      pos_ = 0;
      len_ = static_cast<size_t>(n);
    }
    size_t n = std::min(size, len_ - pos_);
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (swallow_) return static_cast<ssize_t>(size);
    out_.append(ptr, size);
    if (out_.size() >= kFlushBytes && !flush()) return -1;
    return static_cast<ssize_t>(size);
  }
  // Writes what is buffered; false when the connection cannot take it
  // within the write timeout (what is left is dropped: it closes).
  bool flush() {
    size_t off = 0;
    while (off < out_.size()) {
      if (!is_writable()) break;
      ssize_t n = io_.write(out_.data() + off, out_.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    const bool all = off == out_.size();
    out_.clear();
    // A kept-alive connection holds no answer-sized buffer between requests
    // (thousands of parked connections at 1,000 hosts).
    if (out_.capacity() > kKeptBytes) std::string().swap(out_);
    return all;
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
  static constexpr size_t kFlushBytes = 64 * 1024;
  static constexpr size_t kKeptBytes = 1024;
  char buf_[4096];
  size_t pos_ = 0;
  size_t len_ = 0;
  std::string out_;
  bool swallow_ = false;
};

const char* reasonOf(int status) {
  switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Answer";
  }
}

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

// One admitted connection, owned by the thread serving it, by parked_ or
// by deferred_.
struct GuardedHttpServer::Session {
  uint64_t id = 0;
  Key key;
  std::string address;
  std::unique_ptr<Transport> io;
  std::unique_ptr<TransportStream> stream;
  int left = 1;              // requests it may still make
  uint64_t deferred = 0;     // the ticket of its request being answered later
  bool close_after = false;  // ... which was its last
};

namespace {

int parkedLimitOf(const ListenerLimits& limits) {
  if (limits.parked_max > 0) return limits.parked_max;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return 65536;
  return static_cast<int>(std::max<rlim_t>(256, std::min<rlim_t>(lim.rlim_cur, 1 << 20) - kReservedFiles));
}

}  // namespace

GuardedHttpServer::GuardedHttpServer(std::string name, ListenerLimits limits)
    : name_(std::move(name)),
      limits_(limits),
      parker_([this](uint64_t id, bool readable) { woken(id, readable); }) {
  size_t threads = limits_.threads;
  new_task_queue = [this, threads] {
    auto* pool = new httplib::ThreadPool(threads);
    std::lock_guard<std::mutex> lock(mu_);
    pool_ = pool;
    return pool;
  };
  inner_.set_keep_alive_max_count(static_cast<size_t>(std::max(1, limits_.keep_alive_requests)));
  inner_.set_keep_alive_timeout(limits_.keep_alive_timeout_s);
  // Per read; the whole request is bounded by request_deadline_ms (watchdog).
  time_t read_s = static_cast<time_t>(std::max<Millis>(1, limits_.request_deadline_ms / 1000));
  inner_.set_read_timeout(read_s, 0);
  inner_.set_write_timeout(static_cast<time_t>(limits_.write_timeout_ms / 1000),
                           static_cast<time_t>((limits_.write_timeout_ms % 1000) * 1000));
  (inner_.*exposed(SvrSockTag{})) = 0;  // any valid descriptor number: "serving"
  set_socket_options(exclusiveListenOptions);  // one process per port (tw/listen_socket.h)
  // Computed now: main() raises the open-files limit before it builds the listeners.
  parked_limit_ = parkedLimitOf(limits_);
  watchdog_ = std::thread([this] { watchdog(); });
}

void GuardedHttpServer::raiseBacklog(int backlog) {
  socket_t fd = this->*exposed(SvrSockTag{});
  if (fd != INVALID_SOCKET) ::listen(fd, backlog);
}

void GuardedHttpServer::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  parker_.stop();  // no wake after this
  std::vector<std::unique_ptr<Session>> ended;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, sess] : parked_) ended.push_back(std::move(sess));
    for (auto& [ticket, sess] : deferred_) ended.push_back(std::move(sess));
    parked_.clear();
    deferred_.clear();
  }
  for (auto& sess : ended) close(std::move(sess), false);
  (inner_.*exposed(SvrSockTag{})) = INVALID_SOCKET;  // keep-alive loops end
  // httplib's own stop() does nothing until listen_after_bind() runs, and a
  // listen that began after it accepted forever (a server stopped at once:
  // ApiServer::serve() on its thread had not reached it yet, and the
  // caller's join hung). So the listening socket is taken and closed here
  // either way, as httplib's stop() does: a listen that runs ends, one that
  // begins later returns at once.
  socket_t sock = (this->*exposed(SvrSockTag{})).exchange(INVALID_SOCKET);
  if (sock != INVALID_SOCKET) {
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
  }
}

GuardedHttpServer::~GuardedHttpServer() {
  stop();
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
  wakeWatchdogBy(deadline);
  return true;
}

void GuardedHttpServer::release(const Key& key, const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  bool evicted = it->second.evicted;
  bool parked = it->second.parked;
  ::close(it->second.watch_fd);
  conns_.erase(it);
  if (evicted) return;  // already uncounted
  auto a = per_address_.find(address);
  if (a != per_address_.end() && --a->second <= 0) per_address_.erase(a);
  if (parked) {
    --stats_.parked;
  } else {
    --stats_.open;
  }
}

void GuardedHttpServer::setParked(Conn& c, bool parked) {
  if (c.parked == parked) return;
  c.parked = parked;
  if (c.evicted) return;
  stats_.open += parked ? -1 : 1;
  stats_.parked += parked ? 1 : -1;
}

bool GuardedHttpServer::enqueue(std::function<void()> task) {
  if (closing_ || pool_ == nullptr) return false;
  pool_->enqueue(std::move(task));
  return true;
}

void GuardedHttpServer::close(std::unique_ptr<Session> s, bool graceful) {
  if (!s) return;
  if (graceful && s->io) s->io->closeGracefully();
  Key key = s->key;
  std::string address = s->address;
  s.reset();  // closes the socket
  release(key, address);
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
  auto s = std::make_unique<Session>();
  s->key = key;
  s->address = address;
  s->io = std::make_unique<Transport>(sock);  // closes the socket when done
  s->left = std::max(1, limits_.keep_alive_requests);
  {
    std::lock_guard<std::mutex> lock(mu_);
    s->id = ++next_id_;
  }
  if (tls_ && !shakeHands(*s)) {
    close(std::move(s), false);
    return false;
  }
  if (divert_) {
    bool timed_out = false;
    if (peekDivert(sock, tls_ ? s->io.get() : nullptr, deadline, timed_out)) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.diverted;
        conns_[key].armed = false;  // the divert bounds its own reads
      }
      release(key, address);
      divert_(std::move(s->io), address, deadline);
      return true;
    }
    if (timed_out) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.deadline_kills;
      }
      close(std::move(s), false);
      return false;
    }
  }
  s->stream = std::make_unique<TransportStream>(*s->io, limits_.request_deadline_ms, limits_.write_timeout_ms);
  serve(std::move(s), true);
  return true;
}

bool GuardedHttpServer::shakeHands(Session& s) {
  const int sock = s.io->fd();
  // Every blocking read and write of the handshake is bounded per call; the
  // watchdog bounds the handshake and request as a whole.
  auto timeval_of = [](Millis ms) {
    return timeval{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  };
  timeval rcv = timeval_of(limits_.request_deadline_ms);
  timeval snd = timeval_of(limits_.write_timeout_ms);
  ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv));
  ::setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd));
  Status shaken = s.io->handshake(*tls_);
  if (!shaken.isOk()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.tls_failures;
    }
    log::debug("{} listener: {} from {}:{}", name_, shaken.message(), s.key.first, s.key.second);
    return false;
  }
  if (tls_->verifiesClients()) {
    // The client proved a key that the cluster's CA certified: it is no
    // anonymous holder of a connection, and a flood of those must not evict
    // it before its first request (bench/tls_heartbeat --silent).
    std::lock_guard<std::mutex> lock(mu_);
    auto it = conns_.find(s.key);
    if (it != conns_.end()) it->second.authenticated = true;
    ++stats_.certified;
  }
  return true;
}

void GuardedHttpServer::serve(std::unique_ptr<Session> s, bool fresh) {
  const auto& serving = inner_.*exposed(SvrSockTag{});
  const int fd = s->io->fd();
  bool ok = true;
  while (serving != INVALID_SOCKET && s->left > 0) {
    if (!fresh && !s->stream->ready() && !pollFor(fd, POLLIN, 0)) {
      // Between two requests: the connection waits without a thread.
      if (park(s)) return;  // parked, or closed for lack of room
      // The parker refused it (stopping): wait here, as httplib would.
      if (!pollFor(fd, POLLIN, Millis{limits_.keep_alive_timeout_s} * 1000)) break;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = conns_.find(s->key);
      if (it != conns_.end()) {
        if (!fresh) {
          // The next request began: read it whole within the deadline.
          it->second.armed = true;
          it->second.deadline = Steady::now() + std::chrono::milliseconds(limits_.request_deadline_ms);
          wakeWatchdogBy(it->second.deadline);
        }
        it->second.session = s.get();
      }
    }
    fresh = false;
    bool closed = false;
    const SSL* ssl = s->io->ssl();
    ok = (inner_.*exposed(ProcessRequestTag{}))(*s->stream, s->left == 1, closed,
                                                [ssl](httplib::Request& req) { req.ssl = ssl; });
    if (!s->stream->flush()) ok = false;  // the answer, in one write
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = conns_.find(s->key);
      if (it != conns_.end()) {
        it->second.session = nullptr;
        it->second.armed = false;
      }
    }
    if (s->deferred != 0) {
      s->stream->swallow(false);
      s->close_after = !ok || closed || s->left == 1;
      if (holdDeferred(s)) return;
      continue;  // its answer was written already
    }
    if (!ok || closed) break;
    --s->left;
  }
  const bool graceful = ok && s->io && s->io->tls();
  close(std::move(s), graceful);
}

bool GuardedHttpServer::park(std::unique_ptr<Session>& s) {
  std::unique_ptr<Session> evicted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = conns_.find(s->key);
    if (closing_ || it == conns_.end()) return false;
    if (stats_.parked >= parked_limit_) {
      // Full: the oldest parked connection that never showed a credential
      // makes room; without one, this connection is closed (it reconnects).
      uint64_t oldest = 0;
      TimePoint since = TimePoint::max();
      for (auto& [id, p] : parked_) {
        auto c = conns_.find(p->key);
        if (c == conns_.end() || c->second.authenticated || c->second.since >= since) continue;
        oldest = id;
        since = c->second.since;
      }
      if (oldest == 0 || !parker_.unpark(oldest)) {
        ++stats_.refused_parked;
        evicted = std::move(s);
      } else {
        evicted = std::move(parked_[oldest]);
        parked_.erase(oldest);
        ++stats_.evicted;
      }
    }
    if (s) {
      const int fd = s->io->fd();
      const uint64_t id = s->id;
      if (!parker_.park(id, fd, Steady::now() + std::chrono::seconds(limits_.keep_alive_timeout_s)).isOk()) {
        return false;
      }
      setParked(it->second, true);
      ++stats_.parks;
      parked_[id] = std::move(s);
    }
  }
  close(std::move(evicted), false);
  return s == nullptr;
}

void GuardedHttpServer::woken(uint64_t id, bool readable) {
  std::unique_ptr<Session> s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = parked_.find(id);
    if (it == parked_.end()) return;
    s = std::move(it->second);
    parked_.erase(it);
    auto c = conns_.find(s->key);
    if (readable && c != conns_.end()) {
      setParked(c->second, false);
      Session* raw = s.get();
      if (enqueue([this, raw] { serve(std::unique_ptr<Session>(raw), false); })) {
        s.release();
        return;
      }
    } else if (!readable) {
      ++stats_.idle_closed;
    }
  }
  close(std::move(s), false);
}

uint64_t GuardedHttpServer::defer(const httplib::Request& req) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = conns_.find(Key{req.remote_addr, req.remote_port});
  if (closing_ || it == conns_.end() || it->second.session == nullptr) return 0;
  if (stats_.parked >= parked_limit_) return 0;
  Session& s = *it->second.session;
  s.deferred = ++next_id_;
  s.stream->swallow(true);
  deferring_.insert(s.deferred);
  ++stats_.deferred;
  return s.deferred;
}

bool GuardedHttpServer::holdDeferred(std::unique_ptr<Session>& s) {
  std::pair<int, std::string> answer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    deferring_.erase(s->deferred);
    auto early = early_.find(s->deferred);
    if (early == early_.end()) {
      auto c = conns_.find(s->key);
      if (closing_ || c == conns_.end()) {
        // Stopping: closed unanswered (the client asks again elsewhere).
        s->close_after = true;
        s->left = 0;
        s->deferred = 0;
        return false;
      }
      setParked(c->second, true);
      const uint64_t ticket = s->deferred;
      deferred_[ticket] = std::move(s);
      return true;
    }
    answer = std::move(early->second);
    early_.erase(early);
  }
  // Answered while its handler was returning: written on this thread.
  const int status = answer.first;
  std::string body = std::move(answer.second);
  s->deferred = 0;
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reasonOf(status) +
                     "\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\nConnection: " + (s->close_after ? "close" : "Keep-Alive") +
                     "\r\n\r\n";
  // Buffered by the stream (whole, or -1), then sent in one write.
  if (s->stream->write(head.data(), head.size()) < 0 || s->stream->write(body.data(), body.size()) < 0 ||
      !s->stream->flush()) {
    s->close_after = true;
  }
  if (s->close_after) s->left = 0;
  else --s->left;
  return false;
}

void GuardedHttpServer::answerDeferred(uint64_t ticket, int status, std::string body) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = deferred_.find(ticket);
  if (it == deferred_.end()) {
    if (deferring_.count(ticket) != 0) early_[ticket] = {status, std::move(body)};
    return;  // else: its connection is gone
  }
  std::unique_ptr<Session> s = std::move(it->second);
  deferred_.erase(it);
  auto c = conns_.find(s->key);
  if (c != conns_.end()) setParked(c->second, false);
  Session* raw = s.get();
  auto text = std::make_shared<std::string>(std::move(body));
  if (enqueue([this, raw, status, text] { finishDeferred(std::unique_ptr<Session>(raw), status, *text); })) {
    s.release();
  } else if (c != conns_.end()) {
    setParked(c->second, true);  // closed by stop() with the others
    deferred_[ticket] = std::move(s);
  }
}

void GuardedHttpServer::finishDeferred(std::unique_ptr<Session> s, int status, const std::string& body) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    deferring_.insert(s->deferred);
    early_[s->deferred] = {status, body};
  }
  holdDeferred(s);  // writes it (the answer is there)
  if (s->left <= 0) {
    close(std::move(s), false);
    return;
  }
  serve(std::move(s), false);
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
    watchdog_until_ = next;
    cv_.wait_until(lock, next);
    watchdog_until_ = TimePoint::min();  // awake: it looks at every deadline again
  }
}

void GuardedHttpServer::wakeWatchdogBy(TimePoint deadline) {
  // Woken only when it would sleep past the deadline: its sweep walks every
  // open connection, and at 1,000 hosts (2,000 parked, a request per host a
  // second) a wake-up per request made that walk 20 % of the controller's
  // CPU (issue #16). It wakes at least once a second anyway.
  if (deadline < watchdog_until_) cv_.notify_all();
}

}  // namespace tw
