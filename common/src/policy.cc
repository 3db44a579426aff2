// The policy language: YAML files → one validated Policy. This is the only
// file that includes yaml-cpp; its exceptions stop here and become a Status.
//
// Parsing goes in two passes. The first reads each file on its own (shape,
// types, ranges, rules inside one tier or host) into a Draft that also keeps
// the positions of names and references. The second checks what spans files:
// duplicate names, `after:` references and cycles, host references and
// `spread: required` against the declared hosts. The first problem found is
// returned; nothing is half-accepted.
#include "tw/policy.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "policy_parser.h"
#include "tw/ip_prefix.h"
#include "tw/text.h"
namespace tw {
namespace {

using policy_parser::Draft;
using policy_parser::FileParser;
using policy_parser::joinNames;
using policy_parser::kMaxPolicyFileBytes;
using policy_parser::TierRefs;

// ------------------------------------------------------ cross-file checks ---

Status failAt(const SourceLocation& where, std::string message) {
  return Status(Code::kInvalidArgument, std::move(message), where);
}

Status checkUniqueNames(const Draft& d) {
  std::map<std::string, size_t> hosts;
  for (size_t i = 0; i < d.policy.hosts.size(); ++i) {
    const HostSpec& h = d.policy.hosts[i];
    auto [prev, inserted] = hosts.emplace(h.name, i);
    if (!inserted)
      return failAt(d.host_name_at[i], "duplicate host name '" + h.name + "' (first declared at " +
                                           d.policy.hosts[prev->second].where.str() + ")");
  }
  std::map<std::string, size_t> tiers;
  for (size_t i = 0; i < d.policy.tiers.size(); ++i) {
    const TierSpec& t = d.policy.tiers[i];
    auto [prev, inserted] = tiers.emplace(t.name, i);
    if (!inserted)
      return failAt(d.tier_refs[i].name_at, "duplicate tier name '" + t.name +
                                                "' (first declared at " +
                                                d.policy.tiers[prev->second].where.str() + ")");
  }
  // One floating address, one tier: two holders would answer for it.
  std::map<std::string, size_t> addresses;  // by the address without its prefix
  for (size_t i = 0; i < d.policy.tiers.size(); ++i) {
    const TierSpec& t = d.policy.tiers[i];
    if (!t.address.set()) continue;
    const std::string ip = parseIpPrefix(t.address.cidr)->ip();
    auto [prev, inserted] = addresses.emplace(ip, i);
    if (!inserted)
      return failAt(t.address_at, "address " + ip + " of tier '" + t.name +
                                      "' is the address of tier '" +
                                      d.policy.tiers[prev->second].name + "' too (at " +
                                      d.policy.tiers[prev->second].address_at.str() + ")");
  }
  return Status::ok();
}

Status checkReferences(const Draft& d) {
  const Policy& p = d.policy;
  for (size_t i = 0; i < p.tiers.size(); ++i) {
    const TierSpec& t = p.tiers[i];
    const TierRefs& refs = d.tier_refs[i];
    for (size_t k = 0; k < t.after.size(); ++k) {
      if (!p.findTier(t.after[k]))
        return failAt(refs.after_at[k],
                      "tier '" + t.name + "' lists unknown tier '" + t.after[k] + "' in after");
    }
    const PlacementSpec& pl = t.placement;
    for (size_t k = 0; k < pl.required_hosts.size(); ++k) {
      if (!p.findHost(pl.required_hosts[k]))
        return failAt(refs.required_at[k],
                      "host '" + pl.required_hosts[k] + "' in required_hosts is not declared");
    }
    for (size_t k = 0; k < pl.preferred_hosts.size(); ++k) {
      const std::string& host = pl.preferred_hosts[k];
      if (!p.findHost(host))
        return failAt(refs.preferred_at[k],
                      "host '" + host + "' in preferred_hosts is not declared");
      if (!pl.required_hosts.empty() &&
          std::find(pl.required_hosts.begin(), pl.required_hosts.end(), host) ==
              pl.required_hosts.end())
        return failAt(refs.preferred_at[k], "host '" + host + "' in preferred_hosts of tier '" +
                                                t.name + "' is not in its required_hosts");
    }
    // With no hosts declared at all there is nothing to count against; the
    // planner reports such a tier as pending.
    if (pl.spread == SpreadMode::kRequired && !p.hosts.empty()) {
      size_t allowed = pl.required_hosts.empty() ? p.hosts.size() : pl.required_hosts.size();
      if (static_cast<size_t>(t.replicas) > allowed)
        return failAt(refs.spread_at, "tier '" + t.name + "' needs " + std::to_string(t.replicas) +
                                          " distinct hosts (spread: required) but only " +
                                          std::to_string(allowed) +
                                          (allowed == 1 ? " host is" : " hosts are") + " allowed");
    }
  }
  return Status::ok();
}

// Depth-first over `after:` edges in declaration order; the first edge back
// into the current path closes a cycle, reported as "a -> b -> a" at that edge.
Status checkAcyclic(const Draft& d) {
  const Policy& p = d.policy;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < p.tiers.size(); ++i) index.emplace(p.tiers[i].name, i);
  enum class Mark { kNew, kOnPath, kDone };
  std::vector<Mark> mark(p.tiers.size(), Mark::kNew);
  std::vector<size_t> path;
  std::function<Status(size_t)> visit = [&](size_t i) -> Status {
    mark[i] = Mark::kOnPath;
    path.push_back(i);
    const TierSpec& t = p.tiers[i];
    for (size_t k = 0; k < t.after.size(); ++k) {
      size_t j = index.at(t.after[k]);
      if (mark[j] == Mark::kOnPath) {
        auto start = std::find(path.begin(), path.end(), j);
        std::vector<std::string> names;
        for (auto it = start; it != path.end(); ++it) names.push_back(p.tiers[*it].name);
        names.push_back(p.tiers[j].name);
        return failAt(d.tier_refs[i].after_at[k], "cycle in after: " + joinNames(names, " -> "));
      }
      if (mark[j] == Mark::kNew) TW_RETURN_IF_ERROR(visit(j));
    }
    path.pop_back();
    mark[i] = Mark::kDone;
    return Status::ok();
  };
  for (size_t i = 0; i < p.tiers.size(); ++i)
    if (mark[i] == Mark::kNew) TW_RETURN_IF_ERROR(visit(i));
  return Status::ok();
}

// --------------------------------------------------------------- digests ---

constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

void fnvFeed(uint64_t* h, const std::string& bytes) {
  for (unsigned char c : bytes) {
    *h ^= c;
    *h *= kFnvPrime;
  }
}

std::string hex64(uint64_t v) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[static_cast<size_t>(i)] = kDigits[v & 0xf];
    v >>= 4;
  }
  return out;
}

}  // namespace

