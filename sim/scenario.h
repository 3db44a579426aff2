// A scenario: the simulated hosts, the policy files, the script and the
// assertions, as read from a scenario folder (tests/scenarios/<name>/) or
// built in code (bench/sim_hour.cc).
//
// Folder layout:
//   cluster.yaml   the simulated hosts, in the shape of a policy file (hosts:
//                  name, role, capacity, fence; an optional cluster:
//                  section). `uri` may be left out (the simulator fills in
//                  sim://<name>; another uri is refused). The simulated
//                  controller defines two fence agents (simFenceAgents()):
//                  fence: { agent: ok } powers the host off (exit 0),
//                  fence: { agent: fail } fails (exit 1); no other agent.
//                  Left out, fence is libvirt (as for a host with a uri); to
//                  fence by lease expiry only, write uri: sim://<name> and
//                  fence: none. `capacity` is the simulated hardware, which
//                  the agent reports (it is no capacity override in the
//                  policy). No tiers here.
//   policy*.yaml   policy files, applied by the script's `apply` commands.
//   script         the script (sim/script.h).
//   assert         optional assertions (sim/assertions.h).
//   README         one line: what the scenario shows.
//   expect.log     the golden event log (tierwarden-sim run --update-golden).
//
// The simulator applies the hosts as a generated policy file, sim-hosts.yaml,
// together with the first `apply` of the script (every later `apply` keeps it).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "sim/assertions.h"
#include "sim/script.h"
#include "tw/model.h"
#include "tw/status.h"

namespace tw::sim {

// The name of the generated policy file that declares the simulated hosts.
inline constexpr const char* kHostsPolicyName = "sim-hosts.yaml";

struct SimHostDef {
  HostSpec spec;      // as it goes into sim-hosts.yaml (uri filled in)
  Capacity capacity;  // what the simulated host has (FakeHypervisor)
};

struct Scenario {
  std::string name;
  std::string dir;                          // empty for scenarios built in code
  ClusterSettings settings;                 // of cluster.yaml (defaults where not given)
  std::vector<SimHostDef> hosts;            // declaration order
  PolicyFile hosts_policy;                  // sim-hosts.yaml
  std::map<std::string, PolicyFile> files;  // `apply` path -> file (name = base name)
  Script script;
  std::vector<Assertion> asserts;
  std::string assert_file;  // for messages
};

// The URI of a simulated host ("sim://h1").
std::string simUri(const std::string& host);

// Fills scenario->settings, hosts and hosts_policy from cluster.yaml's text
// (`label` names it in messages). Errors: kInvalidArgument with file:line.
Status loadHosts(const std::string& cluster_yaml, const std::string& label, Scenario* scenario);

// The VM names the applies of `script` can bring about: every `apply`, merged
// over the ones before it as the controller merges them, that parses (with
// the hosts) contributes its tiers' VMs.
std::set<std::string> vmNamesOf(const Scenario& scenario);

// Reads a scenario folder. Errors (a malformed scenario): kInvalidArgument or
// kNotFound, with "file:line" where a line applies.
Result<Scenario> loadScenario(const std::string& dir);

// A scenario built in code from the texts a folder would hold (`files`:
// apply path -> content). No asserts. Errors as loadScenario's, the labels
// prefixed with `name`.
Result<Scenario> scenarioFromTexts(const std::string& name, const std::string& cluster_yaml,
                                   const std::map<std::string, std::string>& files,
                                   const std::string& script);

}  // namespace tw::sim
