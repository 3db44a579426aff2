#include "bench/fence_stages.h"

#include <algorithm>
#include <cstdio>

#include "tw/hypervisor.h"

namespace twbench {

const char* FenceStages::name(Stage s) {
  switch (s) {
    case kPlaced: return "placed";
    case kAssigned: return "assigned";
    case kPolled: return "polled";
    case kAtAgent: return "at agent";
    case kStarted: return "started";
    case kReported: return "reported";
    case kRunning: return "running";
    case kStageCount: break;
  }
  return "?";
}

void FenceStages::watch(const std::string& victim, const std::set<std::string>& vms) {
  std::lock_guard<std::mutex> lock(mu_);
  victim_ = victim;
  vms_.clear();
  for (const auto& vm : vms) vms_[vm];
  watching_ = true;
}

void FenceStages::note(Stage s, const std::string& host, const std::string& vm, int64_t ms) {
  if (!watching_.load(std::memory_order_relaxed)) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (host == victim_) return;
  auto it = vms_.find(vm);
  if (it == vms_.end() || it->second.at[s] >= 0) return;
  it->second.at[s] = ms;
  if (!host.empty()) it->second.host = host;
}

void FenceStages::noteSet(Stage s, const tw::AssignmentSet& set, int64_t ms) {
  if (!watching_.load(std::memory_order_relaxed)) return;
  for (const auto& a : set.assignments) note(s, set.host, a.vm, ms);
}

void FenceStages::noteReport(const tw::Heartbeat& hb, int64_t ms) {
  if (!watching_.load(std::memory_order_relaxed)) return;
  for (const auto& d : hb.domains) {
    if (tw::isActive(d.state)) note(kReported, hb.host, d.vm, ms);
  }
}

bool FenceStages::all(Stage s) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [vm, v] : vms_) {
    if (v.at[s] < 0) return false;
  }
  return !vms_.empty();
}

FenceStages::Summary FenceStages::summarize(int64_t fence_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  Summary out;
  for (int s = 0; s < kStageCount; ++s) {
    int64_t last = -1, first = -1;
    bool every = true;
    for (const auto& [vm, v] : vms_) {
      if (v.at[s] < 0) {
        every = false;
        continue;
      }
      last = std::max(last, v.at[s]);
      first = first < 0 ? v.at[s] : std::min(first, v.at[s]);
    }
    if (!every) last = -1;
    out.first_s[s] = first < 0 ? -1 : static_cast<double>(first - fence_ms) / 1000.0;
    out.to_stage_s[s] = last < 0 || vms_.empty() ? -1 : static_cast<double>(last - fence_ms) / 1000.0;
  }
  for (const auto& [vm, v] : vms_) {
    int64_t before = fence_ms;
    for (int s = 0; s < kStageCount; ++s) {
      if (v.at[s] < 0) continue;  // not seen: the next step counts from the one before
      const double step = static_cast<double>(v.at[s] - before) / 1000.0;
      if (step > out.slowest_s) {
        out.slowest_s = step;
        out.slowest = static_cast<Stage>(s);
        out.slowest_vm = vm;
        out.slowest_host = v.host;
      }
      before = v.at[s];
    }
  }
  return out;
}

std::string FenceStages::describe(const Summary& s) {
  std::string out;
  char buf[96];
  for (int i = 0; i < kStageCount; ++i) {
    if (s.to_stage_s[i] < 0) {
      std::snprintf(buf, sizeof buf, "%s%s -", i == 0 ? "" : ", ", name(static_cast<Stage>(i)));
    } else {
      std::snprintf(buf, sizeof buf, "%s%s %.3f-%.3f", i == 0 ? "" : ", ", name(static_cast<Stage>(i)),
                    s.first_s[i], s.to_stage_s[i]);
    }
    out += buf;
  }
  if (s.slowest_s >= 0) {
    std::snprintf(buf, sizeof buf, "; slowest step: -> %s %.3f s", name(s.slowest), s.slowest_s);
    out += buf;
    out += " (vm " + s.slowest_vm + " on " + s.slowest_host + ")";
  }
  return out;
}

}  // namespace twbench
