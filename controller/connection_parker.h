// Idle connections held by one thread instead of one thread each.
//
// GuardedHttpServer (http_guard.h) serves a request on a pool thread; between
// two requests of a kept-alive connection (an agent's heartbeat every second)
// it parks the connection here. One thread waits on all of them with epoll
// and calls `wake` once per parked connection: readable (its next request,
// or its close, has begun to arrive: serve it on a pool thread) or not (its
// idle time ran out: close it). A 1,000-host site parks ~2,000 connections
// (a heartbeat connection and a long poll each) on this one thread.
//
// Threads: park()/unpark() from any thread; `wake` runs on the parker's own
// thread, with no lock of the parker held (it may call park() again).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "tw/status.h"

namespace tw {

class ConnectionParker {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  // `readable` false: idle until the deadline, or the socket failed.
  using Wake = std::function<void(uint64_t id, bool readable)>;

  explicit ConnectionParker(Wake wake);
  ~ConnectionParker();  // stop()
  ConnectionParker(const ConnectionParker&) = delete;
  ConnectionParker& operator=(const ConnectionParker&) = delete;

  // Watches `fd` (not owned) until it is readable or `idle_until`, then wakes
  // `id` once and forgets it. Errors: kUnavailable (epoll refused the fd, or
  // the parker stopped): the caller keeps the connection.
  Status park(uint64_t id, int fd, TimePoint idle_until);
  // Forgets `id` without a wake. False when it was not parked (woken already).
  bool unpark(uint64_t id);
  size_t size() const;
  // Ends the thread; parked ids are forgotten without a wake (the owner
  // closes them).
  void stop();

 private:
  void run();
  struct Entry {
    int fd;
    TimePoint idle_until;
  };

  const Wake wake_;
  int epoll_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd: wakes epoll_wait() at stop()
  mutable std::mutex mu_;  // guards everything below
  std::map<uint64_t, Entry> parked_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tw
