#include "controller/connection_parker.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace tw {

namespace {
constexpr uint64_t kStopId = ~uint64_t{0};
// Idle deadlines are checked this often (a keep-alive timeout is seconds).
constexpr auto kSweepEvery = std::chrono::milliseconds(250);
}  // namespace

ConnectionParker::ConnectionParker(Wake wake) : wake_(std::move(wake)) {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_fd_ >= 0 && stop_fd_ >= 0) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kStopId;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &ev);
    thread_ = std::thread([this] { run(); });
  } else {
    stopping_ = true;  // park() refuses: connections stay on their threads
  }
}

ConnectionParker::~ConnectionParker() {
  stop();
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void ConnectionParker::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& [id, e] : parked_) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, e.fd, nullptr);
    parked_.clear();
  }
  if (stop_fd_ >= 0) {
    uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof(one));
  }
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

Status ConnectionParker::park(uint64_t id, int fd, TimePoint idle_until) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return unavailable("the connection parker stopped");
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
  ev.data.u64 = id;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    return unavailable(std::string("epoll_ctl: ") + std::strerror(errno));
  }
  parked_[id] = Entry{fd, idle_until};
  return Status::ok();
}

bool ConnectionParker::unpark(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = parked_.find(id);
  if (it == parked_.end()) return false;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second.fd, nullptr);
  parked_.erase(it);
  return true;
}

size_t ConnectionParker::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return parked_.size();
}

void ConnectionParker::run() {
  std::vector<epoll_event> events(256);
  auto next_sweep = std::chrono::steady_clock::now() + kSweepEvery;
  std::vector<std::pair<uint64_t, bool>> woken;
  for (;;) {
    int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()),
                         static_cast<int>(kSweepEvery.count()));
    woken.clear();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      for (int i = 0; i < n; ++i) {
        uint64_t id = events[static_cast<size_t>(i)].data.u64;
        if (id == kStopId) continue;
        auto it = parked_.find(id);
        if (it == parked_.end()) continue;  // unparked meanwhile
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second.fd, nullptr);
        parked_.erase(it);
        // Readable, or hung up (then the read sees the end at once).
        woken.emplace_back(id, (events[static_cast<size_t>(i)].events & EPOLLERR) == 0);
      }
      auto now = std::chrono::steady_clock::now();
      if (now >= next_sweep) {
        next_sweep = now + kSweepEvery;
        for (auto it = parked_.begin(); it != parked_.end();) {
          if (it->second.idle_until <= now) {
            ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second.fd, nullptr);
            woken.emplace_back(it->first, false);
            it = parked_.erase(it);
          } else {
            ++it;
          }
        }
      }
    }
    for (auto [id, readable] : woken) wake_(id, readable);
  }
}

}  // namespace tw
