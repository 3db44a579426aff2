// Internal to the policy parser, which is split by what it reads:
//   policy.cc         the API, the cross-file checks (second pass) and digests
//   policy_parser.cc  text helpers and FileParser's YAML plumbing (positions,
//                     mappings, scalars, durations, sizes, enums)
//   policy_hosts.cc   documents, `cluster:` and `hosts:`
//   policy_tiers.cc   `tiers:` and their sections (placement, restart, health,
//                     ports, storage, backup, address)
// Only these files include yaml-cpp; its exceptions stop in FileParser::parse.
// Not part of the library's interface: nothing outside common/src includes it.
#pragma once

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tw/policy.h"

namespace tw::policy_parser {

inline constexpr int kMaxReplicas = 1000;
inline constexpr Millis kMinBackupEveryMs = 60000;  // a backup copies a whole disk
inline constexpr int kMaxVcpus = 64;
inline constexpr int64_t kMinTierMemoryMib = 64;
inline constexpr int64_t kMaxMemoryMib = int64_t{4} * 1024 * 1024;  // 4 TiB
inline constexpr int64_t kMaxPolicyFileBytes = int64_t{4} * 1024 * 1024;
// Where fence commands went (the refusal of `fence: command` / `fence_command`).
inline constexpr const char* kFenceAgentsInstead =
    "a policy cannot carry commands. Define the command as a fence agent in the controller's "
    "configuration (--fence-agents FILE, see docs/policy.md) and name it here with "
    "fence: { agent: NAME }";
// What a tcp check expects in a greeting is a word or a line ("MariaDB",
// "SSH-2.0-"); the agent's probe reads at most 4 KiB of the greeting.
inline constexpr size_t kMaxHealthExpect = 256;

// ------------------------------------------------------------ text helpers ---

std::string joinNames(const std::vector<std::string>& names, const char* sep);
// [a-z][a-z0-9-]{0,62}
bool isValidName(const std::string& s);
// [a-z0-9][a-z0-9._-]*
bool isValidImage(const std::string& s);
// "1h", "2m", "3s" or "1500ms": the largest unit that divides the value.
std::string formatDuration(Millis ms);
std::optional<int64_t> parseInteger(const std::string& s);

// "[-]<digits>[.<digits>]<unit>" → value * the unit's factor. nullopt when the
// text does not have that shape; not_whole when the result has a fraction.
struct ScaledNumber {
  int64_t value = 0;
  bool negative = false;
  bool not_whole = false;
  bool too_large = false;
};
// Durations: ms, s, m, h, d.
std::optional<ScaledNumber> parseDurationText(const std::string& text);
// Sizes: MiB, GiB, TiB; a plain integer is a number of MiB.
std::optional<ScaledNumber> parseSizeText(const std::string& text);

// -------------------------------------------------------------- the draft ---

// A key/value pair of a YAML mapping, with the key as text.
struct Field {
  std::string key;
  YAML::Node key_node;
  YAML::Node value;
};

// Positions that the cross-file checks point at.
struct TierRefs {
  SourceLocation name_at;
  std::vector<SourceLocation> after_at;      // parallel to TierSpec::after
  std::vector<SourceLocation> preferred_at;  // parallel to placement.preferred_hosts
  std::vector<SourceLocation> required_at;   // parallel to placement.required_hosts
  SourceLocation spread_at;                  // known() only when written
};

// Everything read from all files, before the cross-file checks.
struct Draft {
  Policy policy;
  std::vector<TierRefs> tier_refs;           // parallel to policy.tiers
  std::vector<SourceLocation> host_name_at;  // parallel to policy.hosts
  std::optional<SourceLocation> cluster_at;
  int64_t vms = 0;  // the sum of policy.tiers' replicas
};

template <typename E>
using EnumNames = std::vector<std::pair<const char*, E>>;

// Reads one file into a Draft. One instance per file.
class FileParser {
 public:
  FileParser(std::string file, Draft* draft, const PolicyParseOptions& options)
      : file_(std::move(file)), draft_(draft), options_(options) {}

  Status parse(const std::string& content);

 private:
  // yaml-cpp 0.7 loops forever, allocating a null document per turn, on a
  // stream with a stray top-level ',' (jbeder/yaml-cpp#1040, fixed upstream
  // in 2024 after our Debian version). This pass walks the event stream and
  // refuses a document that starts where the previous one started (no
  // progress); only a stream that passes is handed to YAML::LoadAll.
  // Throws YAML::ParserException on syntax errors, like LoadAll.
  Status checkStreamProgresses(const std::string& content) const;

