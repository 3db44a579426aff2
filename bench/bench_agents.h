// The load generator's agents in bench/scale: each host's Agent on its own
// FakeHypervisor, talking to the controller over real HTTP as a real agent
// does (TimedLink: heartbeats on one kept-alive connection, one assignments
// long poll always open), with peer views that the bench's outages drive.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/agent.h"
#include "agent/peer_view.h"
#include "bench/fence_stages.h"
#include "bench/proc_stats.h"
#include "tw/fake_hypervisor.h"
#include "tw/http_client.h"

namespace twbench {

// Which hosts' agents are gone (the load generator stopped them), and since
// when: every agent's peer view, as peer checks would find it.
class Outages {
 public:
  void stop(const std::string& host, int64_t at_ms) {
    std::lock_guard<std::mutex> lock(mu_);
    since_[host] = at_ms;
  }
  int64_t since(const std::string& host) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = since_.find(host);
    return it == since_.end() ? -1 : it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, int64_t> since_;
};

class BenchPeerView final : public tw::PeerView {
 public:
  explicit BenchPeerView(const Outages& outages) : outages_(outages) {}
  void setPeers(const std::vector<tw::PeerInfo>& peers, tw::Millis timeout_ms) override {
    peers_.clear();
    for (const auto& p : peers) peers_.push_back(p.host);
    timeout_ms_ = timeout_ms;
  }
  std::set<std::string> reachable(tw::Millis now) const override;
  std::map<std::string, tw::Millis> unreachable(tw::Millis now) const override;

 private:
  const Outages& outages_;
  std::vector<std::string> peers_;
  tw::Millis timeout_ms_ = 3000;
};

// An agent's link over HTTP as a real agent's (agent/main.cc): the real
// HttpControllerLink, its heartbeats on one kept-alive connection (timed
// here), and one assignments long poll always open (startPolling()), from a
// loopback source address of its own (127.0.0.2 ..., ApiClientOptions::
// source_address): the agent listener admits at most 32 open connections
// per client address (ApiServerOptions::agent_limits), which real hosts, one
// address each, never reach, but N agents on one address would. So the
// controller holds two open connections per host, as on a real site.
class TimedLink final : public tw::ControllerLink {
 public:
  // `stages`: where the fence's stages are noted (outlives the link).
  TimedLink(int port, std::string token, std::string source, FenceStages& stages)
      : stages_(stages), link_([&] {
    tw::ApiClientOptions o;
    o.base_url = "http://127.0.0.1:" + std::to_string(port);
    o.token = std::move(token);
    o.connect_timeout_ms = 3000;
    o.read_timeout_ms = 10000;
    o.source_address = std::move(source);
    return o;
  }()) {}
  ~TimedLink() override { stopPolling(); }
  tw::Result<tw::AssignmentSet> heartbeat(const tw::Heartbeat& hb) override;
  tw::Status sendEvent(const tw::AgentEvent& event) override { return link_.sendEvent(event); }
  void setCompact(bool on) { link_.setCompactHeartbeats(on); }
  // One long poll always open, as agent/main.cc's pollAssignments(): each
  // newer set goes to `push` (the agent's worker hands it to the agent).
  void startPolling(const std::string& host, std::function<void(tw::AssignmentSet)> push);
  // The poll ends at its next answer (at most 25 s; the host stopped).
  void endPolling() { polling_stopped_ = true; }
  void stopPolling() {
    polling_stopped_ = true;
    if (poller_.joinable()) poller_.join();
  }
  void record(bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    recording_ = on;
  }
  std::vector<double> take(int64_t* errors, std::string* last_error);

 private:
  FenceStages& stages_;
  tw::HttpControllerLink link_;
  std::thread poller_;
  std::atomic<bool> polling_stopped_{false};
  std::mutex mu_;
  bool recording_ = false;
  std::vector<double> samples_;
  int64_t errors_ = 0;
  std::string last_error_;
};

// One host of the load generator. Its FakeHypervisor and Agent are its
// worker thread's only (neither is thread-safe): other threads read what the
// worker's calls left under events_mu.
struct BenchHost {
  std::string name;
  std::unique_ptr<tw::FakeHypervisor> hv;
  std::unique_ptr<TimedLink> link;
  std::unique_ptr<BenchPeerView> peers;
  std::unique_ptr<tw::Agent> agent;
  std::mutex events_mu;
  std::vector<tw::DomainEvent> events;           // guarded by events_mu
  std::optional<tw::AssignmentSet> pushed;       // guarded by events_mu: the newest polled set
  std::set<std::string> active;                  // guarded by events_mu: its running domains
  std::atomic<bool> stop_requested{false};       // the worker stops it at its next look
  std::atomic<bool> stopped{false};
};

}  // namespace twbench