// ------------------------------------------------------------------ API ---

Result<Policy> parsePolicy(const std::vector<PolicyFile>& files,
                           const PolicyParseOptions& options) {
  Draft draft;
  std::set<std::string> names;
  for (const auto& file : files) {
    if (!names.insert(file.name).second)
      return Status(Code::kInvalidArgument, "policy file '" + file.name + "' is given twice",
                    SourceLocation{file.name, 0, 0});
    FileParser parser(file.name, &draft, options);
    TW_RETURN_IF_ERROR(parser.parse(file.content));
  }
  TW_RETURN_IF_ERROR(checkUniqueNames(draft));
  TW_RETURN_IF_ERROR(checkReferences(draft));
  TW_RETURN_IF_ERROR(checkAcyclic(draft));
  return std::move(draft.policy);
}

std::vector<PolicyFile> mergePolicyFiles(const std::vector<PolicyFile>& current,
                                         const std::vector<PolicyFile>& incoming) {
  std::map<std::string, PolicyFile> by_name;
  for (const auto& f : current) by_name[f.name] = f;
  for (const auto& f : incoming) by_name[f.name] = f;
  std::vector<PolicyFile> out;
  out.reserve(by_name.size());
  for (auto& [name, file] : by_name) out.push_back(std::move(file));
  return out;
}

namespace {

Result<PolicyFile> readOneFile(const std::filesystem::path& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > static_cast<uintmax_t>(kMaxPolicyFileBytes))
    return invalidArgument("policy file '" + path.string() + "' is too large (" +
                           std::to_string(size) + " bytes; at most 4 MiB)");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno;
    return invalidArgument("cannot read policy file '" + path.string() +
                           "': " + std::strerror(err));
  }
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) return invalidArgument("cannot read policy file '" + path.string() + "'");
  return PolicyFile{path.filename().string(), content.str()};
}

}  // namespace

Result<std::vector<PolicyFile>> readPolicyFiles(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    return invalidArgument("cannot read policy path '" + path + "': " + ec.message());
  if (!fs::exists(st)) return notFound("policy path '" + path + "' does not exist");
  if (fs::is_regular_file(st)) {
    Result<PolicyFile> file = readOneFile(path);
    if (!file) return file.status();
    return std::vector<PolicyFile>{std::move(file).value()};
  }
  if (!fs::is_directory(st))
    return invalidArgument("policy path '" + path + "' is neither a file nor a directory");
  std::vector<fs::path> found;
  fs::directory_iterator it(path, ec);
  if (ec) return invalidArgument("cannot read policy directory '" + path + "': " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const fs::path& p = it->path();
    std::string base = p.filename().string();
    std::string ext = p.extension().string();
    if (base.empty() || base[0] == '.') continue;  // editor and hidden files
    if (ext != ".yaml" && ext != ".yml") continue;
    std::error_code type_ec;
    if (!fs::is_regular_file(it->status(type_ec))) continue;
    found.push_back(p);
  }
  if (ec) return invalidArgument("cannot read policy directory '" + path + "': " + ec.message());
  if (found.empty()) return notFound("no *.yaml or *.yml files in policy directory '" + path + "'");
  std::sort(found.begin(), found.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  std::vector<PolicyFile> out;
  for (const auto& p : found) {
    Result<PolicyFile> file = readOneFile(p);
    if (!file) return file.status();
    out.push_back(std::move(file).value());
  }
  return out;
}

std::string digestOf(const std::vector<PolicyFile>& files) {
  // Two FNV-1a 64 hashes with different offset bases over the files sorted by
  // name, each part length-prefixed so that no two file sets share a stream.
  std::vector<const PolicyFile*> sorted;
  for (const auto& f : files) sorted.push_back(&f);
  std::sort(sorted.begin(), sorted.end(),
            [](const PolicyFile* a, const PolicyFile* b) { return a->name < b->name; });
  uint64_t a = 0xcbf29ce484222325ULL;  // the FNV-1a 64 offset basis
  uint64_t b = 0x84222325cbf29ce4ULL;
  for (const PolicyFile* f : sorted) {
    for (const std::string* part : {&f->name, &f->content}) {
      std::string len = std::to_string(part->size()) + ":";
      fnvFeed(&a, len);
      fnvFeed(&a, *part);
      fnvFeed(&b, *part);
      fnvFeed(&b, len);
    }
  }
  return hex64(a) + hex64(b);
}

}  // namespace tw
