#include "controller/event_streamer.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <sstream>

#include "tw/json.h"
#include "tw/log.h"

namespace tw {

namespace {

using Steady = std::chrono::steady_clock;
constexpr const char* kPath = "/api/v1/events/stream";

// Invalid UTF-8 in stored text (an agent's message) is replaced, never thrown.
std::string sseJson(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

// Writes all of `out` on a blocking connection (bounded by SO_SNDTIMEO).
void writeAll(Transport& io, const std::string& out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = io.write(out.data() + done, out.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

void answerAndClose(std::unique_ptr<Transport> io, int status, const char* reason,
                    const std::string& message) {
  std::string body = sseJson(Json{{"error", message}});
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                    "\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                    "Connection: close\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\n";
  if (status == 401) out += "WWW-Authenticate: Bearer\r\n";
  out += "\r\n" + body;
  // Blocking with a short bound: an error answer is small.
  timeval tv{2, 0};
  ::setsockopt(io->fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  writeAll(*io, out);
  io->closeGracefully();
}  // io closes the socket

// Reads until the end of the request head, the size limit or the deadline.
bool readHead(Transport& io, Steady::time_point deadline, size_t max_bytes, std::string& head) {
  char buf[1024];
  while (head.find("\r\n\r\n") == std::string::npos) {
    if (head.size() > max_bytes) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()).count();
    if (left <= 0) return false;
    if (!io.pending()) {
      pollfd p{io.fd(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    }
    // TLS: one record, bounded by the socket's SO_RCVTIMEO (GuardedHttpServer).
    ssize_t n = io.read(buf, sizeof(buf));
    if (n <= 0) return false;
    head.append(buf, static_cast<size_t>(n));
  }
  return true;
}

bool allDigits(const std::string& s) {
  return !s.empty() && s.size() < 18 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

}  // namespace

EventStreamer::EventStreamer(ControllerService& service, StreamLimits limits, Authorize authorize)
    : service_(service), limits_(limits), authorize_(std::move(authorize)) {}

EventStreamer::~EventStreamer() { stop(); }

void EventStreamer::start() {
  std::lock_guard<std::mutex> life(life_mu_);
  {
    // stop() came first (a server stopped at once): no thread to leak.
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
  }
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  service_.setEventNotifier([this] { wake(); });
  thread_ = std::thread([this] { loop(); });
}

void EventStreamer::stop() {
  std::lock_guard<std::mutex> life(life_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) {
    wake();
    thread_.join();
  }
  service_.setEventNotifier(nullptr);
  streams_.clear();  // each stream's Transport closes its socket
  incoming_.clear();
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  wake_fd_ = epoll_fd_ = -1;
}

int EventStreamer::streams() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_;
}

void EventStreamer::wake() {
  uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof(one));
}

void EventStreamer::take(std::unique_ptr<Transport> io, const std::string& peer_address,
                         Steady::time_point deadline) {
  std::string head;
  if (!readHead(*io, deadline, limits_.max_head_bytes, head)) return;  // io closes
  // Request line: GET <target> HTTP/1.x
  size_t eol = head.find("\r\n");
  std::string line = head.substr(0, eol);
  size_t sp1 = line.find(' ');
  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp1 == std::string::npos || sp2 == std::string::npos || line.compare(sp2 + 1, 5, "HTTP/") != 0) {
    return answerAndClose(std::move(io), 400, "Bad Request", "malformed request line");
  }
  std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string path = target.substr(0, target.find('?'));
  std::string query = path.size() < target.size() ? target.substr(path.size() + 1) : "";
  if (path != kPath) return answerAndClose(std::move(io), 404, "Not Found", "no such API path");

  std::map<std::string, std::string> headers;
  size_t pos = eol + 2;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string::npos || end == pos) break;
    std::string h = head.substr(pos, end - pos);
    size_t colon = h.find(':');
    if (colon != std::string::npos) headers[lower(h.substr(0, colon))] = trim(h.substr(colon + 1));
    pos = end + 2;
  }
  if (authorize_) {
    Status ok = authorize_(headers);
    if (!ok.isOk()) {
      return answerAndClose(std::move(io), ok.code() == Code::kPermissionDenied ? 401 : 403,
                            ok.code() == Code::kPermissionDenied ? "Unauthorized" : "Forbidden",
                            ok.message());
    }
  }

  int64_t since = 0;
  std::stringstream params(query);
  std::string kv;
  while (std::getline(params, kv, '&')) {
    if (kv.rfind("since=", 0) != 0) continue;
    std::string v = kv.substr(6);
    if (!allDigits(v)) {
      return answerAndClose(std::move(io), 400, "Bad Request",
                            "query parameter 'since' must be a non-negative integer");
    }
    since = std::stoll(v);
  }
  auto last = headers.find("last-event-id");
  if (last != headers.end() && allDigits(last->second)) since = std::stoll(last->second);

  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) {
    lock.unlock();
    return answerAndClose(std::move(io), 503, "Service Unavailable", "controller stopping");
  }
  if (open_ >= limits_.total) {
    lock.unlock();
    return answerAndClose(std::move(io), 503, "Service Unavailable",
                          "too many event streams (" + std::to_string(limits_.total) + ")");
  }
  int& mine = counts_[peer_address];
  if (mine >= limits_.per_address) {
    lock.unlock();
    return answerAndClose(std::move(io), 503, "Service Unavailable",
                          "too many event streams from " + peer_address + " (" +
                              std::to_string(limits_.per_address) + ")");
  }
  ++mine;
  ++open_;
  Stream s;
  s.fd = io->fd();
  s.io = std::move(io);
  s.address = peer_address;
  s.cursor = since;
  s.last_write = Steady::now();
  s.pending =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
      "X-Accel-Buffering: no\r\nConnection: close\r\n\r\n";
  incoming_.push_back(std::move(s));
  lock.unlock();
  wake();
}

void EventStreamer::adoptIncoming() {
  std::vector<Stream> taken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    taken.swap(incoming_);
  }
  for (auto& s : taken) {
    int flags = ::fcntl(s.fd, F_GETFL, 0);
    ::fcntl(s.fd, F_SETFL, flags | O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = s.fd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, s.fd, &ev);
    int fd = s.fd;
    streams_[fd] = std::move(s);
    flush(streams_[fd]);
    if (streams_[fd].dead) closeStream(fd);
  }
}

