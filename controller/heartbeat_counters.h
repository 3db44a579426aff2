// How each agent heartbeat was answered (issue #16), for /metrics:
//   tierwarden_heartbeats_total{path="fast"}      answered on the HTTP thread
//                                                 (controller/heartbeat_fastpath.h)
//   tierwarden_heartbeats_total{path="loop"}      taken by the controller loop
//   tierwarden_heartbeats_total{path="published"} queued for the loop, answered
//                                                 with the last published set
//                                                 because the loop was busy
//   tierwarden_heartbeats_total{path="follower"}  renewed by a follower replica
//                                                 (?any_replica=1, docs/ha.md)
//   tierwarden_heartbeats_total{path="report_wanted"} a compact heartbeat the
//                                                 fast path could not answer: the
//                                                 agent sends its full report again
//   tierwarden_heartbeats_total{path="refused"}   any other error answer (bad
//                                                 token or body, undeclared host)
// Threads: count() from any HTTP thread (relaxed atomics); metricsText() anywhere.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace tw {

enum class HeartbeatPath { kFast, kLoop, kPublished, kFollower, kReportWanted, kRefused };

class HeartbeatCounters {
 public:
  void count(HeartbeatPath path) { counts_[index(path)].fetch_add(1, std::memory_order_relaxed); }
  int64_t get(HeartbeatPath path) const { return counts_[index(path)].load(std::memory_order_relaxed); }
  // The Prometheus text of tierwarden_heartbeats_total (HELP, TYPE, one line a path).
  std::string metricsText() const;
  static const char* label(HeartbeatPath path);

 private:
  static constexpr size_t kPaths = 6;
  static size_t index(HeartbeatPath path) { return static_cast<size_t>(path); }
  std::array<std::atomic<int64_t>, kPaths> counts_{};
};

}  // namespace tw
