#include "sim/assertions.h"

#include <cctype>
#include <sstream>

namespace tw::sim {

namespace {

const std::set<std::string> kOps = {"==", "!=", "<", "<=", ">", ">="};
const std::set<std::string> kVmFields = {"state",   "host",     "tier",        "health",
                                         "healthy", "restarts", "relocations", "running_on"};
const std::set<std::string> kNumericVmFields = {"restarts", "relocations"};
const std::set<std::string> kHostFields = {"state", "power", "network", "agent"};

std::vector<std::string> splitWords(const std::string& line) {
  std::vector<std::string> words;
  std::istringstream in(line);
  std::string w;
  while (in >> w) words.push_back(w);
  return words;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::optional<long long> toNumber(const std::string& s) {
  if (s.empty()) return std::nullopt;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  long long v = 0;
  for (; i < s.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return std::nullopt;
    v = v * 10 + (s[i] - '0');
  }
  return s[0] == '-' ? -v : v;
}

bool compareNumbers(long long got, const std::string& op, long long want) {
  if (op == "==") return got == want;
  if (op == "!=") return got != want;
  if (op == "<") return got < want;
  if (op == "<=") return got <= want;
  if (op == ">") return got > want;
  return got >= want;
}

// Text of a JSON scalar as an assertion compares it.
std::string textOf(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return std::to_string(v.get<long long>());
  if (v.is_null()) return "none";
  if (v.is_array()) {
    std::string out;
    for (const auto& item : v) out += (out.empty() ? "" : ",") + textOf(item);
    return out.empty() ? "none" : out;
  }
  return v.dump();
}

const Json* findNamed(const Json& state, const char* list, const std::string& name) {
  if (!state.contains(list) || !state[list].is_array()) return nullptr;
  for (const auto& item : state[list]) {
    if (item.is_object() && item.contains("name") && item["name"].is_string() &&
        item["name"].get<std::string>() == name) {
      return &item;
    }
  }
  return nullptr;
}

class Parser {
 public:
  Parser(const std::string& file, int line, const AssertNames& names)
      : file_(file), line_(line), names_(names) {}

  Status fail(const std::string& message) const {
    return Status(Code::kInvalidArgument, message, SourceLocation{file_, line_, 0});
  }

  // [OP] VALUE at w[from..]: exactly one value.
  Status opValue(const std::vector<std::string>& w, size_t from, bool numeric, Assertion* a) const {
    size_t i = from;
    if (i < w.size() && kOps.count(w[i])) a->op = w[i++];
    if (i + 1 != w.size()) return fail("expected '[op] value' after '" + w[from - 1] + "'");
    a->value = w[i];
    if (numeric && !toNumber(a->value)) {
      return fail("expected a number, got '" + a->value + "'");
    }
    if (!numeric && a->op != "==" && a->op != "!=") {
      return fail("'" + a->op + "' compares numbers; use == or != for '" + a->value + "'");
    }
    return Status::ok();
  }

  Status parse(const std::string& raw, Assertion* a) const {
    std::vector<std::string> w = splitWords(raw);
    const std::string& what = w[0];
    if (what == "max_running_copies" || what == "incidents" || what == "time_ms" ||
        what == "collateral_destroys" || what == "lease_lapses") {
      a->kind = what == "incidents"             ? Assertion::Kind::kIncidents
                : what == "time_ms"             ? Assertion::Kind::kTime
                : what == "collateral_destroys" ? Assertion::Kind::kCollateral
                : what == "lease_lapses"        ? Assertion::Kind::kLeaseLapses
                                                : Assertion::Kind::kMaxCopies;
      return opValue(w, 1, true, a);
    }
    if (what == "vms") {
      if (w.size() < 3) return fail("expected 'vms STATE [op] N'");
      a->kind = Assertion::Kind::kVmsInState;
      a->subject = w[1];
      return opValue(w, 2, true, a);
    }
    if (what == "vm" || what == "host") {
      if (w.size() < 4) return fail("expected '" + what + " NAME FIELD [op] VALUE'");
      a->subject = w[1];
      a->field = w[2];
      if (what == "vm") {
        a->kind = Assertion::Kind::kVm;
        if (names_.vms && !names_.vms->count(a->subject)) {
          return fail("unknown vm '" + a->subject + "'");
        }
        if (!kVmFields.count(a->field)) {
          return fail("unknown vm field '" + a->field +
                      "' (expected state, host, tier, health, healthy, restarts, relocations or "
                      "running_on)");
        }
        return opValue(w, 3, kNumericVmFields.count(a->field) != 0, a);
      }
      a->kind = Assertion::Kind::kHost;
      if (names_.hosts && !names_.hosts->count(a->subject)) {
        return fail("unknown host '" + a->subject + "'");
      }
      if (!kHostFields.count(a->field)) {
        return fail("unknown host field '" + a->field +
                    "' (expected state, power, network or agent)");
      }
      return opValue(w, 3, false, a);
    }
    if (what == "log") {
      if (w.size() < 3 || (w[1] != "contains" && w[1] != "lacks" && w[1] != "order")) {
        return fail(
            "expected 'log contains TEXT', 'log lacks TEXT' or 'log order TEXT before TEXT'");
      }
      // The rest of the line, as written.
      const std::string rest = trim(raw.substr(raw.find(w[1]) + w[1].size()));
      if (w[1] == "order") {
        const size_t sep = rest.find(" before ");
        if (sep == std::string::npos) return fail("expected 'log order TEXT before TEXT'");
        a->kind = Assertion::Kind::kLogOrder;
        a->value = trim(rest.substr(0, sep));
        a->later = trim(rest.substr(sep + 8));
        if (a->value.empty() || a->later.empty()) {
          return fail("expected 'log order TEXT before TEXT'");
        }
        return Status::ok();
      }
      a->kind = w[1] == "contains" ? Assertion::Kind::kLogContains : Assertion::Kind::kLogLacks;
      a->value = rest;
      return Status::ok();
    }
    return fail("unknown assertion '" + what +
                "' (expected max_running_copies, collateral_destroys, lease_lapses, incidents, time_ms, vms, "
                "vm, host or log)");
  }

 private:
  const std::string& file_;
  int line_;
  const AssertNames& names_;
};

}  // namespace

Result<std::vector<Assertion>> parseAssertions(const std::string& text, const std::string& file,
                                               const AssertNames& names) {
  std::vector<Assertion> out;
  std::istringstream in(text);
  std::string raw;
  int line = 0;
  while (std::getline(in, raw)) {
    ++line;
    const size_t hash = raw.find('#');
    if (hash != std::string::npos) raw.erase(hash);
    raw = trim(raw);
    if (raw.empty()) continue;
    Assertion a;
    a.line = line;
    a.text = raw;
    Parser p(file, line, names);
    TW_RETURN_IF_ERROR(p.parse(raw, &a));
    out.push_back(std::move(a));
  }
  return out;
}

std::vector<std::string> checkAssertions(const std::vector<Assertion>& assertions,
                                         const std::string& file, const Json& state,
                                         const std::vector<std::string>& log_lines) {
  std::vector<std::string> failures;
  for (const Assertion& a : assertions) {
    const std::string prefix = file + ":" + std::to_string(a.line) + ": " + a.text + ": ";
    auto number = [&](long long got) {
      if (!compareNumbers(got, a.op, *toNumber(a.value))) {
        failures.push_back(prefix + "got " + std::to_string(got));
      }
    };
    auto text = [&](const std::string& got) {
      bool equal = got == a.value;
      if (equal != (a.op == "==")) failures.push_back(prefix + "got '" + got + "'");
    };
    switch (a.kind) {
      case Assertion::Kind::kMaxCopies:
        number(state.value("max_running_copies", 0LL));
        break;
      case Assertion::Kind::kTime:
        number(state.value("time_ms", 0LL));
        break;
      case Assertion::Kind::kCollateral:
        number(state.value("collateral_destroys", 0LL));
        break;
      case Assertion::Kind::kLeaseLapses:
        number(state.value("lease_lapses", 0LL));
        break;
      case Assertion::Kind::kIncidents: {
        long long n = 0;
        if (state.contains("incidents") && state["incidents"].is_array()) {
          n = static_cast<long long>(state["incidents"].size());
        }
        number(n);
        break;
      }
      case Assertion::Kind::kVmsInState: {
        long long n = 0;
        if (state.contains("vms") && state["vms"].is_array()) {
          for (const auto& vm : state["vms"]) {
            if (vm.is_object() && vm.value("state", std::string()) == a.subject) ++n;
          }
        }
        number(n);
        break;
      }
      case Assertion::Kind::kVm:
      case Assertion::Kind::kHost: {
        const bool is_vm = a.kind == Assertion::Kind::kVm;
        const Json* item = findNamed(state, is_vm ? "vms" : "hosts", a.subject);
        if (item == nullptr) {
          failures.push_back(prefix + "no " + (is_vm ? "vm" : "host") + " named '" + a.subject +
                             "' in the final state");
          break;
        }
        if (!item->contains(a.field)) {
          failures.push_back(prefix + "the final state has no '" + a.field + "'");
          break;
        }
        const Json& v = (*item)[a.field];
        if (is_vm && kNumericVmFields.count(a.field)) {
          number(v.is_number_integer() ? v.get<long long>() : 0);
        } else {
          text(textOf(v));
        }
        break;
      }
      case Assertion::Kind::kLogOrder: {
        auto first = [&](const std::string& text) -> long {
          for (size_t i = 0; i < log_lines.size(); ++i) {
            if (log_lines[i].find(text) != std::string::npos) return static_cast<long>(i);
          }
          return -1;
        };
        const long a_at = first(a.value);
        const long b_at = first(a.later);
        if (a_at < 0) {
          failures.push_back(prefix + "no line contains '" + a.value + "'");
        } else if (b_at < 0) {
          failures.push_back(prefix + "no line contains '" + a.later + "'");
        } else if (a_at > b_at) {
          failures.push_back(prefix + "found in the other order: " + log_lines[b_at] + " / " +
                             log_lines[a_at]);
        }
        break;
      }
      case Assertion::Kind::kLogContains:
      case Assertion::Kind::kLogLacks: {
        const std::string* hit = nullptr;
        for (const auto& line : log_lines) {
          if (line.find(a.value) != std::string::npos) {
            hit = &line;
            break;
          }
        }
        if (a.kind == Assertion::Kind::kLogContains && hit == nullptr) {
          failures.push_back(prefix + "no line of the event log contains it");
        } else if (a.kind == Assertion::Kind::kLogLacks && hit != nullptr) {
          failures.push_back(prefix + "found in: " + *hit);
        }
        break;
      }
    }
  }
  return failures;
}

}  // namespace tw::sim
