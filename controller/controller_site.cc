// What the agents report about their hosts (tw::HostReport: subnets, shared
// storage, DR places), and the checks of the policy against it
// (controller/apply_checks.h): an apply is refused by what a report proves;
// a policy in force that the reports contradict later (it was applied before
// the hosts reported, or a share went away) gets warnings: one event
// "policy.site_warning" per new finding, and "site_warnings" on its tier in
// GET /api/v1/tiers.
#include "controller/controller.h"
#include "tw/log.h"

namespace tw {

const HostChecks& Controller::hostChecks() const {
  if (host_checks_of_ != policy_record_.digest) {
    host_checks_ = hostChecksOf(policy_);
    host_checks_of_ = policy_record_.digest;
  }
  return host_checks_;
}

void Controller::noteHostReport(HostRuntime& h, const Heartbeat& hb) {
  if (hb.host_report.digest.empty() || hb.host_report.digest == h.report.digest) return;
  h.report = hb.host_report;
  probes_.noteReport(hb.host);  // answers again: waited for again (path_probes.h)
  log::info("host '{}' reported {} subnets, {} paths, {} pools", hb.host, h.report.subnets.size(),
            h.report.paths.size(), h.report.pools.size());
  noteSiteFindings();
}

std::vector<ReportingHost> Controller::reportingHosts(const Policy& policy) const {
  std::vector<ReportingHost> out;
  out.reserve(policy.hosts.size());
  for (const HostSpec& spec : policy.hosts) {
    ReportingHost r;
    r.name = spec.name;
    auto it = hosts_.find(spec.name);
    if (it != hosts_.end()) {
      r.fenced = it->second.rec.state == HostState::kFenced;
      if (!it->second.report.digest.empty()) r.report = &it->second.report;
    }
    out.push_back(r);
  }
  return out;
}

// A finding the policy in force already has (same tier, same words) stays a
// warning and refuses nothing: while a share is down on one host, operators
// must still be able to apply other changes (a safety check must not become
// the outage). Only what this apply would newly bring is refused.
Status Controller::checkSiteFacts(const Policy& next) const {
  std::vector<SiteFinding> fresh;
  for (SiteFinding& f : checkSite(next, reportingHosts(next))) {
    auto known = site_findings_.find(f.tier);
    if (known != site_findings_.end() &&
        std::find(known->second.begin(), known->second.end(), f.message) != known->second.end())
      continue;
    fresh.push_back(std::move(f));
  }
  return siteRefusal(fresh);
}

std::map<std::string, HostChecks> Controller::unreportedChecksOf(const Policy& next,
                                                                bool late) const {
  std::map<std::string, HostChecks> out;
  for (const HostSpec& spec : next.hosts) {
    auto it = hosts_.find(spec.name);
    if (it == hosts_.end() || probes_.late(spec.name) != late) continue;
    const HostState state = it->second.rec.state;
    // Only hosts that heartbeat now can answer; the others are judged when
    // they report (policy.site_warning), as before.
    if (state != HostState::kOnline && state != HostState::kMaintenance) continue;
    const HostReport* report = it->second.report.digest.empty() ? nullptr : &it->second.report;
    HostChecks missing = unreportedChecks(hostChecksOn(next, spec.name), report);
    if (!missing.paths.empty() || !missing.pools.empty()) out[spec.name] = std::move(missing);
  }
  return out;
}

bool Controller::probePaths(const Policy& next, const std::string& key, ProbeMode probe,
                            std::map<std::string, HostChecks>* unchecked) {
  if (probe == ProbeMode::kDecideNow) return false;
  const Millis now = clock_.nowMs();
  probes_.prune(now);
  std::map<std::string, HostChecks> unreported = unreportedChecksOf(next);
  if (probe == ProbeMode::kWait && probes_.waiting(key, unreported, now)) return true;
  std::vector<std::string> late;
  for (const auto& [host, _] : unreported) late.push_back(host);
  if (!late.empty())
    log::warn("apply: {} online hosts did not report its new paths in time", late.size());
  probes_.close(key, late);
  *unchecked = std::move(unreported);
  // Hosts late before: not waited for, but named as not checked too.
  for (auto& [host, c] : unreportedChecksOf(next, /*late=*/true)) (*unchecked)[host] = std::move(c);
  return false;
}

void Controller::noteSiteFindings() {
  if (view_only_) return;
  std::map<std::string, std::vector<std::string>> now;
  for (const SiteFinding& f : checkSite(policy_, reportingHosts(policy_)))
    now[f.tier].push_back(f.message);
  for (const auto& [tier, messages] : now) {
    auto before = site_findings_.find(tier);
    for (const auto& m : messages) {
      if (before != site_findings_.end() &&
          std::find(before->second.begin(), before->second.end(), m) != before->second.end())
        continue;
      emit("warn", "policy.site_warning", "tier/" + tier, m);
    }
  }
  site_findings_ = std::move(now);
}

std::vector<std::string> Controller::siteWarnings(const std::string& tier) const {
  auto it = site_findings_.find(tier);
  return it == site_findings_.end() ? std::vector<std::string>{} : it->second;
}

}  // namespace tw
