#include "agent/peer_monitor.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <iterator>

#include "agent/peer_answer.h"
#include "tw/listen_socket.h"

namespace tw {

namespace {

bool splitHostPort(const std::string& address, std::string& host, int& port) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  try {
    port = std::stoi(address.substr(colon + 1));
  } catch (...) {
    return false;
  }
  return port >= 0 && port <= 65535;
}

// The answering side's accept queue. httplib listens with a queue of 5: at
// 1,000 hosts a host gets 2,000 checks a second (1,000 peers, a round every
// 500 ms), and when its accepting thread is not scheduled for a few
// milliseconds the queue is full and further SYNs are dropped; the checker
// resends its SYN only after a second, longer than a check waits. Those
// peers would then see this host as silent.
constexpr int kListenBacklog = 1024;

// Steady milliseconds: when checks are due (agent/peer_checks.h).
Millis steadyMs() { return SteadyClock::instance().nowMs(); }

}  // namespace

HttpPeerMonitor::HttpPeerMonitor(std::string self, std::string token, Clock& clock,
                                 PeerCheckTuning tuning)
    : self_(std::move(self)),
      token_(std::move(token)),
      clock_(clock),
      server_(std::make_unique<httplib::Server>()),
      checks_(self_, tuning) {
  server_->new_task_queue = [] { return new httplib::ThreadPool(4); };
  server_->set_read_timeout(2, 0);
  server_->set_write_timeout(2, 0);
  // One request per connection: see the header (a kept-alive connection pins
  // a server thread).
  server_->set_keep_alive_max_count(1);
  server_->set_socket_options([this](socket_t sock) {
    exclusiveListenOptions(sock);  // one process per port (tw/listen_socket.h)
    listen_fd_ = sock;
  });
  server_->Get(kPeerStatusPath, [this](const httplib::Request& req, httplib::Response& res) {
    PeerStatusRequest request;
    // The headers as received: get_header_value() cuts a value at a NUL.
    auto auth = req.headers.equal_range("Authorization");
    for (auto it = auth.first; it != auth.second; ++it) request.authorization.push_back(it->second);
    if (req.has_param("from")) request.from = req.get_param_value("from");
    request.compact = req.get_param_value("compact") == "1";
    const Millis now = clock_.nowMs();
    PeerStatusAnswer answer = answerPeerStatus(
        request, token_, self_,
        [&](const std::string& peer) {
          std::lock_guard<std::mutex> lock(mu_);
          return checks_.hears(peer, now);
        },
        [&] {
          std::lock_guard<std::mutex> lock(mu_);
          return checks_.heard(now);
        });
    res.status = answer.status;
    res.set_content(answer.body, "application/json");
  });
}

HttpPeerMonitor::~HttpPeerMonitor() { stop(); }

Status HttpPeerMonitor::listen(const std::string& address) {
  std::string host;
  int port = 0;
  if (!splitHostPort(address, host, port)) {
    return invalidArgument("peer listen address must be ADDR:PORT, got '" + address + "'");
  }
  if (port == 0) {
    port = server_->bind_to_any_port(host);
    if (port <= 0) return unavailable("cannot listen for peer checks on " + host);
  } else if (!server_->bind_to_port(host, port)) {
    return unavailable("cannot listen for peer checks on " + address + " (address in use?)");
  }
  // Listening again on a listening socket only sets its queue's length.
  if (listen_fd_ >= 0) ::listen(listen_fd_, kListenBacklog);
  bound_ = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  return Status::ok();
}

void HttpPeerMonitor::start() {
  serve_thread_ = std::thread([this] { server_->listen_after_bind(); });
  std::lock_guard<std::mutex> lock(mu_);
  started_ = true;
  addWorkers();
}

