// The policy language: operators declare tiers, hosts and cluster settings in
// YAML, over one or more files. This is the only place that includes yaml-cpp.
//
// A policy is refused whole on the first problem; the Status carries the
// file, line and column (Status::where()) and says what was expected.
#pragma once

#include <string>
#include <vector>

#include "tw/model.h"
#include "tw/status.h"

namespace tw {

struct PolicyParseOptions {
  // For a policy stored before fence agents existed, and only for that (the
  // controller's recover()): `fence: command` and `fence_command` are read
  // as the default fence (libvirt with a uri, else none) with
  // HostSpec::fence_legacy_command set, instead of being refused. The
  // command itself is dropped.
  bool legacy_fence_command = false;
};

// Parses and validates `files` together as one policy (their union): unknown
// keys, wrong types, impossible values, duplicate names (also across files),
// unknown tiers in `after:` and cycles in `after:`, hosts named in placement
// that are not declared. Placement feasibility (capacity) is checked by the
// planner, not here; whether a named fence agent exists by the controller,
// whose configuration defines them. Errors: kInvalidArgument with where() set.
Result<Policy> parsePolicy(const std::vector<PolicyFile>& files,
                           const PolicyParseOptions& options = {});

// The largest policy parsePolicy takes, over all its files (a larger one is
// refused with a message naming the limit): the 1,000 hosts and 20,000 VMs
// of issue #16. Planning and the N+1 check grow with VMs x hosts and run on
// the controller's loop (at 200 hosts / 5,000 VMs a dry run took about 0.7 s
// on a 2-core machine; at these limits it takes seconds, see README "Scale").
inline constexpr int kMaxPolicyHosts = 1000;
inline constexpr int kMaxPolicyTiers = 1000;
inline constexpr int kMaxPolicyVms = 20000;  // the sum of all tiers' replicas

// The file set in force after applying `incoming` on top of `current`: a file
// with the same name is replaced, new names are added, the rest is kept.
// The result is sorted by name.
std::vector<PolicyFile> mergePolicyFiles(const std::vector<PolicyFile>& current,
                                         const std::vector<PolicyFile>& incoming);

// Reads a file (or every *.yaml / *.yml in a directory, sorted) from disk.
// File names in the result are base names. Errors: kNotFound, kInvalidArgument.
Result<std::vector<PolicyFile>> readPolicyFiles(const std::string& path);

// A stable digest (hex) of a file set, to tell "nothing changed".
std::string digestOf(const std::vector<PolicyFile>& files);

}  // namespace tw
