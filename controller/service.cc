#include "controller/service.h"

#include <chrono>

#include "tw/json.h"
#include "tw/log.h"

namespace tw {

namespace {

// A compact heartbeat that the fast path cannot answer: the loop never takes
// one (it names a report, it does not carry it).
Status reportWanted(const Heartbeat& hb) {
  return failedPrecondition("report wanted: the controller does not hold the report of host '" + hb.host +
                            "' that this compact heartbeat names (digest " + hb.report_digest +
                            "); send the full heartbeat");
}

}  // namespace

ControllerService::ControllerService(Controller& controller, Millis tick_ms, const Clock& clock)
    : controller_(&controller), tick_ms_(tick_ms), fast_(clock) {
  listen();
  refreshDeclared();
  const std::string& digest = controller_->peersDigest();
  fast_.notePeersDigest(digest);
  refreshPeers(digest);
}

Millis ControllerService::freshMs() const {
  // As long as the loop itself counts a host as heard: a heartbeat later
  // than dead_after after the last one the loop applied goes to the loop,
  // which judges a host silent that long. It was one and a half intervals
  // (at most dead_after / 2); at 1,000 hosts a load generator that fell
  // behind sent heartbeats 1.5-3 s apart, each of them to the loop (twice:
  // the compact one refused as "report wanted", then the full one), which
  // made the next ones later still (issue #16). Safety does not rest on
  // this window (controller/heartbeat_fastpath.h): the loop closes the fast
  // path for a host before it declares it dead, and waits while renewals
  // answered here are still to be applied (Controller::setOffLoopCloser).
  return controller_->policy().settings.dead_after_ms;
}

void ControllerService::applyFastRenewals() {
  const Millis fresh = freshMs();
  for (const HeartbeatFastPath::Renewal& r : fast_.takeRenewals()) {
    fast_.noteRenewed(r.host, controller_->renewOffLoop(r.host, &r.peers_unreachable), fresh);
  }
  const std::string& digest = controller_->peersDigest();
  fast_.notePeersDigest(digest);
  refreshPeers(digest);
}

void ControllerService::refreshPeers(const std::string& digest) {
  if (peers_ != nullptr && peers_digest_ == digest) return;
  auto list = std::make_shared<const std::vector<PeerInfo>>(allPeers());  // outside mu_
  std::lock_guard<std::mutex> lock(mu_);
  peers_ = std::move(list);
  peers_digest_ = digest;
}

void ControllerService::listen() {
  // Called on the loop thread (or before start()): the set is computed here,
  // so that heartbeats and long polls answer without the loop.
  controller_->setAssignmentListener([this](const std::string& host, int64_t version) {
    // Without the peer list: publishedSet() puts the newest one in (peers_).
    const std::string peers_digest = controller_->peersDigest();
    auto set = std::make_shared<const AssignmentSet>(controller_->assignmentsFor(host, peers_digest));
    fast_.notePublished(set);
    refreshPeers(peers_digest);
    std::lock_guard<std::mutex> lock(mu_);
    versions_[host] = version;
    published_[host] = std::move(set);
    change_cv_.notify_all();
    if (assignment_notifier_) assignment_notifier_(host);
  });
  controller_->setEventListener([this](const EventRecord& e) { noteEventId(e.id); });
  controller_->setOffLoopCloser([this](const std::string& host) { return fast_.close(host); });
}

void ControllerService::swapController(Controller& next) {
  controller_->setAssignmentListener(nullptr);
  controller_->setEventListener(nullptr);
  controller_->setOffLoopCloser(nullptr);
  controller_ = &next;
  fast_.reset();
  listen();
  refreshDeclared();
}

void ControllerService::noteEventId(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (id > last_event_id_) last_event_id_ = id;
  change_cv_.notify_all();
  if (event_notifier_) event_notifier_();
}

ControllerService::~ControllerService() { stop(); }

void ControllerService::start() { thread_ = std::thread([this] { loop(); }); }

void ControllerService::releaseWaiters() {
  std::lock_guard<std::mutex> lock(mu_);
  waiters_released_ = true;
  change_cv_.notify_all();
  if (assignment_notifier_) assignment_notifier_("");
}

void ControllerService::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    work_cv_.notify_all();
    change_cv_.notify_all();
    if (assignment_notifier_) assignment_notifier_("");
  }
  if (thread_.joinable()) thread_.join();
}

void ControllerService::post(std::function<void()> work) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_back(std::move(work));
  work_cv_.notify_one();
}

void ControllerService::drainQueue() {
  for (;;) {
    std::deque<std::function<void()>> work;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.empty()) return;
      work.swap(queue_);
    }
    runEach(&work);
  }
}