void HttpPeerMonitor::stop() {
  if (stopping_.exchange(true)) return;
  if (server_->is_running()) server_->stop();
  if (serve_thread_.joinable()) serve_thread_.join();
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& lane : workers_) {
      std::move(lane.begin(), lane.end(), std::back_inserter(workers));
      lane.clear();
    }
    for (auto& wake : wake_) wake.notify_all();
  }
  for (auto& t : workers) t.join();
}

void HttpPeerMonitor::addWorkers() {
  if (!started_ || stopping_) return;
  for (PeerLane lane : {PeerLane::kLive, PeerLane::kSilent}) {
    auto& threads = workers_[static_cast<int>(lane)];
    // Never fewer: a thread of a lane that has nothing due sleeps.
    while (threads.size() < checks_.workersPerLane()) {
      threads.emplace_back([this, lane] { checkLoop(lane); });
    }
  }
}

void HttpPeerMonitor::setPeers(const std::vector<PeerInfo>& peers, Millis timeout_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  checks_.setPeers(peers, timeout_ms, clock_.nowMs(), steadyMs());
  addWorkers();
  for (auto& wake : wake_) wake.notify_all();
}

std::set<std::string> HttpPeerMonitor::reachable(Millis now) const {
  std::lock_guard<std::mutex> lock(mu_);
  return checks_.reachable(now);
}

std::map<std::string, Millis> HttpPeerMonitor::unreachable(Millis now) const {
  std::lock_guard<std::mutex> lock(mu_);
  return checks_.unreachable(now);
}

std::optional<bool> HttpPeerMonitor::checkOne(const PeerCheck& check) const {
  std::string h;
  int port = 0;
  if (!splitHostPort(check.address, h, port) || port == 0) return std::nullopt;
  httplib::Client client(h, port);
  const Millis connect = check.connect_timeout_ms, timeout = check.timeout_ms;
  client.set_connection_timeout(connect / 1000, (connect % 1000) * 1000);
  client.set_read_timeout(timeout / 1000, (timeout % 1000) * 1000);
  client.set_write_timeout(timeout / 1000, (timeout % 1000) * 1000);
  httplib::Headers headers{{"Authorization", "Bearer " + token_}};
  // compact=1: the O(1) answer; a peer that does not know it answers `sees`.
  auto res = client.Get((std::string(kPeerStatusPath) + "?from=" + self_ + "&compact=1").c_str(), headers);
  if (!res || res->status != 200) return std::nullopt;
  Result<bool> mutual = parsePeerAnswer(res->body, check.host, self_);
  if (!mutual.isOk()) return std::nullopt;
  return mutual.value();
}

void HttpPeerMonitor::checkLoop(PeerLane lane) {
  auto& wake = wake_[static_cast<int>(lane)];
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    const Millis steady = steadyMs();
    std::optional<PeerCheck> check = checks_.take(lane, steady);
    if (!check) {
      // Until the lane's next check is due; woken earlier by setPeers() and
      // by a check due before that (a peer the live lane lost).
      std::optional<Millis> due = checks_.nextDue(lane);
      Millis wait = due ? std::clamp<Millis>(*due - steady, 1, 1000) : 1000;
      wake.wait_for(lock, std::chrono::milliseconds(wait));
      continue;
    }
    // Behind (the peers answer slowly, or many are silent): one more thread
    // for the lane, at most one a quarter interval, so that a short stall of
    // this host does not leave it with the most threads for good.
    auto& threads = workers_[static_cast<int>(lane)];
    Millis& grown_at = grown_at_[static_cast<int>(lane)];
    if (!stopping_ && steady - grown_at >= checks_.interval() / 4 &&
        checks_.wantsWorker(lane, threads.size(), steady)) {
      grown_at = steady;
      threads.emplace_back([this, lane] { checkLoop(lane); });
    }
    lock.unlock();
    std::optional<bool> mutual = checkOne(*check);
    lock.lock();
    if (auto woken = checks_.finish(*check, mutual, clock_.nowMs())) {
      wake_[static_cast<int>(*woken)].notify_one();
    }
  }
}

}  // namespace tw
