// The Agent's small part in backups: which of its VMs run (the backup
// runner's input) and reporting an outcome. The schedule and the copy are
// agent/backup_runner.h; the daemon runs the copies on a worker thread.
#include "agent/agent.h"

namespace tw {

std::vector<Assignment> Agent::runningAssignments() const {
  std::vector<Assignment> out;
  if (!has_set_) return out;
  for (const Assignment& a : set_.assignments) {
    if (a.incoming || !a.migrate_to_uri.empty() || migrating(a.vm)) continue;
    auto it = view_.find(a.vm);
    if (it == view_.end() || it->second.meta.epoch != a.epoch) continue;
    if (it->second.state != DomainState::kRunning) continue;
    out.push_back(a);
  }
  return out;
}

}  // namespace tw