void ControllerService::runEach(std::deque<std::function<void()>>* work) {
  while (!work->empty()) {
    std::function<void()> w = std::move(work->front());
    work->pop_front();
    w();
  }  // w is gone before the next one runs
}

void ControllerService::refreshDeclared() {
  int64_t version = controller_->policyVersion();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (version == declared_version_) return;
  }
  std::set<std::string> hosts;
  for (const auto& h : controller_->policy().hosts) hosts.insert(h.name);
  std::lock_guard<std::mutex> lock(mu_);
  declared_ = std::move(hosts);
  declared_version_ = version;
}

void ControllerService::loop() {
  using Steady = std::chrono::steady_clock;
  auto next_tick = Steady::now();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait_until(lock, next_tick, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) return;
    }
    drainQueue();
    refreshDeclared();
    if (Steady::now() >= next_tick) {
      // Heartbeats that arrived while earlier work ran (a big apply, a slow
      // store) are taken first: liveness is never judged on a stale view.
      drainQueue();
      applyFastRenewals();  // before liveness is judged
      if (!may_act_ || may_act_()) controller_->runOnce();
      refreshDeclared();
      next_tick = Steady::now() + std::chrono::milliseconds(tick_ms_);
    }
  }
}

bool ControllerService::hostDeclared(const std::string& host) {
  std::lock_guard<std::mutex> lock(mu_);
  return declared_.count(host) > 0;
}

Result<AssignmentSet> ControllerService::heartbeat(const Heartbeat& hb, Millis answer_wait_ms,
                                                 HeartbeatPath* how) {
  HeartbeatPath ignored;
  if (how == nullptr) how = &ignored;
  if (!hostDeclared(hb.host)) {
    return notFound("host '" + hb.host + "' is not declared in the applied policy");
  }
  if (std::optional<AssignmentSet> set = fast_.tryAnswer(hb)) {  // no change: not the loop's
    *how = HeartbeatPath::kFast;
    return std::move(*set);
  }
  if (hb.compact) {
    *how = HeartbeatPath::kReportWanted;
    return reportWanted(hb);
  }
  return viaLoop(hb, answer_wait_ms, how);
}

Result<std::string> ControllerService::heartbeatJson(const Heartbeat& hb, Millis answer_wait_ms,
                                                     HeartbeatPath* how) {
  HeartbeatPath ignored;
  if (how == nullptr) how = &ignored;
  if (!hostDeclared(hb.host)) {
    return notFound("host '" + hb.host + "' is not declared in the applied policy");
  }
  if (std::shared_ptr<const HeartbeatFastPath::Answer> answer = fast_.tryAnswerShared(hb)) {
    *how = HeartbeatPath::kFast;
    return answer->json();
  }
  if (hb.compact) {
    *how = HeartbeatPath::kReportWanted;
    return reportWanted(hb);
  }
  Result<AssignmentSet> set = viaLoop(hb, answer_wait_ms, how);
  if (!set.isOk()) return set.status();
  return jsonText(Json(*set));
}

std::vector<PeerInfo> ControllerService::allPeers() const {
  // Every declared host in policy order (the Controller's peer list). A
  // set's list is it without the set's own host: the first host's set lists
  // every other host, the second host's set starts with the first.
  const std::vector<HostSpec>& hosts = controller_->policy().hosts;
  std::vector<PeerInfo> all;
  if (hosts.empty()) return all;
  all.reserve(hosts.size());
  if (hosts.size() > 1) {
    std::vector<PeerInfo> second = controller_->assignmentsFor(hosts[1].name).peers;
    all.push_back(second.empty() ? PeerInfo{hosts[0].name, ""} : second.front());
  } else {
    all.push_back(PeerInfo{hosts[0].name, ""});  // the only host: no set lists it
  }
  for (PeerInfo& p : controller_->assignmentsFor(hosts[0].name).peers) all.push_back(std::move(p));
  return all;
}

AssignmentSet ControllerService::publishedSet(const AssignmentSet& stored,
                                              const std::string& agent_peers_digest) const {
  // The newest peer list the loop has seen (peers_), not the one that was
  // current when this host's set was published: a host whose set did not
  // change since would hand its agent an older list than its last heartbeat
  // answer did (its next heartbeat then missed the fast path, "peers", and
  // fetched the new list again; its peer checks meanwhile used old addresses).
  AssignmentSet set = stored;
  set.peers_digest = peers_digest_;
  if (!agent_peers_digest.empty() && agent_peers_digest == peers_digest_) {
    set.peers_omitted = true;  // the agent holds this one
    return set;
  }
  set.peers_omitted = false;
  set.peers.reserve(peers_->size());
  for (const PeerInfo& peer : *peers_) {
    if (peer.host != set.host) set.peers.push_back(peer);
  }
  return set;
}

