#include "controller/heartbeat_counters.h"

namespace tw {

const char* HeartbeatCounters::label(HeartbeatPath path) {
  switch (path) {
    case HeartbeatPath::kFast: return "fast";
    case HeartbeatPath::kLoop: return "loop";
    case HeartbeatPath::kPublished: return "published";
    case HeartbeatPath::kFollower: return "follower";
    case HeartbeatPath::kReportWanted: return "report_wanted";
    case HeartbeatPath::kRefused: return "refused";
  }
  return "unknown";
}

std::string HeartbeatCounters::metricsText() const {
  std::string out =
      "# HELP tierwarden_heartbeats_total Agent heartbeats by how they were answered: fast (off the loop), "
      "loop, published (loop busy: the last published set), follower (renewed by a follower replica), "
      "report_wanted (a compact heartbeat the fast path could not answer), refused (an error answer).\n"
      "# TYPE tierwarden_heartbeats_total counter\n";
  for (HeartbeatPath p : {HeartbeatPath::kFast, HeartbeatPath::kLoop, HeartbeatPath::kPublished,
                          HeartbeatPath::kFollower, HeartbeatPath::kReportWanted, HeartbeatPath::kRefused}) {
    out += "tierwarden_heartbeats_total{path=\"";
    out += label(p);
    out += "\"} " + std::to_string(get(p)) + "\n";
  }
  return out;
}

}  // namespace tw
