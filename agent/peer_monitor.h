// Peer checks over HTTP (docs/fencing.md): each agent answers
// GET /api/v1/peer/status (agent/peer_answer.h), and checks every peer of its
// assignment set the same way, on threads of its own, so that no VM start,
// libvirt call or controller outage delays them.
//
// A peer counts as reached (PeerView::reachable) when it answered within the
// peer timeout AND its answer said that it reaches this host. A peer is
// reported unreachable (PeerView::unreachable) when this host has had no
// answer from it for the timeout. Checks and answers need the cluster's peer
// token (<state-dir>/peer-token, in every host's issue-host bundle).
//
// Cost (issue #16): a few checking threads per lane (agent/peer_checks.h: 16
// for the peers that answer, 16 for the silent ones, more only while a lane
// falls behind, at most 128 each), not a thread per peer per round; each check is one short connection and, between
// upgraded agents, an answer of a few dozen bytes. The answering side serves
// one request per connection on 4 threads: a kept-alive connection would hold
// one of them (httplib serves a connection on one thread until it closes), and
// hundreds of peers holding connections would leave none for the rest.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/peer_checks.h"
#include "agent/peer_view.h"
#include "tw/clock.h"
#include "tw/status.h"

namespace httplib {
class Server;
}

namespace tw {

class HttpPeerMonitor final : public PeerView {
 public:
  // `self`: this host's name; `token`: what peers present and check.
  HttpPeerMonitor(std::string self, std::string token, Clock& clock, PeerCheckTuning tuning = {});
  ~HttpPeerMonitor() override;

  // Binds the answering side ("ADDR:PORT"; port 0 = any). Errors: kUnavailable.
  Status listen(const std::string& address);
  // "ADDR:PORT" actually bound (after listen()).
  std::string boundAddress() const { return bound_; }
  // Starts the answering and checking threads. REQUIRES: listen() succeeded.
  void start();
  void stop();

  // PeerView
  void setPeers(const std::vector<PeerInfo>& peers, Millis timeout_ms) override;
  std::set<std::string> reachable(Millis now) const override;
  std::map<std::string, Millis> unreachable(Millis now) const override;

 private:
  // Starts checking threads up to the lanes' share for the peers. REQUIRES: mu_ held.
  void addWorkers();
  void checkLoop(PeerLane lane);
  // One check over HTTP: empty = no valid answer, else mutual.
  std::optional<bool> checkOne(const PeerCheck& check) const;

  const std::string self_;
  const std::string token_;
  Clock& clock_;
  std::unique_ptr<httplib::Server> server_;
  std::string bound_;
  int listen_fd_ = -1;  // the answering side's socket (set while binding)
  std::thread serve_thread_;
  std::atomic<bool> stopping_{false};

  mutable std::mutex mu_;  // guards everything below
  PeerChecks checks_;
  bool started_ = false;
  std::vector<std::thread> workers_[2];  // per lane
  std::condition_variable wake_[2];      // per lane: a check is due earlier than its threads sleep
  Millis grown_at_[2] = {0, 0};          // per lane: steady time a thread was last added
};

}  // namespace tw
