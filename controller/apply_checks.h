// Checks a policy against what the hosts' agents reported about themselves
// (tw::HostReport, agent/host_report.h): a floating address that lies in no
// host's subnet, shared storage (storage.path / storage.pool) or a DR place
// (backup.to) missing on a host that may run the tier. Used twice by the
// controller: to refuse an apply (the first finding, with the file:line:column
// of the offending value) and, for a policy in force that was applied before
// the hosts reported, as warnings (event + GET /api/v1/tiers "site_warnings").
// Pure: no clock, no store.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "tw/model.h"
#include "tw/protocol.h"
#include "tw/status.h"

namespace tw {

// One declared host as the controller sees it now.
struct ReportingHost {
  std::string name;
  bool fenced = false;              // fenced hosts are not checked, nor waited for
  const HostReport* report = nullptr;  // null = has not reported (yet)
};

struct SiteFinding {
  std::string tier;
  SourceLocation where;  // the offending value
  std::string message;   // "address 10.9.0.100/24 of tier 'lb' lies in no subnet of ..."
};

// What every host is asked to check (AssignmentSet::checks): the policy's
// shared storage paths, pools and backup.to, sorted, no duplicates.
HostChecks hostChecksOf(const Policy& policy);

// What `host` is asked to check for `policy`: the paths and pools of the
// tiers that may run there (placement.required_hosts), sorted.
HostChecks hostChecksOn(const Policy& policy, const std::string& host);
// Those of `wanted` that `report` does not name yet (all when it is null).
HostChecks unreportedChecks(const HostChecks& wanted, const HostReport* report);
// "/srv/dr, pool 'nfs-db'"
std::string checksList(const HostChecks& checks);

// The problems `policy` would have on `hosts` (declared in `policy`), tier by
// tier in declaration order. A host that has not reported, or whose report
// does not name a path or pool yet, proves nothing: only what a report says
// counts. An address is judged only when every unfenced host that may hold
// it has reported (the message names the hosts checked); one naming its
// `interface:` (a routed address) and hosts with --address-interface are
// taken as they are.
std::vector<SiteFinding> checkSite(const Policy& policy, const std::vector<ReportingHost>& hosts);

// The first finding as the refusal of an apply (kInvalidArgument with where()),
// or ok.
Status siteRefusal(const std::vector<SiteFinding>& findings);

}  // namespace tw
