#include "agent/peer_monitor.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <iterator>

#include "tw/json.h"
#include "tw/text.h"
#include "tw/log.h"

namespace tw {

namespace {

constexpr const char* kPath = "/api/v1/peer/status";

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


}  // namespace

HttpPeerMonitor::HttpPeerMonitor(std::string self, std::string token, Clock& clock)
    : self_(std::move(self)),
      token_(std::move(token)),
      clock_(clock),
      server_(std::make_unique<httplib::Server>()) {
  server_->new_task_queue = [] { return new httplib::ThreadPool(4); };
  server_->set_read_timeout(2, 0);
  server_->set_write_timeout(2, 0);
  server_->set_keep_alive_max_count(1);
  server_->Get(kPath, [this](const httplib::Request& req, httplib::Response& res) {
    // The header as received: get_header_value() cuts a value at a NUL.
    auto auth = req.headers.equal_range("Authorization");
    const bool one = auth.first != auth.second && std::next(auth.first) == auth.second;
    if (!one || !tokenMatches(bearerToken(auth.first->second), token_)) {
      res.status = 401;
      res.set_content(R"({"error":"invalid or missing token"})", "application/json");
      return;
    }
    Json body{{"host", self_}, {"sees", sees(clock_.nowMs())}};
    res.set_content(body.dump(-1, ' ', false, Json::error_handler_t::replace), "application/json");
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
  bound_ = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  return Status::ok();
}

void HttpPeerMonitor::start() {
  serve_thread_ = std::thread([this] { server_->listen_after_bind(); });
  check_thread_ = std::thread([this] { checkLoop(); });
}

void HttpPeerMonitor::stop() {
  if (stopping_.exchange(true)) return;
  if (server_->is_running()) server_->stop();
  if (serve_thread_.joinable()) serve_thread_.join();
  if (check_thread_.joinable()) check_thread_.join();
}

void HttpPeerMonitor::setPeers(const std::vector<PeerInfo>& peers, Millis timeout_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  if (watch_start_ < 0) watch_start_ = clock_.nowMs();
  timeout_ms_ = timeout_ms > 0 ? timeout_ms : 3000;
  std::map<std::string, Peer> next;
  for (const auto& p : peers) {
    if (p.host == self_) continue;
    Peer peer;
    auto old = peers_.find(p.host);
    if (old != peers_.end()) peer = old->second;
    peer.address = p.address;
    next[p.host] = peer;
  }
  peers_.swap(next);
}

std::vector<std::string> HttpPeerMonitor::sees(Millis now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [host, p] : peers_) {
    if (p.last_answer >= 0 && now - p.last_answer < timeout_ms_) out.push_back(host);
  }
  return out;
}

std::set<std::string> HttpPeerMonitor::reachable(Millis now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::set<std::string> out;
  for (const auto& [host, p] : peers_) {
    // Strictly within the timeout: at timeout_ms the peer is unreachable(),
    // and never both.
    if (p.last_mutual >= 0 && now - p.last_mutual < timeout_ms_) out.insert(host);
  }
  return out;
}

std::map<std::string, Millis> HttpPeerMonitor::unreachable(Millis now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, Millis> out;
  if (watch_start_ < 0) return out;
  for (const auto& [host, p] : peers_) {
    Millis since = std::max(p.last_answer, watch_start_);
    if (now - since >= timeout_ms_) out[host] = now - since;
  }
  return out;
}

void HttpPeerMonitor::checkOne(const std::string& host, const std::string& address) {
  std::string h;
  int port = 0;
  if (!splitHostPort(address, h, port) || port == 0) return;
  Millis timeout;
  {
    std::lock_guard<std::mutex> lock(mu_);
    timeout = std::clamp<Millis>(timeout_ms_ / 3, 200, 2000);
  }
  httplib::Client client(h, port);
  client.set_connection_timeout(timeout / 1000, (timeout % 1000) * 1000);
  client.set_read_timeout(timeout / 1000, (timeout % 1000) * 1000);
  client.set_write_timeout(timeout / 1000, (timeout % 1000) * 1000);
  httplib::Headers headers{{"Authorization", "Bearer " + token_}};
  auto res = client.Get((std::string(kPath) + "?from=" + self_).c_str(), headers);
  if (!res || res->status != 200) return;
  bool mutual = false;
  try {
    Json body = Json::parse(res->body);
    if (body.value("host", "") != host) return;  // someone else answers there
    for (const auto& s : body.at("sees")) mutual |= s.is_string() && s.get<std::string>() == self_;
  } catch (const std::exception&) {
    return;
  }
  const Millis now = clock_.nowMs();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = peers_.find(host);
  if (it == peers_.end()) return;
  it->second.last_answer = now;
  if (mutual) it->second.last_mutual = now;
}

void HttpPeerMonitor::checkLoop() {
  while (!stopping_) {
    std::vector<std::pair<std::string, std::string>> targets;
    Millis every;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [host, p] : peers_) targets.emplace_back(host, p.address);
      every = std::clamp<Millis>(timeout_ms_ / 3, 200, 2000);
    }
    auto round_start = std::chrono::steady_clock::now();
    // One thread per peer for this round: a silent peer does not delay the rest.
    std::vector<std::thread> checks;
    for (const auto& [host, address] : targets) {
      if (address.empty()) continue;
      checks.emplace_back([this, host = host, address = address] { checkOne(host, address); });
    }
    for (auto& t : checks) t.join();
    auto next = round_start + std::chrono::milliseconds(every);
    while (!stopping_ && std::chrono::steady_clock::now() < next) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

}  // namespace tw
