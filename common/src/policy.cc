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

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

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

#include "tw/ip_prefix.h"
#include "tw/text.h"

namespace tw {
namespace {

constexpr int kMaxReplicas = 1000;
constexpr Millis kMinBackupEveryMs = 60000;  // a backup copies a whole disk
constexpr int kMaxVcpus = 64;
constexpr int64_t kMinTierMemoryMib = 64;
constexpr int64_t kMaxMemoryMib = int64_t{4} * 1024 * 1024;  // 4 TiB
constexpr int64_t kMaxPolicyFileBytes = int64_t{4} * 1024 * 1024;
// Where fence commands went (the refusal of `fence: command` / `fence_command`).
constexpr const char* kFenceAgentsInstead =
    "a policy cannot carry commands. Define the command as a fence agent in the controller's "
    "configuration (--fence-agents FILE, see docs/policy.md) and name it here with "
    "fence: { agent: NAME }";
// What a tcp check expects in a greeting is a word or a line ("MariaDB",
// "SSH-2.0-"); the agent's probe reads at most 4 KiB of the greeting.
constexpr size_t kMaxHealthExpect = 256;

// ------------------------------------------------------------ text helpers ---

std::string joinNames(const std::vector<std::string>& names, const char* sep) {
  std::string out;
  for (const auto& n : names) {
    if (!out.empty()) out += sep;
    out += n;
  }
  return out;
}

bool isLowerAlpha(char c) { return c >= 'a' && c <= 'z'; }
bool isDigit(char c) { return c >= '0' && c <= '9'; }

// [a-z][a-z0-9-]{0,62}
bool isValidName(const std::string& s) {
  if (s.empty() || s.size() > 63 || !isLowerAlpha(s[0])) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return isLowerAlpha(c) || isDigit(c) || c == '-'; });
}

// [a-z0-9][a-z0-9._-]*
bool isValidImage(const std::string& s) {
  if (s.empty() || s.size() > 128 || !(isLowerAlpha(s[0]) || isDigit(s[0]))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return isLowerAlpha(c) || isDigit(c) || c == '.' || c == '_' || c == '-';
  });
}