Result<AssignmentSet> ControllerService::viaLoop(const Heartbeat& hb, Millis answer_wait_ms, HeartbeatPath* how) {
  auto promise = std::make_shared<std::promise<Result<AssignmentSet>>>();
  auto answer = promise->get_future();
  post([this, hb, promise] {
    Result<AssignmentSet> r = controller_->handleHeartbeat(hb);
    if (r.isOk()) {
      const HostRecord* h = controller_->host(hb.host);
      fast_.noteTaken(hb, *r, h != nullptr && h->state == HostState::kOnline, freshMs());
    }
    promise->set_value(std::move(r));
  });
  *how = HeartbeatPath::kLoop;
  if (answer.wait_for(std::chrono::milliseconds(answer_wait_ms)) == std::future_status::ready) {
    return answer.get();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = published_.find(hb.host);
    if (it != published_.end()) {
      *how = HeartbeatPath::kPublished;
      return publishedSet(*it->second, hb.peers_digest);
    }
  }
  // Nothing published for the host yet (just after a start): an empty set
  // would tell the agent to drop its VMs, so this one waits for the loop.
  return answer.get();
}

Status ControllerService::agentEvent(const AgentEvent& event) {
  if (!hostDeclared(event.host)) {
    return notFound("host '" + event.host + "' is not declared in the applied policy");
  }
  post([this, event] {
    Status s = controller_->handleAgentEvent(event);
    if (!s.isOk()) log::warn("agent event from host '{}' dropped: {}", event.host, s.toString());
  });
  return Status::ok();
}

AssignmentSet ControllerService::waitAssignments(const std::string& host, int64_t after,
                                                 Millis wait_ms, const std::string& agent_peers_digest) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    change_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms), [&] {
      auto it = versions_.find(host);
      return stopping_ || waiters_released_ || (it != versions_.end() && it->second > after);
    });
    auto it = published_.find(host);
    if (it != published_.end()) return publishedSet(*it->second, agent_peers_digest);
  }
  return call([&](Controller& c) { return c.assignmentsFor(host, agent_peers_digest); });  // nothing published yet
}

bool ControllerService::assignmentsAfter(const std::string& host, int64_t after) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_ || waiters_released_) return true;
  auto it = versions_.find(host);
  return it != versions_.end() && it->second > after;
}

void ControllerService::setAssignmentNotifier(std::function<void(const std::string& host)> notify) {
  std::lock_guard<std::mutex> lock(mu_);
  assignment_notifier_ = std::move(notify);
}

void ControllerService::setEventNotifier(std::function<void()> notify) {
  std::lock_guard<std::mutex> lock(mu_);
  event_notifier_ = std::move(notify);
}

bool ControllerService::stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_ || waiters_released_;
}

Result<ApplyResult> ControllerService::applyPolicy(const std::vector<PolicyFile>& files,
                                                  bool dry_run) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(kProbeGiveUpMs);
  ProbeMode mode = ProbeMode::kWait;
  bool probed = false;
  for (;;) {
    auto result = call([&](Controller& c) {
      auto r = c.applyPolicy(files, dry_run, mode);
      // While hosts check new paths (path_probes.h), every heartbeat goes to
      // the loop, whose answers carry the paths to check: the fast path's
      // sets were published before the apply and lack them. Its sets are
      // forgotten again once a policy is applied: a set's version moves only
      // when what runs where moves, and the policy's other fields (health
      // checks, ports, backup, addresses, checks) ride along in the loop's
      // answers.
      const bool pending = r.isOk() && r->pending;
      if (pending || probed || (r.isOk() && !dry_run)) fast_.forgetSets();
      probed = pending;
      return r;
    });
    if (!result.isOk() || !result->pending) return result;
    std::unique_lock<std::mutex> lock(mu_);
    change_cv_.wait_for(lock, std::chrono::milliseconds(kProbePollMs),
                        [&] { return stopping_ || waiters_released_; });
    if (stopping_ || waiters_released_ || std::chrono::steady_clock::now() >= give_up)
      mode = ProbeMode::kStopWaiting;
  }
}

int64_t ControllerService::waitEvents(int64_t after, Millis wait_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  change_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms),
                      [&] { return stopping_ || waiters_released_ || last_event_id_ > after; });
  return last_event_id_;
}

}  // namespace tw
