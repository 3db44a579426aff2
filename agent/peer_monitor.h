// Peer checks over HTTP (docs/fencing.md): each agent answers
// GET /api/v1/peer/status with the peers it reaches, and checks every peer of
// its assignment set the same way, on a thread of its own, so that no VM
// start, libvirt call or controller outage delays them.
//
// A peer counts as reached (PeerView::reachable) when it answered within the
// peer timeout AND its answer named this host among those it reaches. A peer
// is reported unreachable (PeerView::unreachable) when this host has had no
// answer from it for the timeout. Checks and answers need the cluster's peer
// token (<state-dir>/peer-token, in every host's issue-host bundle).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

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
  HttpPeerMonitor(std::string self, std::string token, Clock& clock);
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
  struct Peer {
    std::string address;
    Millis last_answer = -1;  // last answer received
    Millis last_mutual = -1;  // last answer that named this host
  };
  void checkLoop();
  void checkOne(const std::string& host, const std::string& address);
  // The peers this host reached within the timeout: what it answers.
  std::vector<std::string> sees(Millis now) const;

  const std::string self_;
  const std::string token_;
  Clock& clock_;
  std::unique_ptr<httplib::Server> server_;
  std::string bound_;
  std::thread serve_thread_;
  std::thread check_thread_;
  std::atomic<bool> stopping_{false};

  mutable std::mutex mu_;  // guards everything below
  std::map<std::string, Peer> peers_;
  Millis timeout_ms_ = 3000;
  Millis watch_start_ = -1;
};

}  // namespace tw