  // ---------------------------------------------------------- positions ---

  SourceLocation at(const YAML::Node& node) const;

  // The value's position; the key's when the value is empty (yaml-cpp marks an
  // implicit null at the next token, which would point at the wrong line).
  SourceLocation at(const Field& f) const;

  static Status fail(const SourceLocation& where, std::string message);

  static std::string describe(const YAML::Node& node);

  // --------------------------------------------------------- structure ---

  // The entries of a mapping, in document order. Refuses a node that is not a
  // mapping (an empty value counts as an empty mapping), duplicate keys, keys
  // that are not plain text and keys not in `allowed`. `what` names the
  // mapping in messages ("tier 'web'", "health of tier 'web'", "cluster").
  Status mapFields(const YAML::Node& node, const SourceLocation& where, const std::string& path,
                   const std::string& what, const std::vector<std::string>& allowed,
                   std::vector<Field>* out) const;

  // The items of a list; an empty value counts as an empty list.
  Status listItems(const Field& f, const std::string& path, std::vector<YAML::Node>* out) const;

  // ------------------------------------------------------------ values ---

  Status readString(const Field& f, const std::string& path, std::string* out) const;

  // `what`: "'name'" or "an item of 'after'".
  Status readName(const YAML::Node& node, const SourceLocation& where, const std::string& what,
                  std::string* out) const;

  Status readInt(const Field& f, const std::string& path, int64_t min, int64_t max,
                 int64_t* out) const;

  Status readInt(const Field& f, const std::string& path, int64_t min, int64_t max, int* out) const;

  // `positive`: zero is refused too.
  Status readDuration(const Field& f, const std::string& path, bool positive, Millis* out) const;

  Status readSize(const Field& f, const std::string& path, int64_t min_mib, int64_t* out) const;

  template <typename E>
  Status readEnum(const Field& f, const std::string& path, const EnumNames<E>& names,
                  E* out) const {
    if (f.value.IsScalar()) {
      for (const auto& [text, value] : names) {
        if (f.value.Scalar() == text) {
          *out = value;
          return Status::ok();
        }
      }
    }
    std::vector<std::string> options;
    for (const auto& entry : names) options.emplace_back(entry.first);
    return fail(at(f), "expected one of " + joinNames(options, ", ") + " for '" + path + "', got " +
                           describe(f.value));
  }

  // A list of names (tiers or hosts), each once.
  Status readNameList(const Field& f, const std::string& path, std::vector<std::string>* names,
                      std::vector<SourceLocation>* where) const;

  // ---------------------------------------------------------- documents ---

  Status parseDocument(const YAML::Node& doc);

  // ------------------------------------------------------------ cluster ---

  Status parseCluster(const Field& cluster);

  // -------------------------------------------------------------- hosts ---

  // The item's name when it has a valid one, for messages about its other keys.
  static std::string itemLabel(const YAML::Node& item, const char* kind, size_t ordinal);

  Status parseHost(const YAML::Node& item);

  // fence: none | libvirt | { agent: NAME }. The agent's command is the
  // controller's configuration; a policy only names it (the controller
  // refuses a name it does not define when the policy is applied).
  Status readFence(const Field& f, const std::string& label, HostSpec* h) const;

  Status parseCapacity(const Field& capacity, const std::string& label, HostSpec* h) const;

  // -------------------------------------------------------------- tiers ---

  Status parseTier(const YAML::Node& item);

  Status parsePlacement(const Field& placement, const std::string& label, PlacementSpec* p,
                        TierRefs* refs) const;

  Status parseRestart(const Field& restart, const std::string& label, RestartBudget* r) const;

  Status parseHealth(const Field& health, const std::string& label, HealthCheckSpec* h) const;

  Status parsePorts(const Field& ports, const std::string& label,
                    std::vector<ServicePort>* out) const;

  Status parseStorage(const Field& storage, const std::string& label, StorageSpec* s,
                      SourceLocation* where) const;

  Status parseBackup(const Field& backup, const std::string& label, BackupSpec* b,
                     SourceLocation* where) const;

  // `address: A/N` or `address: { ip: A/N, interface: IF }`.
  Status parseAddress(const Field& address, const std::string& label, FloatingAddressSpec* a) const;

  Status setAddress(const SourceLocation& where, const std::string& text, const std::string& label,
                    FloatingAddressSpec* a) const;

  std::string file_;
  Draft* draft_;
  PolicyParseOptions options_;
  size_t host_ordinal_ = 0;
  size_t tier_ordinal_ = 0;
};

}  // namespace tw::policy_parser
