#include "controller/apply_checks.h"

#include <algorithm>
#include <set>

#include "tw/ip_prefix.h"

namespace tw {
namespace {

bool mayRun(const TierSpec& t, const std::string& host) {
  const auto& req = t.placement.required_hosts;
  return req.empty() || std::find(req.begin(), req.end(), host) != req.end();
}

// "'h1' (10.213.0.0/24), 'h2' (none)"
std::string checkedList(const std::vector<const ReportingHost*>& hosts) {
  std::string out;
  for (const ReportingHost* h : hosts) {
    std::string nets;
    for (const auto& s : h->report->subnets) nets += (nets.empty() ? "" : ", ") + s;
    out += (out.empty() ? "'" : "; '") + h->name + "' (" + (nets.empty() ? "no subnet" : nets) + ")";
  }
  return out;
}

void checkAddress(const TierSpec& t, const std::vector<ReportingHost>& hosts,
                  std::vector<SiteFinding>* out) {
  if (!t.address.set() || !t.address.interface.empty()) return;
  auto addr = parseIpPrefix(t.address.cidr);
  if (!addr) return;  // the parser refused it already
  std::vector<const ReportingHost*> checked;
  for (const ReportingHost& h : hosts) {
    if (h.fenced || !mayRun(t, h.name)) continue;
    if (h.report == nullptr) return;  // not every host has reported: judged later
    if (h.report->addresses_off) continue;
    if (!h.report->address_interface.empty()) return;  // goes there, whatever its subnet
    for (const auto& s : h.report->subnets) {
      auto net = parseIpPrefix(s);
      if (net && net->contains(*addr)) return;
    }
    checked.push_back(&h);
  }
  if (checked.empty()) return;
  out->push_back(SiteFinding{
      t.name, t.address_at,
      "address " + t.address.cidr + " of tier '" + t.name +
          "' lies in no subnet of the hosts that may hold it (checked " + checkedList(checked) +
          "): give it an address in one of these subnets, or name the interface "
          "(address: { ip: ..., interface: IF }) for a routed address"});
}

// `what`: "shared storage path", "backup.to"
void checkPath(const TierSpec& t, const std::string& path, const SourceLocation& where,
               const std::string& what, const std::string& fix,
               const std::vector<ReportingHost>& hosts, std::vector<SiteFinding>* out) {
  std::vector<std::string> missing;
  for (const ReportingHost& h : hosts) {
    if (h.fenced || h.report == nullptr || !mayRun(t, h.name)) continue;
    auto it = h.report->paths.find(path);
    if (it != h.report->paths.end() && !it->second) missing.push_back(h.name);
  }
  if (missing.empty()) return;
  std::string names;
  for (const auto& n : missing) names += (names.empty() ? "'" : ", '") + n + "'";
  out->push_back(SiteFinding{t.name, where,
                             what + " " + path + " of tier '" + t.name +
                                 "' is no writable directory on host" +
                                 (missing.size() > 1 ? "s " : " ") + names + " (" + fix + ")"});
}

void checkPool(const TierSpec& t, const std::vector<ReportingHost>& hosts,
               std::vector<SiteFinding>* out) {
  std::vector<std::string> missing;
  for (const ReportingHost& h : hosts) {
    if (h.fenced || h.report == nullptr || !mayRun(t, h.name)) continue;
    auto it = h.report->pools.find(t.storage.pool);
    if (it != h.report->pools.end() && !it->second) missing.push_back(h.name);
  }
  if (missing.empty()) return;
  std::string names;
  for (const auto& n : missing) names += (names.empty() ? "'" : ", '") + n + "'";
  out->push_back(SiteFinding{
      t.name, t.storage_at,
      "storage pool '" + t.storage.pool + "' of tier '" + t.name +
          "' is missing or inactive on host" + (missing.size() > 1 ? "s " : " ") + names +
          " (define it of type dir, fs or netfs and start it on every host: virsh pool-define-as, "
          "pool-start, pool-autostart)"});
}

}  // namespace

HostChecks hostChecksOf(const Policy& policy) {
  std::set<std::string> paths, pools;
  for (const TierSpec& t : policy.tiers) {
    if (t.storage.kind == StorageKind::kShared) {
      if (!t.storage.pool.empty()) pools.insert(t.storage.pool);
      else if (!t.storage.path.empty()) paths.insert(t.storage.path);
    }
    if (t.backup.enabled()) paths.insert(t.backup.to);
  }
  return HostChecks{{paths.begin(), paths.end()}, {pools.begin(), pools.end()}};
}

HostChecks hostChecksOn(const Policy& policy, const std::string& host) {
  Policy mine;
  for (const TierSpec& t : policy.tiers)
    if (mayRun(t, host)) mine.tiers.push_back(t);
  return hostChecksOf(mine);
}

HostChecks unreportedChecks(const HostChecks& wanted, const HostReport* report) {
  if (report == nullptr) return wanted;
  HostChecks out;
  for (const auto& p : wanted.paths)
    if (!report->paths.count(p)) out.paths.push_back(p);
  for (const auto& p : wanted.pools)
    if (!report->pools.count(p)) out.pools.push_back(p);
  return out;
}

std::string checksList(const HostChecks& checks) {
  std::string out;
  for (const auto& p : checks.paths) out += (out.empty() ? "" : ", ") + p;
  for (const auto& p : checks.pools) out += (out.empty() ? "pool '" : ", pool '") + p + "'";
  return out;
}

std::vector<SiteFinding> checkSite(const Policy& policy, const std::vector<ReportingHost>& hosts) {
  std::vector<SiteFinding> out;
  for (const TierSpec& t : policy.tiers) {
    checkAddress(t, hosts, &out);
    if (t.storage.kind == StorageKind::kShared) {
      if (!t.storage.pool.empty()) {
        checkPool(t, hosts, &out);
      } else if (!t.storage.path.empty()) {
        checkPath(t, t.storage.path, t.storage_at, "shared storage path",
                  "mount the share at this path on every host", hosts, &out);
      }
    }
    if (t.backup.enabled()) {
      checkPath(t, t.backup.to, t.backup_to_at, "backup.to",
                "mount the DR place at this path on every host that may run the tier, writable "
                "by the agent",
                hosts, &out);
    }
  }
  return out;
}

Status siteRefusal(const std::vector<SiteFinding>& findings) {
  if (findings.empty()) return Status::ok();
  return Status(Code::kInvalidArgument, findings.front().message, findings.front().where);
}

}  // namespace tw
