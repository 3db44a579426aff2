#include "bench/bench_agents.h"

namespace twbench {

std::set<std::string> BenchPeerView::reachable(tw::Millis now) const {
  std::set<std::string> out;
  for (const auto& p : peers_) {
    int64_t since = outages_.since(p);
    if (since < 0 || now - since < timeout_ms_) out.insert(p);
  }
  return out;
}

std::map<std::string, tw::Millis> BenchPeerView::unreachable(tw::Millis now) const {
  std::map<std::string, tw::Millis> out;
  for (const auto& p : peers_) {
    int64_t since = outages_.since(p);
    if (since >= 0 && now - since >= timeout_ms_) out[p] = now - since;
  }
  return out;
}

tw::Result<tw::AssignmentSet> TimedLink::heartbeat(const tw::Heartbeat& hb) {
  auto started = std::chrono::steady_clock::now();
  // Compact when the report is the one answered last, the full one at
  // once if not answered (HttpControllerLink, tw/compact_heartbeats.h).
  tw::Result<tw::AssignmentSet> r = link_.heartbeat(hb);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  if (r.isOk()) {
    const int64_t at = wallMs();
    stages_.noteSet(FenceStages::kAtAgent, *r, at);  // runOnce() applies it at once
    stages_.noteReport(hb, at);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (recording_) samples_.push_back(ms);
  if (!r.isOk() && recording_) {
    ++errors_;
    last_error_ = r.status().toString();
  }
  return r;
}

void TimedLink::startPolling(const std::string& host, std::function<void(tw::AssignmentSet)> push) {
  poller_ = std::thread([this, host, push] {
    int64_t known = 0;
    while (!polling_stopped_.load()) {
      auto set = link_.waitAssignments(host, known, 25000);
      if (set.isOk()) {
        stages_.noteSet(FenceStages::kPolled, *set, wallMs());
        const int64_t version = set->version;
        if (version > known && push) push(std::move(*set));
        known = version;
      } else {
        for (int i = 0; i < 10 && !polling_stopped_.load(); ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    }
  });
}

std::vector<double> TimedLink::take(int64_t* errors, std::string* last_error) {
  std::lock_guard<std::mutex> lock(mu_);
  *errors = errors_;
  if (!last_error_.empty()) *last_error = last_error_;
  errors_ = 0;
  return std::move(samples_);
}

}  // namespace twbench
