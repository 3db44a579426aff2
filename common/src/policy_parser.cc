// The policy parser's text helpers and FileParser's YAML plumbing: positions,
// mappings, lists and scalars (common/src/policy_parser.h says how the parser
// is split).
#include "policy_parser.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "tw/ip_prefix.h"
#include "tw/text.h"

namespace tw::policy_parser {

std::string joinNames(const std::vector<std::string>& names, const char* sep) {
  std::string out;
  for (const auto& n : names) {
    if (!out.empty()) out += sep;
    out += n;
  }
  return out;
}

namespace {

bool isLowerAlpha(char c) { return c >= 'a' && c <= 'z'; }
bool isDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

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

namespace {

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

}  // namespace

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

Status FileParser::parse(const std::string& content) {
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

Status FileParser::checkStreamProgresses(const std::string& content) const {
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
      std::string token =
          m.pos >= 0 && static_cast<size_t>(m.pos) < content.size()
              ? utf8FirstCharacter(std::string_view(content).substr(static_cast<size_t>(m.pos)))
              : std::string("end of input");
      return fail({file_, m.line + 1, m.column + 1},
                  "YAML syntax error: unexpected '" + token + "'");
    }
    previous_pos = m.pos;
  }
  return Status::ok();
}

SourceLocation FileParser::at(const YAML::Node& node) const {
  YAML::Mark m = node.Mark();
  if (m.line < 0) return {file_, 0, 0};
  return {file_, m.line + 1, m.column + 1};
}

SourceLocation FileParser::at(const Field& f) const {
  if (f.value.IsNull() || f.value.Mark().line < 0) return at(f.key_node);
  return at(f.value);
}

Status FileParser::fail(const SourceLocation& where, std::string message) {
  return Status(Code::kInvalidArgument, std::move(message), where);
}

std::string FileParser::describe(const YAML::Node& node) {
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

Status FileParser::mapFields(const YAML::Node& node, const SourceLocation& where,
                             const std::string& path, const std::string& what,
                             const std::vector<std::string>& allowed,
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

Status FileParser::listItems(const Field& f, const std::string& path,
                             std::vector<YAML::Node>* out) const {
  out->clear();
  if (f.value.IsNull()) return Status::ok();
  if (!f.value.IsSequence())
    return fail(at(f), "expected a list for '" + path + "', got " + describe(f.value));
  for (auto it = f.value.begin(); it != f.value.end(); ++it) out->push_back(*it);
  return Status::ok();
}

Status FileParser::readString(const Field& f, const std::string& path, std::string* out) const {
  if (!f.value.IsScalar())
    return fail(at(f), "expected a string for '" + path + "', got " + describe(f.value));
  *out = f.value.Scalar();
  return Status::ok();
}

Status FileParser::readName(const YAML::Node& node, const SourceLocation& where,
                            const std::string& what, std::string* out) const {
  if (!node.IsScalar() || !isValidName(node.Scalar()))
    return fail(where, "expected a name for " + what +
                           " (a lowercase letter, then up to 62 lowercase letters, digits or "
                           "'-'), got " +
                           describe(node));
  *out = node.Scalar();
  return Status::ok();
}

Status FileParser::readInt(const Field& f, const std::string& path, int64_t min, int64_t max,
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

Status FileParser::readInt(const Field& f, const std::string& path, int64_t min, int64_t max,
                           int* out) const {
  int64_t v = 0;
  TW_RETURN_IF_ERROR(readInt(f, path, min, max, &v));
  *out = static_cast<int>(v);
  return Status::ok();
}

Status FileParser::readDuration(const Field& f, const std::string& path, bool positive,
                                Millis* out) const {
  std::optional<ScaledNumber> n;
  if (f.value.IsScalar()) n = parseDurationText(f.value.Scalar());
  if (!n)
    return fail(at(f), "expected a duration like 1500ms, 3s, 2m or 1h for '" + path + "', got " +
                           describe(f.value));
  if (n->too_large) return fail(at(f), "'" + path + "' is too long: " + describe(f.value));
  if (n->not_whole)
    return fail(at(f),
                "'" + path + "' must be a whole number of milliseconds, got " + describe(f.value));
  if (n->negative && n->value != 0)
    return fail(at(f), "'" + path + "' must not be negative, got " + describe(f.value));
  if (positive && n->value == 0)
    return fail(at(f), "'" + path + "' must be longer than zero, got " + describe(f.value));
  *out = n->value;
  return Status::ok();
}

Status FileParser::readSize(const Field& f, const std::string& path, int64_t min_mib,
                            int64_t* out) const {
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
    return fail(at(f), "'" + path + "' must be at least " + std::to_string(min_mib) + "MiB, got " +
                           describe(f.value));
  *out = n->value;
  return Status::ok();
}

Status FileParser::readNameList(const Field& f, const std::string& path,
                                std::vector<std::string>* names,
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

}  // namespace tw::policy_parser