void EventStreamer::closeStream(int fd) {
  auto it = streams_.find(fd);
  if (it == streams_.end()) return;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  it->second.io.reset();  // closes fd
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto c = counts_.find(it->second.address);
    if (c != counts_.end() && --c->second <= 0) counts_.erase(c);
    --open_;
  }
  streams_.erase(it);
}

void EventStreamer::flush(Stream& s) {
  while (!s.pending.empty()) {
    ssize_t n = s.io->write(s.pending.data(), s.pending.size());  // non-blocking socket
    if (n > 0) {
      s.pending.erase(0, static_cast<size_t>(n));
      s.last_write = Steady::now();
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    s.pending.clear();
    s.dead = true;  // closed by the loop's sweep
    return;
  }
  // Wait for room only while something is left.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (s.pending.empty() ? 0u : static_cast<uint32_t>(EPOLLOUT));
  ev.data.fd = s.fd;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, s.fd, &ev);
}

void EventStreamer::pump() {
  int64_t newest = service_.waitEvents(0, 0);
  auto now = Steady::now();
  // One read per distinct cursor: most streams share the newest one. A new
  // stream reads until it has caught up (the log may hold events from before
  // this process started, which `newest` does not know).
  struct Page {
    std::string frames;
    int64_t cursor = 0;
    bool caught_up = false;
  };
  std::map<int64_t, Page> pages;  // by the cursor it was read from
  if (!service_.stopping()) {
    for (auto& [fd, s] : streams_) {
      if ((s.caught_up && s.cursor >= newest) || pages.count(s.cursor)) continue;
      if (s.pending.size() > limits_.max_pending_bytes / 2) continue;  // let it drain first
      constexpr int kPage = 500;
      auto page = service_.call([c = s.cursor](Controller& ctl) { return ctl.eventsJson(c, kPage); });
      Page p;
      p.cursor = s.cursor;
      int count = 0;
      if (page.isOk()) {
        for (const auto& e : (*page)["events"]) {
          p.frames += "id: " + std::to_string(e["id"].get<int64_t>()) + "\nevent: event\ndata: " +
                      sseJson(e) + "\n\n";
          p.cursor = e["id"].get<int64_t>();
          ++count;
        }
      }
      p.caught_up = count < kPage;
      if (p.caught_up && p.cursor < newest) p.cursor = newest;  // nothing readable below it
      pages[s.cursor] = std::move(p);
    }
  }
  std::vector<int> dead;
  for (auto& [fd, s] : streams_) {
    auto p = pages.find(s.cursor);
    if (p != pages.end()) {
      s.pending += p->second.frames;
      s.cursor = p->second.cursor;
      s.caught_up = p->second.caught_up;
    } else if (s.pending.empty() && now - s.last_write >= std::chrono::milliseconds(limits_.keepalive_ms)) {
      s.pending += ": keepalive\n\n";
    }
    if (s.pending.size() > limits_.max_pending_bytes) {
      log::info("event stream of {} dropped: its client stopped reading", s.address);
      dead.push_back(fd);
      continue;
    }
    flush(s);
    if (s.dead) dead.push_back(fd);
  }
  for (int fd : dead) closeStream(fd);
}

void EventStreamer::loop() {
  epoll_event events[64];
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    int n = ::epoll_wait(epoll_fd_, events, 64, 1000);
    std::vector<int> dead;
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        uint64_t v;
        while (::read(wake_fd_, &v, sizeof(v)) > 0) {
        }
        continue;
      }
      auto it = streams_.find(fd);
      if (it == streams_.end()) continue;
      uint32_t e = events[i].events;
      if (e & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        dead.push_back(fd);
        continue;
      }
      if (e & EPOLLIN) {
        char buf[512];
        ssize_t r = it->second.io->read(buf, sizeof(buf));  // non-blocking socket
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
          dead.push_back(fd);
          continue;
        }
      }
      if (e & EPOLLOUT) {
        flush(it->second);
        if (it->second.dead) dead.push_back(fd);
      }
    }
    for (int fd : dead) closeStream(fd);
    adoptIncoming();
    pump();
  }
}

}  // namespace tw
