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

// Parses and validates `files` together as one policy (their union): unknown
// keys, wrong types, impossible values, duplicate names (also across files),
// unknown tiers in `after:` and cycles in `after:`, hosts named in placement
// that are not declared. Placement feasibility (capacity) is checked by the
// planner, not here. Errors: kInvalidArgument with where() set.
Result<Policy> parsePolicy(const std::vector<PolicyFile>& files);

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