// "1h", "2m", "3s" or "1500ms": the largest unit that divides the value.
std::string formatDuration(Millis ms) {
  if (ms != 0 && ms % 3600000 == 0) return std::to_string(ms / 3600000) + "h";
  if (ms != 0 && ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::optional<int64_t> parseInteger(const std::string& s) {
  if (s.empty()) return std::nullopt;
  const char* begin = s.data();
  const char* end = s.data() + s.size();
  if (*begin == '+') ++begin;  // from_chars takes '-' but not '+'
  if (begin == end || (*begin == '-' && begin != s.data())) return std::nullopt;
  int64_t value = 0;
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

// "[-]<digits>[.<digits>]<unit>" → value * the unit's factor. nullopt when the
// text does not have that shape; not_whole when the result has a fraction.
struct ScaledNumber {
  int64_t value = 0;
  bool negative = false;
  bool not_whole = false;
  bool too_large = false;
};

std::optional<ScaledNumber> parseScaled(const std::string& text,
                                        const std::vector<std::pair<std::string, int64_t>>& units) {
  size_t i = 0;
  ScaledNumber out;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) {
    out.negative = text[i] == '-';
    ++i;
  }
  size_t int_begin = i;
  while (i < text.size() && isDigit(text[i])) ++i;
  std::string int_part = text.substr(int_begin, i - int_begin);
  std::string frac_part;
  if (i < text.size() && text[i] == '.') {
    ++i;
    size_t frac_begin = i;
    while (i < text.size() && isDigit(text[i])) ++i;
    frac_part = text.substr(frac_begin, i - frac_begin);
    if (frac_part.empty()) return std::nullopt;
  }
  if (int_part.empty()) return std::nullopt;
  std::string unit = text.substr(i);
  int64_t factor = 0;
  for (const auto& [name, f] : units)
    if (unit == name) factor = f;
  if (factor == 0) return std::nullopt;
  // Bound the digits so that the arithmetic below cannot overflow.
  int_part.erase(0, std::min(int_part.find_first_not_of('0'), int_part.size() - 1));
  if (int_part.size() > 12 || frac_part.size() > 6) {
    out.too_large = int_part.size() > 12;
    out.not_whole = !out.too_large;
    return out;
  }
  int64_t whole = std::stoll(int_part);
  int64_t frac = frac_part.empty() ? 0 : std::stoll(frac_part);
  int64_t frac_scale = 1;
  for (size_t k = 0; k < frac_part.size(); ++k) frac_scale *= 10;
  if (whole > std::numeric_limits<int64_t>::max() / factor / 2) {
    out.too_large = true;
    return out;
  }
  // factor <= 3.6e6 and frac < 1e6, so frac * factor fits.
  if ((frac * factor) % frac_scale != 0) out.not_whole = true;
  out.value = whole * factor + frac * factor / frac_scale;
  return out;
}

std::optional<ScaledNumber> parseDurationText(const std::string& text) {
  static const std::vector<std::pair<std::string, int64_t>> kUnits = {
      {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  return parseScaled(text, kUnits);
}

std::optional<ScaledNumber> parseSizeText(const std::string& text) {
  static const std::vector<std::pair<std::string, int64_t>> kUnits = {
      {"MiB", 1}, {"GiB", 1024}, {"TiB", 1024 * 1024}};
  if (auto plain = parseInteger(text)) {  // an integer is a number of MiB
    ScaledNumber n;
    n.negative = *plain < 0;
    n.value = *plain < 0 ? 1 : *plain;  // only "negative" matters then
    return n;
  }
  return parseScaled(text, kUnits);
}

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
  int64_t vms = 0;                           // the sum of policy.tiers' replicas
};

template <typename E>
using EnumNames = std::vector<std::pair<const char*, E>>;

// Reads one file into a Draft. One instance per file.
class FileParser {
 public:
  FileParser(std::string file, Draft* draft, const PolicyParseOptions& options)
      : file_(std::move(file)), draft_(draft), options_(options) {}

  Status parse(const std::string& content) {
    try {
      TW_RETURN_IF_ERROR(checkStreamProgresses(content));
      std::vector<YAML::Node> docs = YAML::LoadAll(content);
      for (const auto& doc : docs) TW_RETURN_IF_ERROR(parseDocument(doc));
      return Status::ok();
    } catch (const YAML::Exception& e) {
      SourceLocation where{file_, 0, 0};
      if (e.mark.line >= 0) where = {file_, e.mark.line + 1, e.mark.column + 1};
      // yaml-cpp quotes single bytes ("unknown escape character: \xc3"):
      // made valid UTF-8 here, where the message is made.
      return Status(Code::kInvalidArgument, "YAML syntax error: " + utf8Sanitize(e.msg), where);
    } catch (const std::exception& e) {
      return Status(Code::kInvalidArgument, std::string("cannot read YAML: ") + e.what(),
                    SourceLocation{file_, 0, 0});
    }
  }

 private:
  // yaml-cpp 0.7 loops forever, allocating a null document per turn, on a
  // stream with a stray top-level ',' (jbeder/yaml-cpp#1040, fixed upstream
  // in 2024 after our Debian version). This pass walks the event stream and
  // refuses a document that starts where the previous one started (no
  // progress); only a stream that passes is handed to YAML::LoadAll.
  // Throws YAML::ParserException on syntax errors, like LoadAll.
  Status checkStreamProgresses(const std::string& content) const {
    class DocumentStarts final : public YAML::EventHandler {
     public:
      void OnDocumentStart(const YAML::Mark& mark) override { start = mark; }
      void OnDocumentEnd() override {}
      void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
      void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
      void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    const std::string&) override {}
      void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                           YAML::EmitterStyle::value) override {}
      void OnSequenceEnd() override {}
      void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                      YAML::EmitterStyle::value) override {}
      void OnMapEnd() override {}
      YAML::Mark start = YAML::Mark::null_mark();
    };
    std::istringstream in(content);
    YAML::Parser parser(in);
    DocumentStarts handler;
    int previous_pos = -1;
    while (parser.HandleNextDocument(handler)) {
      const YAML::Mark& m = handler.start;
      if (m.pos == previous_pos) {
        // The whole character there, not its first byte.
        std::string token = m.pos >= 0 && static_cast<size_t>(m.pos) < content.size()
                                ? utf8FirstCharacter(std::string_view(content).substr(static_cast<size_t>(m.pos)))
                                : std::string("end of input");
        return fail({file_, m.line + 1, m.column + 1},
                    "YAML syntax error: unexpected '" + token + "'");
      }
      previous_pos = m.pos;
    }
    return Status::ok();
  }

  // ---------------------------------------------------------- positions ---

  SourceLocation at(const YAML::Node& node) const {
    YAML::Mark m = node.Mark();
    if (m.line < 0) return {file_, 0, 0};
    return {file_, m.line + 1, m.column + 1};
  }

  // The value's position; the key's when the value is empty (yaml-cpp marks an
  // implicit null at the next token, which would point at the wrong line).
  SourceLocation at(const Field& f) const {
    if (f.value.IsNull() || f.value.Mark().line < 0) return at(f.key_node);
    return at(f.value);
  }

  static Status fail(const SourceLocation& where, std::string message) {
    return Status(Code::kInvalidArgument, std::move(message), where);
  }

  static std::string describe(const YAML::Node& node) {
    switch (node.Type()) {
      case YAML::NodeType::Scalar:
        return quoteForMessage(node.Scalar(), 60);  // cut between characters
      case YAML::NodeType::Sequence:
        return "a list";
      case YAML::NodeType::Map:
        return "a mapping";
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined:
        return "nothing";
    }
    return "nothing";
  }

  // --------------------------------------------------------- structure ---

  // The entries of a mapping, in document order. Refuses a node that is not a
  // mapping (an empty value counts as an empty mapping), duplicate keys, keys
  // that are not plain text and keys not in `allowed`. `what` names the
  // mapping in messages ("tier 'web'", "health of tier 'web'", "cluster").
  Status mapFields(const YAML::Node& node, const SourceLocation& where, const std::string& path,
                   const std::string& what, const std::vector<std::string>& allowed,
                   std::vector<Field>* out) const {
    out->clear();
    if (node.IsNull()) return Status::ok();
    if (!node.IsMap())
      return fail(where, "expected a mapping for " + path + ", got " + describe(node));
    std::map<std::string, SourceLocation> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      // Copies: `it->` returns a temporary proxy that a reference would outlive.
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      if (!key.IsScalar())
        return fail(at(key), "expected a plain key in " + what + ", got " + describe(key));
      std::string name = key.Scalar();
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
        return fail(at(key), "unknown key '" + name + "' in " + what +
                                 " (expected one of: " + joinNames(allowed, ", ") + ")");
      auto [prev, inserted] = seen.emplace(name, at(key));
      if (!inserted)
        return fail(at(key), "duplicate key '" + name + "' in " + what + " (first at line " +
                                 std::to_string(prev->second.line) + ")");
      out->push_back(Field{name, key, value});
    }
    return Status::ok();
  }

  // The items of a list; an empty value counts as an empty list.
  Status listItems(const Field& f, const std::string& path, std::vector<YAML::Node>* out) const {
    out->clear();
    if (f.value.IsNull()) return Status::ok();
    if (!f.value.IsSequence())
      return fail(at(f), "expected a list for '" + path + "', got " + describe(f.value));
    for (auto it = f.value.begin(); it != f.value.end(); ++it) out->push_back(*it);
    return Status::ok();
  }

  // ------------------------------------------------------------ values ---

  Status readString(const Field& f, const std::string& path, std::string* out) const {
    if (!f.value.IsScalar())
      return fail(at(f), "expected a string for '" + path + "', got " + describe(f.value));
    *out = f.value.Scalar();
    return Status::ok();
  }

  // `what`: "'name'" or "an item of 'after'".
  Status readName(const YAML::Node& node, const SourceLocation& where, const std::string& what,
                  std::string* out) const {
    if (!node.IsScalar() || !isValidName(node.Scalar()))
      return fail(where, "expected a name for " + what +
                             " (a lowercase letter, then up to 62 lowercase letters, digits or "
                             "'-'), got " +
                             describe(node));
    *out = node.Scalar();
    return Status::ok();
  }

  Status readInt(const Field& f, const std::string& path, int64_t min, int64_t max,
                 int64_t* out) const {
    std::optional<int64_t> v;
    if (f.value.IsScalar()) v = parseInteger(f.value.Scalar());
    if (!v) return fail(at(f), "expected an integer for '" + path + "', got " + describe(f.value));
    if (*v < min || *v > max) {
      std::string range;
      if (max == std::numeric_limits<int>::max())
        range = "at least " + std::to_string(min);
      else
        range = "between " + std::to_string(min) + " and " + std::to_string(max);
      return fail(at(f), "'" + path + "' must be " + range + ", got " + std::to_string(*v));
    }
    *out = *v;
    return Status::ok();
  }

  Status readInt(const Field& f, const std::string& path, int64_t min, int64_t max,
                 int* out) const {
    int64_t v = 0;
    TW_RETURN_IF_ERROR(readInt(f, path, min, max, &v));
    *out = static_cast<int>(v);
    return Status::ok();
  }

  // `positive`: zero is refused too.
  Status readDuration(const Field& f, const std::string& path, bool positive, Millis* out) const {
    std::optional<ScaledNumber> n;
    if (f.value.IsScalar()) n = parseDurationText(f.value.Scalar());
    if (!n)
      return fail(at(f), "expected a duration like 1500ms, 3s, 2m or 1h for '" + path + "', got " +
                             describe(f.value));
    if (n->too_large) return fail(at(f), "'" + path + "' is too long: " + describe(f.value));
    if (n->not_whole)
      return fail(
          at(f), "'" + path + "' must be a whole number of milliseconds, got " + describe(f.value));
    if (n->negative && n->value != 0)
      return fail(at(f), "'" + path + "' must not be negative, got " + describe(f.value));
    if (positive && n->value == 0)
      return fail(at(f), "'" + path + "' must be longer than zero, got " + describe(f.value));
    *out = n->value;
    return Status::ok();
  }

  Status readSize(const Field& f, const std::string& path, int64_t min_mib, int64_t* out) const {
    std::optional<ScaledNumber> n;
    if (f.value.IsScalar()) n = parseSizeText(f.value.Scalar());
    if (!n)
      return fail(at(f),
                  "expected a size like 512MiB or 4GiB (or an integer number of MiB) "
                  "for '" +
                      path + "', got " + describe(f.value));
    if (n->not_whole)
      return fail(at(f), "'" + path + "' must be a whole number of MiB, got " + describe(f.value));
    if (n->too_large || (!n->negative && n->value > kMaxMemoryMib))
      return fail(at(f), "'" + path + "' must be at most 4TiB, got " + describe(f.value));
    if (n->negative && n->value != 0)
      return fail(at(f), "'" + path + "' must not be negative, got " + describe(f.value));
    if (n->value < min_mib)
      return fail(at(f), "'" + path + "' must be at least " + std::to_string(min_mib) +
                             "MiB, got " + describe(f.value));
    *out = n->value;
    return Status::ok();
  }

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
                      std::vector<SourceLocation>* where) const {
    std::vector<YAML::Node> items;
    TW_RETURN_IF_ERROR(listItems(f, path, &items));
    names->clear();
    where->clear();
    for (const auto& item : items) {
      std::string name;
      TW_RETURN_IF_ERROR(readName(item, at(item), "an item of '" + path + "'", &name));
      auto dup = std::find(names->begin(), names->end(), name);
      if (dup != names->end())
        return fail(at(item), "'" + name + "' is listed twice in '" + path + "'");
      names->push_back(name);
      where->push_back(at(item));
    }
    return Status::ok();
  }

  // ---------------------------------------------------------- documents ---

  Status parseDocument(const YAML::Node& doc) {
    if (doc.IsNull()) return Status::ok();  // an empty file or document is fine
    if (!doc.IsMap())
      return fail(at(doc),
                  "expected a mapping with cluster, hosts or tiers at the top level, "
                  "got " +
                      describe(doc));
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(mapFields(doc, at(doc), "the top level", "the top level",
                                 {"cluster", "hosts", "tiers"}, &fields));
    for (const auto& f : fields) {
      if (f.key == "cluster") {
        TW_RETURN_IF_ERROR(parseCluster(f));
      } else if (f.key == "hosts") {
        std::vector<YAML::Node> items;
        TW_RETURN_IF_ERROR(listItems(f, "hosts", &items));
        for (const auto& item : items) {
          if (draft_->policy.hosts.size() >= static_cast<size_t>(kMaxPolicyHosts))
            return fail(at(item), "too many hosts: a policy declares at most " +
                                      std::to_string(kMaxPolicyHosts) + " hosts (over all its files)");
          TW_RETURN_IF_ERROR(parseHost(item));
        }
      } else if (f.key == "tiers") {
        std::vector<YAML::Node> items;
        TW_RETURN_IF_ERROR(listItems(f, "tiers", &items));
        for (const auto& item : items) {
          if (draft_->policy.tiers.size() >= static_cast<size_t>(kMaxPolicyTiers))
            return fail(at(item), "too many tiers: a policy declares at most " +
                                      std::to_string(kMaxPolicyTiers) + " tiers (over all its files)");
          TW_RETURN_IF_ERROR(parseTier(item));
          draft_->vms += draft_->policy.tiers.back().replicas;
          if (draft_->vms > kMaxPolicyVms)
            return fail(at(item), "too many VMs: with tier '" + draft_->policy.tiers.back().name +
                                      "' the tiers' replicas add up to " + std::to_string(draft_->vms) +
                                      "; a policy runs at most " + std::to_string(kMaxPolicyVms) +
                                      " VMs (over all its files)");
        }
      }
    }
    return Status::ok();
  }

  // ------------------------------------------------------------ cluster ---

  Status parseCluster(const Field& cluster) {
    if (draft_->cluster_at)
      return fail(at(cluster.key_node), "'cluster' may be declared only once (first at " +
                                            draft_->cluster_at->str() + ")");
    draft_->cluster_at = at(cluster.key_node);
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(mapFields(cluster.value, at(cluster), "'cluster'", "cluster",
                                 {"heartbeat_interval", "suspect_after_missed", "dead_after",
                                  "lease", "fence_margin", "tier_order_timeout", "n_plus_one",
                                  "event_retention", "event_retention_rows"},
                                 &fields));
    ClusterSettings& s = draft_->policy.settings;
    std::map<std::string, SourceLocation> seen;
    for (const auto& f : fields) {
      seen[f.key] = at(f);
      if (f.key == "heartbeat_interval") {
        TW_RETURN_IF_ERROR(readDuration(f, f.key, true, &s.heartbeat_interval_ms));
      } else if (f.key == "suspect_after_missed") {
        TW_RETURN_IF_ERROR(readInt(f, f.key, 1, 1000, &s.suspect_after_missed));
      } else if (f.key == "dead_after") {
        TW_RETURN_IF_ERROR(readDuration(f, f.key, true, &s.dead_after_ms));
      } else if (f.key == "lease") {
        TW_RETURN_IF_ERROR(readDuration(f, f.key, true, &s.lease_ms));
      } else if (f.key == "fence_margin") {
        TW_RETURN_IF_ERROR(readDuration(f, f.key, false, &s.fence_margin_ms));
      } else if (f.key == "tier_order_timeout") {
        TW_RETURN_IF_ERROR(readDuration(f, f.key, true, &s.tier_order_timeout_ms));
      } else if (f.key == "event_retention") {
        TW_RETURN_IF_ERROR(readDuration(f, f.key, true, &s.event_retention_ms));
      } else if (f.key == "event_retention_rows") {
        TW_RETURN_IF_ERROR(readInt(f, f.key, 1000, 1000000, &s.event_retention_rows));
      } else if (f.key == "n_plus_one") {
        TW_RETURN_IF_ERROR(readEnum<NPlusOneMode>(f, f.key,
                                                  {{"refuse", NPlusOneMode::kRefuse},
                                                   {"warn", NPlusOneMode::kWarn},
                                                   {"off", NPlusOneMode::kOff}},
                                                  &s.n_plus_one));
      }
    }
    // Point at what was written: the longer setting if given, else the interval.
    auto pick = [&](const char* key) {
      if (seen.count(key)) return seen[key];
      if (seen.count("heartbeat_interval")) return seen["heartbeat_interval"];
      return at(cluster.key_node);
    };
    for (auto [key, value] : {std::pair<const char*, Millis>{"dead_after", s.dead_after_ms},
                              std::pair<const char*, Millis>{"lease", s.lease_ms}}) {
      if (value <= s.heartbeat_interval_ms)
        return fail(pick(key), std::string("'") + key + "' (" + formatDuration(value) +
                                   ") must be longer than 'heartbeat_interval' (" +
                                   formatDuration(s.heartbeat_interval_ms) + ")");
    }
    return Status::ok();
  }

  // -------------------------------------------------------------- hosts ---

  // The item's name when it has a valid one, for messages about its other keys.
  static std::string itemLabel(const YAML::Node& item, const char* kind, size_t ordinal) {
    if (item.IsMap()) {
      for (auto it = item.begin(); it != item.end(); ++it) {
        if (it->first.IsScalar() && it->first.Scalar() == "name" && it->second.IsScalar() &&
            isValidName(it->second.Scalar()))
          return std::string(kind) + " '" + it->second.Scalar() + "'";
      }
    }
    return std::string(kind) + " #" + std::to_string(ordinal);
  }

  Status parseHost(const YAML::Node& item) {
    HostSpec h;
    h.where = at(item);
    std::string label = itemLabel(item, "host", ++host_ordinal_);
    if (!item.IsMap())
      return fail(h.where, "expected a mapping for " + label + " (name, uri, role, ...), got " +
                               describe(item));
    std::vector<std::string> keys = {"name", "uri", "role", "capacity", "fence"};
    if (options_.legacy_fence_command) {
      keys.emplace_back("fence_command");
    } else {
      // Said before the unknown-key check, so that a policy written for fence
      // commands learns where they went.
      for (auto it = item.begin(); it != item.end(); ++it) {
        const YAML::Node key = it->first;
        if (key.IsScalar() && key.Scalar() == "fence_command")
          return fail(at(key), "'fence_command' (of " + label + ") is no longer supported: " +
                                   kFenceAgentsInstead);
      }
    }
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(mapFields(item, h.where, label, label, keys, &fields));
    SourceLocation name_at;
    std::optional<SourceLocation> fence_at;
    bool fence_set = false;
    for (const auto& f : fields) {
      if (f.key == "name") {
        name_at = at(f);
        TW_RETURN_IF_ERROR(readName(f.value, name_at, "'name'", &h.name));
      } else if (f.key == "uri") {
        TW_RETURN_IF_ERROR(readString(f, "uri", &h.uri));
        if (h.uri.find("://") == std::string::npos)
          return fail(at(f),
                      "expected a libvirt URI like qemu+ssh://host/system for 'uri', "
                      "got " +
                          describe(f.value));
      } else if (f.key == "role") {
        TW_RETURN_IF_ERROR(readEnum<HostRole>(
            f, "role", {{"active", HostRole::kActive}, {"spare", HostRole::kSpare}}, &h.role));
      } else if (f.key == "capacity") {
        TW_RETURN_IF_ERROR(parseCapacity(f, label, &h));
      } else if (f.key == "fence") {
        fence_set = true;
        fence_at = at(f);
        TW_RETURN_IF_ERROR(readFence(f, label, &h));
      } else if (f.key == "fence_command") {  // legacy_fence_command only
        h.fence_legacy_command = true;
      }
    }
    if (h.name.empty()) return fail(h.where, label + " has no 'name'");
    if (h.fence_legacy_command) fence_set = false;  // its command is not run: the default
    if (!fence_set) h.fence = h.uri.empty() ? FenceMethod::kNone : FenceMethod::kLibvirt;
    if (h.fence == FenceMethod::kLibvirt && h.uri.empty())
      return fail(*fence_at, "fence: libvirt needs a 'uri' for host '" + h.name + "'");
    draft_->policy.hosts.push_back(std::move(h));
    draft_->host_name_at.push_back(name_at);
    return Status::ok();
  }

  // fence: none | libvirt | { agent: NAME }. The agent's command is the
  // controller's configuration; a policy only names it (the controller
  // refuses a name it does not define when the policy is applied).
  Status readFence(const Field& f, const std::string& label, HostSpec* h) const {
    if (f.value.IsMap()) {
      std::vector<Field> fields;
      TW_RETURN_IF_ERROR(
          mapFields(f.value, at(f), "'fence'", "fence of " + label, {"agent"}, &fields));
      if (fields.empty())
        return fail(at(f), "fence of " + label + " names no agent: write fence: { agent: NAME }");
      const Field& agent = fields.front();
      h->fence_agent_at = at(agent);
      TW_RETURN_IF_ERROR(readName(agent.value, at(agent), "'fence.agent'", &h->fence_agent));
      h->fence = FenceMethod::kAgent;
      return Status::ok();
    }
    if (f.value.IsScalar() && f.value.Scalar() == "command") {
      if (options_.legacy_fence_command) {
        h->fence_legacy_command = true;
        return Status::ok();
      }
      return fail(at(f), "fence: command (of " + label + ") is no longer supported: " +
                             kFenceAgentsInstead);
    }
    if (f.value.IsScalar() && f.value.Scalar() == "none") {
      h->fence = FenceMethod::kNone;
    } else if (f.value.IsScalar() && f.value.Scalar() == "libvirt") {
      h->fence = FenceMethod::kLibvirt;
    } else {
      return fail(at(f), "expected none, libvirt or { agent: NAME } for 'fence', got " +
                             describe(f.value));
    }
    return Status::ok();
  }

  Status parseCapacity(const Field& capacity, const std::string& label, HostSpec* h) const {
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(mapFields(capacity.value, at(capacity), "'capacity'", "capacity of " + label,
                                 {"cpus", "memory"}, &fields));
    for (const auto& f : fields) {
      if (f.key == "cpus") {
        TW_RETURN_IF_ERROR(readInt(f, "capacity.cpus", 1, 4096, &h->cpus));
      } else if (f.key == "memory") {
        TW_RETURN_IF_ERROR(readSize(f, "capacity.memory", kMinTierMemoryMib, &h->memory_mib));
      }
    }
    return Status::ok();
  }

  // -------------------------------------------------------------- tiers ---

  Status parseTier(const YAML::Node& item) {
    TierSpec t;
    TierRefs refs;
    t.where = at(item);
    std::string label = itemLabel(item, "tier", ++tier_ordinal_);
    if (!item.IsMap())
      return fail(t.where, "expected a mapping for " + label +
                               " (name, image, replicas, ...), "
                               "got " +
                               describe(item));
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(
        mapFields(item, t.where, label, label,
                  {"name", "image", "replicas", "vcpus", "memory", "after", "priority",
                   "min_healthy", "placement", "restart", "health", "ports", "storage",
                   "backup", "address"},
                  &fields));
    std::optional<SourceLocation> min_healthy_at;
    std::optional<SourceLocation> backup_at;
    bool has_image = false;
    for (const auto& f : fields) {
      if (f.key == "name") {
        refs.name_at = at(f);
        TW_RETURN_IF_ERROR(readName(f.value, refs.name_at, "'name'", &t.name));
      } else if (f.key == "image") {
        has_image = true;
        if (!f.value.IsScalar() || !isValidImage(f.value.Scalar()))
          return fail(at(f),
                      "expected an image name for 'image' (lowercase letters, digits, "
                      "'.', '_' or '-'), got " +
                          describe(f.value));
        t.image = f.value.Scalar();
      } else if (f.key == "replicas") {
        TW_RETURN_IF_ERROR(readInt(f, "replicas", 0, kMaxReplicas, &t.replicas));
      } else if (f.key == "vcpus") {
        TW_RETURN_IF_ERROR(readInt(f, "vcpus", 1, kMaxVcpus, &t.vcpus));
      } else if (f.key == "memory") {
        int64_t mib = 0;
        TW_RETURN_IF_ERROR(readSize(f, "memory", kMinTierMemoryMib, &mib));
        t.memory_mib = static_cast<int>(mib);
      } else if (f.key == "after") {
        TW_RETURN_IF_ERROR(readNameList(f, "after", &t.after, &refs.after_at));
      } else if (f.key == "priority") {
        TW_RETURN_IF_ERROR(readInt(f, "priority", -1000, 1000, &t.priority));
      } else if (f.key == "min_healthy") {
        min_healthy_at = at(f);
        TW_RETURN_IF_ERROR(readInt(f, "min_healthy", 0, kMaxReplicas, &t.min_healthy));
      } else if (f.key == "placement") {
        TW_RETURN_IF_ERROR(parsePlacement(f, label, &t.placement, &refs));
      } else if (f.key == "restart") {
        TW_RETURN_IF_ERROR(parseRestart(f, label, &t.restart));
      } else if (f.key == "health") {
        TW_RETURN_IF_ERROR(parseHealth(f, label, &t.health));
      } else if (f.key == "ports") {
        TW_RETURN_IF_ERROR(parsePorts(f, label, &t.ports));
      } else if (f.key == "storage") {
        TW_RETURN_IF_ERROR(parseStorage(f, label, &t.storage, &t.storage_at));
      } else if (f.key == "backup") {
        backup_at = at(f);
        TW_RETURN_IF_ERROR(parseBackup(f, label, &t.backup, &t.backup_to_at));
      } else if (f.key == "address") {
        t.address_at = at(f);
        TW_RETURN_IF_ERROR(parseAddress(f, label, &t.address));
      }
    }
    if (backup_at && t.storage.kind != StorageKind::kShared)
      return fail(*backup_at, "'backup' of " + label +
                                  " needs shared storage (storage: { type: shared, ... }): an "
                                  "ephemeral disk is rebuilt from the image and holds nothing to "
                                  "back up");
    if (t.name.empty()) return fail(t.where, label + " has no 'name'");
    if (!has_image) return fail(t.where, "tier '" + t.name + "' has no 'image'");
    if (min_healthy_at && t.min_healthy > t.replicas)
      return fail(*min_healthy_at, "'min_healthy' (" + std::to_string(t.min_healthy) +
                                       ") of tier '" + t.name + "' must not exceed 'replicas' (" +
                                       std::to_string(t.replicas) + ")");
    if (t.address.set() && t.ports.empty())
      return fail(t.address_at, "tier '" + t.name + "' has an 'address' but no 'ports' to forward on it");
    draft_->policy.tiers.push_back(std::move(t));
    draft_->tier_refs.push_back(std::move(refs));
    return Status::ok();
  }

  Status parsePlacement(const Field& placement, const std::string& label, PlacementSpec* p,
                        TierRefs* refs) const {
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(mapFields(placement.value, at(placement), "'placement'",
                                 "placement of " + label,
                                 {"spread", "preferred_hosts", "required_hosts"}, &fields));
    for (const auto& f : fields) {
      if (f.key == "spread") {
        refs->spread_at = at(f);
        TW_RETURN_IF_ERROR(readEnum<SpreadMode>(f, "placement.spread",
                                                {{"required", SpreadMode::kRequired},
                                                 {"preferred", SpreadMode::kPreferred},
                                                 {"none", SpreadMode::kNone}},
                                                &p->spread));
      } else if (f.key == "preferred_hosts") {
        TW_RETURN_IF_ERROR(
            readNameList(f, "placement.preferred_hosts", &p->preferred_hosts, &refs->preferred_at));
      } else if (f.key == "required_hosts") {
        TW_RETURN_IF_ERROR(
            readNameList(f, "placement.required_hosts", &p->required_hosts, &refs->required_at));
      }
    }
    return Status::ok();
  }

  Status parseRestart(const Field& restart, const std::string& label, RestartBudget* r) const {
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(mapFields(restart.value, at(restart), "'restart'", "restart of " + label,
                                 {"restarts", "window", "relocations", "backoff", "backoff_max"},
                                 &fields));
    std::map<std::string, SourceLocation> seen;
    for (const auto& f : fields) {
      seen[f.key] = at(f);
      const std::string path = "restart." + f.key;
      if (f.key == "restarts") {
        TW_RETURN_IF_ERROR(readInt(f, path, 0, 1000, &r->restarts));
      } else if (f.key == "window") {
        TW_RETURN_IF_ERROR(readDuration(f, path, true, &r->window_ms));
      } else if (f.key == "relocations") {
        TW_RETURN_IF_ERROR(readInt(f, path, 0, 1000, &r->relocations));
      } else if (f.key == "backoff") {
        TW_RETURN_IF_ERROR(readDuration(f, path, false, &r->backoff_initial_ms));
      } else if (f.key == "backoff_max") {
        TW_RETURN_IF_ERROR(readDuration(f, path, false, &r->backoff_max_ms));
      }
    }
    if (r->backoff_max_ms < r->backoff_initial_ms)
      return fail(seen.count("backoff_max") ? seen["backoff_max"] : seen["backoff"],
                  "'restart.backoff_max' (" + formatDuration(r->backoff_max_ms) +
                      ") must not be shorter than 'restart.backoff' (" +
                      formatDuration(r->backoff_initial_ms) + ")");
    return Status::ok();
  }

  Status parseHealth(const Field& health, const std::string& label, HealthCheckSpec* h) const {
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(mapFields(health.value, at(health), "'health'", "health of " + label,
                                 {"type", "port", "path", "expect_status", "expect", "interval",
                                  "timeout", "failures", "grace"},
                                 &fields));
    std::map<std::string, SourceLocation> seen;
    for (const auto& f : fields) {
      seen[f.key] = at(f);
      const std::string path = "health." + f.key;
      if (f.key == "type") {
        TW_RETURN_IF_ERROR(readEnum<HealthKind>(
            f, path,
            {{"none", HealthKind::kNone}, {"tcp", HealthKind::kTcp}, {"http", HealthKind::kHttp}},
            &h->kind));
      } else if (f.key == "port") {
        TW_RETURN_IF_ERROR(readInt(f, path, 1, 65535, &h->port));
      } else if (f.key == "path") {
        TW_RETURN_IF_ERROR(readString(f, path, &h->path));
        if (h->path.empty() || h->path[0] != '/')
          return fail(at(f), "'health.path' must start with '/', got " + describe(f.value));
      } else if (f.key == "expect_status") {
        TW_RETURN_IF_ERROR(readInt(f, path, 100, 599, &h->expect_status));
      } else if (f.key == "expect") {
        TW_RETURN_IF_ERROR(readString(f, path, &h->expect));
        // Empty would pass on any open connection: say so rather than accept it.
        if (h->expect.empty())
          return fail(at(f),
                      "'health.expect' must not be empty (leave it out to accept any "
                      "open connection)");
        if (h->expect.size() > kMaxHealthExpect)
          return fail(at(f), "'health.expect' must be at most " + std::to_string(kMaxHealthExpect) +
                                 " bytes, got " + std::to_string(h->expect.size()));
      } else if (f.key == "interval") {
        TW_RETURN_IF_ERROR(readDuration(f, path, true, &h->interval_ms));
      } else if (f.key == "timeout") {
        TW_RETURN_IF_ERROR(readDuration(f, path, true, &h->timeout_ms));
      } else if (f.key == "failures") {
        TW_RETURN_IF_ERROR(readInt(f, path, 1, 1000, &h->failures));
      } else if (f.key == "grace") {
        TW_RETURN_IF_ERROR(readDuration(f, path, false, &h->grace_ms));
      }
    }
    if (fields.empty()) return Status::ok();
    const char* kind = toString(h->kind);
    SourceLocation kind_at = seen.count("type") ? seen["type"] : at(health);
    if (h->kind != HealthKind::kNone && !seen.count("port"))
      return fail(kind_at, std::string("health type ") + kind + " of " + label + " needs a port");
    if (h->kind == HealthKind::kNone) {
      for (const char* key : {"port", "path", "expect_status"}) {
        if (seen.count(key))
          return fail(seen[key], std::string("'health.") + key + "' of " + label +
                                     " is only used with type tcp or http (type is none)");
      }
    }
    if (h->kind != HealthKind::kTcp && seen.count("expect"))
      return fail(seen["expect"], std::string("'health.expect' of ") + label +
                                      " is only used with type tcp (type is " + kind + ")");
    if (h->kind == HealthKind::kTcp) {
      for (const char* key : {"path", "expect_status"}) {
        if (seen.count(key))
          return fail(seen[key], std::string("'health.") + key + "' of " + label +
                                     " is only used with type http (type is tcp)");
      }
    }
    if (h->timeout_ms > h->interval_ms)
      return fail(seen.count("timeout") ? seen["timeout"] : seen["interval"],
                  "'health.timeout' (" + formatDuration(h->timeout_ms) + ") of " + label +
                      " must not exceed 'health.interval' (" + formatDuration(h->interval_ms) +
                      ")");
    return Status::ok();
  }

  Status parsePorts(const Field& ports, const std::string& label,
                    std::vector<ServicePort>* out) const {
    std::vector<YAML::Node> items;
    TW_RETURN_IF_ERROR(listItems(ports, "ports", &items));
    std::map<std::string, SourceLocation> by_name, by_port;
    for (const auto& item : items) {
      ServicePort p;
      SourceLocation item_at = at(item);
      if (!item.IsMap())
        return fail(item_at, "expected a mapping for a port of " + label +
                                 " ({ name: http, port: 80 }), got " + describe(item));
      std::vector<Field> fields;
      TW_RETURN_IF_ERROR(mapFields(item, item_at, "a port", "a port of " + label,
                                   {"name", "port", "protocol"}, &fields));
      SourceLocation name_at, port_at;
      for (const auto& f : fields) {
        if (f.key == "name") {
          name_at = at(f);
          TW_RETURN_IF_ERROR(readName(f.value, name_at, "'ports.name'", &p.name));
        } else if (f.key == "port") {
          port_at = at(f);
          TW_RETURN_IF_ERROR(readInt(f, "ports.port", 1, 65535, &p.port));
        } else if (f.key == "protocol") {
          TW_RETURN_IF_ERROR(readEnum<std::string>(f, "ports.protocol",
                                                   {{"tcp", "tcp"}, {"udp", "udp"}}, &p.protocol));
        }
      }
      if (p.name.empty()) return fail(item_at, "a port of " + label + " has no 'name'");
      if (p.port == 0) return fail(item_at, "port '" + p.name + "' of " + label + " has no 'port'");
      auto [prev_name, name_new] = by_name.emplace(p.name, name_at);
      if (!name_new)
        return fail(name_at, "duplicate port name '" + p.name + "' in " + label + " (first at " +
                                 prev_name->second.str() + ")");
      std::string key = std::to_string(p.port) + "/" + p.protocol;
      auto [prev_port, port_new] = by_port.emplace(key, port_at);
      if (!port_new)
        return fail(port_at, "duplicate port " + key + " in " + label + " (first at " +
                                 prev_port->second.str() + ")");
      out->push_back(std::move(p));
    }
    return Status::ok();
  }

  Status parseStorage(const Field& storage, const std::string& label, StorageSpec* s,
                      SourceLocation* where) const {
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(mapFields(storage.value, at(storage), "'storage'", "storage of " + label,
                                 {"type", "path", "pool"}, &fields));
    std::optional<SourceLocation> path_at;
    std::optional<SourceLocation> pool_at;
    for (const auto& f : fields) {
      if (f.key == "type") {
        TW_RETURN_IF_ERROR(readEnum<StorageKind>(
            f, "storage.type",
            {{"ephemeral", StorageKind::kEphemeral}, {"shared", StorageKind::kShared}}, &s->kind));
      } else if (f.key == "path") {
        path_at = *where = at(f);
        TW_RETURN_IF_ERROR(readString(f, "storage.path", &s->path));
      } else if (f.key == "pool") {
        pool_at = *where = at(f);
        TW_RETURN_IF_ERROR(readString(f, "storage.pool", &s->pool));
      }
    }
    if (s->kind == StorageKind::kEphemeral && path_at)
      return fail(*path_at, "'storage.path' of " + label + " is only used with type: shared");
    if (s->kind == StorageKind::kEphemeral && pool_at)
      return fail(*pool_at, "'storage.pool' of " + label + " is only used with type: shared");
    if (path_at && pool_at)
      return fail(*pool_at, "shared storage of " + label +
                                " takes a 'path' or a 'pool', not both");
    if (pool_at) {
      const bool name_ok = !s->pool.empty() && s->pool.size() <= 64 &&
                           s->pool.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                     "0123456789_.-") == std::string::npos &&
                           s->pool[0] != '.' && s->pool[0] != '-';
      if (!name_ok)
        return fail(*pool_at, "'storage.pool' of " + label +
                                  " must be a libvirt pool name (letters, digits, '_', '.', '-'; at "
                                  "most 64), got '" + s->pool + "'");
      return Status::ok();
    }
    if (s->kind == StorageKind::kShared && (s->path.empty() || s->path[0] != '/'))
      return fail(path_at ? *path_at : at(storage), "shared storage of " + label +
                                                        " needs an absolute 'path' (a directory "
                                                        "every host sees) or a 'pool', got " +
                                                        (path_at ? "'" + s->path + "'" : "none"));
    return Status::ok();
  }

  Status parseBackup(const Field& backup, const std::string& label, BackupSpec* b,
                     SourceLocation* where) const {
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(mapFields(backup.value, at(backup), "'backup'", "backup of " + label,
                                 {"every", "keep", "to"}, &fields));
    std::optional<SourceLocation> to_at;
    bool has_every = false;
    b->keep = 24;
    for (const auto& f : fields) {
      if (f.key == "every") {
        has_every = true;
        TW_RETURN_IF_ERROR(readDuration(f, "backup.every", true, &b->every_ms));
        if (b->every_ms < kMinBackupEveryMs)
          return fail(at(f), "'backup.every' of " + label + " must be at least 1m, got " +
                                 describe(f.value));
      } else if (f.key == "keep") {
        TW_RETURN_IF_ERROR(readInt(f, "backup.keep", 1, 10000, &b->keep));
      } else if (f.key == "to") {
        to_at = *where = at(f);
        TW_RETURN_IF_ERROR(readString(f, "backup.to", &b->to));
      }
    }
    if (!has_every) return fail(at(backup), "'backup' of " + label + " has no 'every'");
    if (!to_at) return fail(at(backup), "'backup' of " + label + " has no 'to'");
    if (b->to.empty() || b->to[0] != '/' || b->to.find("/../") != std::string::npos ||
        b->to.ends_with("/.."))
      return fail(*to_at, "'backup.to' of " + label +
                              " must be an absolute directory path (a DR place every host "
                              "sees), got '" + b->to + "'");
    while (b->to.size() > 1 && b->to.back() == '/') b->to.pop_back();
    return Status::ok();
  }

  // `address: A/N` or `address: { ip: A/N, interface: IF }`.
  Status parseAddress(const Field& address, const std::string& label, FloatingAddressSpec* a) const {
    std::string text;
    if (address.value.IsScalar()) {
      TW_RETURN_IF_ERROR(readString(address, "address", &text));
      return setAddress(at(address), text, label, a);
    }
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(mapFields(address.value, at(address), "'address'", "address of " + label,
                                 {"ip", "interface"}, &fields));
    bool has_ip = false;
    for (const auto& f : fields) {
      if (f.key == "ip") {
        has_ip = true;
        TW_RETURN_IF_ERROR(readString(f, "address.ip", &text));
        TW_RETURN_IF_ERROR(setAddress(at(f), text, label, a));
      } else if (f.key == "interface") {
        TW_RETURN_IF_ERROR(readString(f, "address.interface", &a->interface));
        if (!isValidInterfaceName(a->interface))
          return fail(at(f), "expected a network interface name for 'address.interface' of " + label +
                                 " (1 to 15 characters, no '/', ':' or spaces), got " +
                                 quoteForMessage(a->interface));
      }
    }
    if (!has_ip) return fail(at(address), "the address of " + label + " has no 'ip'");
    return Status::ok();
  }

  Status setAddress(const SourceLocation& where, const std::string& text, const std::string& label,
                    FloatingAddressSpec* a) const {
    std::optional<IpPrefix> p = parseIpPrefix(text);
    if (!p)
      return fail(where, "expected an IPv4 or IPv6 address with a prefix length for the address of " +
                             label + " (like 10.213.0.100/24 or fd00::100/64), got " +
                             quoteForMessage(text));
    bool unicast = true;
    if (!p->v6) {
      const uint32_t v = (uint32_t{p->bytes[0]} << 24) | (uint32_t{p->bytes[1]} << 16) |
                         (uint32_t{p->bytes[2]} << 8) | p->bytes[3];
      const uint32_t host_mask = p->prefix == 0 ? 0xffffffffu : (0xffffffffu >> p->prefix);
      unicast = v != 0 && p->bytes[0] != 127 && p->bytes[0] < 224 &&
                (p->prefix >= 31 || ((v & host_mask) != 0 && (v & host_mask) != host_mask));
    } else {
      unicast = p->ip() != "::" && p->ip() != "::1" && p->bytes[0] != 0xff;
    }
    if (!unicast)
      return fail(where, "the address of " + label +
                             " must be a unicast host address (not a network, broadcast, loopback "
                             "or multicast address), got " +
                             quoteForMessage(text));
    a->cidr = p->str();
    return Status::ok();
  }

  std::string file_;
  Draft* draft_;
  PolicyParseOptions options_;
  size_t host_ordinal_ = 0;
  size_t tier_ordinal_ = 0;
};

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

Result<Policy> parsePolicy(const std::vector<PolicyFile>& files, const PolicyParseOptions& options) {
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
