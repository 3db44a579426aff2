// Assignment long polls that wait without a thread (issue #16).
//
// Every agent keeps one `GET /api/v1/agents/H/assignments?after=V&wait_ms=N`
// open (agent/main.cc). Its handler used to block a listener thread in
// ControllerService::waitAssignments for up to 25 s, so the long polls of
// ~56 hosts took every admitted connection. Now the handler defers its
// answer (GuardedHttpServer::defer(): the connection is parked, no thread)
// and adds the poll here; one thread answers each poll when its host's set
// is published with a newer version (ControllerService's notifier) or its
// wait ends, through `answer` (which writes it with answerDeferred()).
//
// Threads: add() from handlers; `answer` runs on this class's thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "controller/service.h"
#include "tw/clock.h"

namespace tw {

class LongPolls {
 public:
  // Answers poll `ticket` of `host` (with the set newer than `after`, or the
  // current one when its wait ended; without the peer list when the agent
  // holds `peers_digest`'s, ControllerService::waitAssignments).
  using Answer = std::function<void(uint64_t ticket, const std::string& host, int64_t after,
                                    const std::string& peers_digest)>;

  LongPolls(ControllerService& service, Answer answer);
  ~LongPolls();  // stop()
  LongPolls(const LongPolls&) = delete;
  LongPolls& operator=(const LongPolls&) = delete;

  void start();
  // Unanswered polls are dropped (the listener closes their connections).
  void stop();
  // Answers `ticket` once the host's version is > after, or after wait_ms.
  void add(uint64_t ticket, const std::string& host, int64_t after, Millis wait_ms,
           const std::string& peers_digest = "");
  size_t size() const;

 private:
  using TimePoint = std::chrono::steady_clock::time_point;
  struct Poll {
    std::string host;
    int64_t after = 0;
    TimePoint until;
    std::string peers_digest;  // of the peer list the agent holds ("" = none)
  };
  // From the service's notifier (under its lock): marks only.
  void changed(const std::string& host);
  void run();

  ControllerService& service_;
  const Answer answer_;
  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::map<uint64_t, Poll> polls_;       // by ticket
  std::set<std::string> changed_;        // hosts published since the last pass
  bool all_changed_ = false;             // waiters released: answer every poll
  bool stopping_ = false;
  bool started_ = false;
  std::thread thread_;
};

}  // namespace tw
