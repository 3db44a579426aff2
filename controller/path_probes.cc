#include "controller/path_probes.h"

namespace tw {

HostChecks mergeChecks(const HostChecks& a, const HostChecks& b) {
  std::set<std::string> paths(a.paths.begin(), a.paths.end());
  paths.insert(b.paths.begin(), b.paths.end());
  std::set<std::string> pools(a.pools.begin(), a.pools.end());
  pools.insert(b.pools.begin(), b.pools.end());
  return HostChecks{{paths.begin(), paths.end()}, {pools.begin(), pools.end()}};
}

bool PathProbes::waiting(const std::string& key,
                         const std::map<std::string, HostChecks>& unreported, Millis now) {
  if (unreported.empty()) return false;
  auto [it, opened] = probes_.try_emplace(key);
  if (opened) it->second.deadline_ms = now + kWaitMs;
  for (const auto& [host, c] : unreported) it->second.checks = mergeChecks(it->second.checks, c);
  return now < it->second.deadline_ms;
}

void PathProbes::close(const std::string& key, const std::vector<std::string>& late) {
  probes_.erase(key);
  late_.insert(late.begin(), late.end());
}

HostChecks PathProbes::checks(Millis now) const {
  HostChecks out;
  for (const auto& [key, p] : probes_)
    if (now < p.deadline_ms + kWaitMs) out = mergeChecks(out, p.checks);
  return out;
}

void PathProbes::prune(Millis now) {
  std::erase_if(probes_, [now](const auto& kv) { return now >= kv.second.deadline_ms + kWaitMs; });
}

}  // namespace tw
