#include "sim/script.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <sstream>

namespace tw::sim {

namespace {

std::vector<std::string> splitWords(const std::string& line) {
  std::vector<std::string> words;
  std::istringstream in(line);
  std::string w;
  while (in >> w) words.push_back(w);
  return words;
}

std::string joinWords(const std::vector<std::string>& words, size_t from) {
  std::string out;
  for (size_t i = from; i < words.size(); ++i) out += (out.empty() ? "" : " ") + words[i];
  return out;
}

std::string oneOf(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none declared" : out;
}

// A non-negative count ("3"), at most a million.
std::optional<int> parseCount(const std::string& s) {
  if (s.empty() || s.size() > 7) return std::nullopt;
  int n = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n;
}

class LineParser {
 public:
  // `replicas`: the script's `controllers N` so far (0: one controller).
  LineParser(const std::string& file, int line, const ScriptNames& names, int replicas)
      : file_(file), line_(line), names_(names), replicas_(replicas) {}

  Status fail(const std::string& message) const {
    return Status(Code::kInvalidArgument, message, SourceLocation{file_, line_, 0});
  }

  Status host(const std::string& name) const {
    if (names_.hosts && names_.hosts->count(name) == 0) {
      return fail("unknown host '" + name + "' (declared: " + oneOf(*names_.hosts) + ")");
    }
    return Status::ok();
  }

  Status vm(const std::string& name) const {
    if (names_.vms && names_.vms->count(name) == 0) {
      return fail("unknown vm '" + name + "' (the applied policies declare: " + oneOf(*names_.vms) +
                  ")");
    }
    return Status::ok();
  }

  Status words(const std::vector<std::string>& w, size_t n, const std::string& usage) const {
    if (w.size() != n) return fail("expected '" + usage + "', got '" + joinWords(w, 0) + "'");
    return Status::ok();
  }

  Status choice(const std::string& value, const std::set<std::string>& allowed,
                const std::string& usage) const {
    if (allowed.count(value) == 0) return fail("expected '" + usage + "', got '" + value + "'");
    return Status::ok();
  }

  Status count(const std::string& value, const std::string& usage, int* out) const {
    std::optional<int> n = parseCount(value);
    if (!n) return fail("expected a count for '" + usage + "', got '" + value + "'");
    *out = *n;
    return Status::ok();
  }

  // A duration > 0 ("4s", "1500ms"), a whole number of steps.
  Status duration(const std::string& value, const std::string& usage, Millis* out) const {
    Result<Millis> d = parseScriptTime(value);
    if (!d) return fail("expected a duration for '" + usage + "': " + d.status().message());
    if (*d <= 0 || *d % kStepMs != 0) {
      return fail("expected a duration for '" + usage + "' that is a positive multiple of the " +
                  std::to_string(kStepMs) + " ms step, got '" + value + "'");
    }
    *out = *d;
    return Status::ok();
  }

  // A delay per libvirt call: "200ms", "1s", or a bare number of ms ("0" ends it).
  Status perCall(const std::string& value, const std::string& usage, Millis* out) const {
    if (std::optional<int> n = parseCount(value)) {
      *out = *n;
      return Status::ok();
    }
    Result<Millis> d = parseScriptTime(value);
    if (!d) return fail("expected a time for '" + usage + "': " + d.status().message());
    *out = *d;
    return Status::ok();
  }

  // A link end: a host or the controller.
  Status node(const std::string& name) const {
    if (name == kControllerNode) return Status::ok();
    return host(name);
  }

  // `controller C ...` with several replicas.
  Status replica(const std::vector<std::string>& w, Command* c) const {
    const std::string usage = "controller C kill|start|restart|overstay [window]|store off|on";
    const std::string& name = w[1];
    bool known = name == "leader";
    for (int i = 1; i <= replicas_ && !known; ++i) known = name == "c" + std::to_string(i);
    if (!known) {
      return fail("with 'controllers " + std::to_string(replicas_) +
                  "', name a replica: expected 'controller c1..c" + std::to_string(replicas_) +
                  "|leader " + usage.substr(std::string("controller C ").size()) + "', got '" +
                  joinWords(w, 0) + "'");
    }
    if (w.size() < 3) return fail("expected '" + usage + "', got '" + joinWords(w, 0) + "'");
    TW_RETURN_IF_ERROR(choice(w[2], {"kill", "start", "restart", "overstay", "store"}, usage));
    c->op = Op::kReplica;
    c->target = name;
    if (w[2] == "store") {
      TW_RETURN_IF_ERROR(words(w, 4, "controller C store off|on"));
      TW_RETURN_IF_ERROR(choice(w[3], {"on", "off"}, "controller C store off|on"));
      c->arg = "store-" + w[3];
      return Status::ok();
    }
    if (w[2] == "overstay" && w.size() == 4) {
      // `overstay window`: the daemon's window between a refused write and
      // its exit is not hidden by the simulator (sim/controller_replicas.h).
      TW_RETURN_IF_ERROR(choice(w[3], {"window"}, "controller C overstay [window]"));
      c->arg = "overstay-window";
      return Status::ok();
    }
    c->arg = w[2];
    return words(w, 3, "controller C " + w[2]);
  }

  // Fills `c` from the command words (the time already taken off).
  Status parse(const std::vector<std::string>& w, Command* c) const {
    const std::string& verb = w[0];
    if (verb == "apply") {
      if (w.size() < 2) return fail("expected 'apply FILE...', got 'apply'");
      c->op = Op::kApply;
      for (size_t i = 1; i < w.size(); ++i) {
        if (names_.files && names_.files->count(w[i]) == 0) {
          return fail("no file '" + w[i] + "' in the scenario folder");
        }
        c->files.push_back(w[i]);
      }
      return Status::ok();
    }
    if (verb == "host") {
      if (w.size() < 3) {
        return fail("expected 'host H power|network|fail-migrations|libvirt ...'");
      }
      c->target = w[1];
      TW_RETURN_IF_ERROR(host(w[1]));
      if (w[2] == "power" || w[2] == "network") {
        const std::string usage = "host H " + w[2] + " on|off";
        TW_RETURN_IF_ERROR(words(w, 4, usage));
        TW_RETURN_IF_ERROR(choice(w[3], {"on", "off"}, usage));
        c->op = w[2] == "power" ? Op::kHostPower : Op::kHostNetwork;
        c->arg = w[3];
        return Status::ok();
      }
      if (w[2] == "fail-migrations") {
        TW_RETURN_IF_ERROR(words(w, 4, "host H fail-migrations N"));
        c->op = Op::kHostFailMigrations;
        return count(w[3], "host H fail-migrations N", &c->count);
      }
      if (w[2] == "libvirt") {
        const std::string usage = "host H libvirt slow MS";
        TW_RETURN_IF_ERROR(words(w, 5, usage));
        TW_RETURN_IF_ERROR(choice(w[3], {"slow"}, usage));
        c->op = Op::kHostLibvirtSlow;
        return perCall(w[4], usage, &c->duration);
      }
      return fail("unknown host command '" + w[2] +
                  "' (expected power, network, fail-migrations or libvirt)");
    }
    if (verb == "agent") {
      const std::string usage = "agent H stop|start|stall DURATION";
      if (w.size() < 3) return fail("expected '" + usage + "', got '" + joinWords(w, 0) + "'");
      TW_RETURN_IF_ERROR(host(w[1]));
      TW_RETURN_IF_ERROR(choice(w[2], {"stop", "start", "stall"}, usage));
      c->op = Op::kAgent;
      c->target = w[1];
      c->arg = w[2];
      if (w[2] == "stall") {
        TW_RETURN_IF_ERROR(words(w, 4, "agent H stall DURATION"));
        return duration(w[3], "agent H stall DURATION", &c->duration);
      }
      return words(w, 3, "agent H " + w[2]);
    }
    if (verb == "vm") {
      if (w.size() < 3) return fail("expected 'vm V crash|health|fail-start ...'");
      c->target = w[1];
      TW_RETURN_IF_ERROR(vm(w[1]));
      if (w[2] == "crash") {
        TW_RETURN_IF_ERROR(words(w, 3, "vm V crash"));
        c->op = Op::kVmCrash;
        return Status::ok();
      }
      if (w[2] == "health") {
        const std::string usage = "vm V health ok|fail|fail-always";
        TW_RETURN_IF_ERROR(words(w, 4, usage));
        TW_RETURN_IF_ERROR(choice(w[3], {"ok", "fail", "fail-always"}, usage));
        c->op = Op::kVmHealth;
        c->arg = w[3];
        return Status::ok();
      }
      if (w[2] == "fail-start") {
        TW_RETURN_IF_ERROR(words(w, 4, "vm V fail-start N"));
        c->op = Op::kVmFailStart;
        return count(w[3], "vm V fail-start N", &c->count);
      }
      return fail("unknown vm command '" + w[2] + "' (expected crash, health or fail-start)");
    }
    if (verb == "controllers") {
      const std::string usage = "controllers N";
      TW_RETURN_IF_ERROR(words(w, 2, usage));
      TW_RETURN_IF_ERROR(count(w[1], usage, &c->count));
      if (c->count < 2 || c->count > kMaxControllerReplicas) {
        return fail("expected 2 to " + std::to_string(kMaxControllerReplicas) +
                    " replicas for 'controllers N', got '" + w[1] + "'");
      }
      c->op = Op::kControllers;
      return Status::ok();
    }
    if (verb == "controller" && replicas_ > 0 && w.size() >= 2 && w[1] != "network") {
      return replica(w, c);
    }
    if (verb == "controller") {
      const std::string usage = "controller restart|stop|start|stall DURATION|network on|off";
      if (w.size() < 2) return fail("expected '" + usage + "', got 'controller'");
      TW_RETURN_IF_ERROR(choice(w[1], {"restart", "stop", "start", "stall", "network"}, usage));
      c->op = Op::kController;
      c->arg = w[1];
      if (w[1] == "stall") {
        TW_RETURN_IF_ERROR(words(w, 3, "controller stall DURATION"));
        return duration(w[2], "controller stall DURATION", &c->duration);
      }
      if (w[1] == "network") {
        TW_RETURN_IF_ERROR(words(w, 3, "controller network on|off"));
        TW_RETURN_IF_ERROR(choice(w[2], {"on", "off"}, "controller network on|off"));
        c->op = Op::kControllerNetwork;
        c->arg = w[2];
        return Status::ok();
      }
      return words(w, 2, "controller " + w[1]);
    }
    if (verb == "link") {
      const std::string usage = "link A B off|on";
      TW_RETURN_IF_ERROR(words(w, 4, usage));
      TW_RETURN_IF_ERROR(node(w[1]));
      TW_RETURN_IF_ERROR(node(w[2]));
      if (w[1] == w[2]) return fail("'link' needs two different ends, got '" + w[1] + "' twice");
      TW_RETURN_IF_ERROR(choice(w[3], {"on", "off"}, usage));
      c->op = Op::kLink;
      c->target = w[1];
      c->other = w[2];
      c->arg = w[3];
      return Status::ok();
    }
    if (verb == "drain" || verb == "undrain") {
      TW_RETURN_IF_ERROR(words(w, 2, verb + " H"));
      TW_RETURN_IF_ERROR(host(w[1]));
      c->op = verb == "drain" ? Op::kDrain : Op::kUndrain;
      c->target = w[1];
      return Status::ok();
    }
    if (verb == "migrate") {
      TW_RETURN_IF_ERROR(words(w, 3, "migrate V H"));
      TW_RETURN_IF_ERROR(vm(w[1]));
      TW_RETURN_IF_ERROR(host(w[2]));
      c->op = Op::kMigrate;
      c->target = w[1];
      c->arg = w[2];
      return Status::ok();
    }
    if (verb == "reset" || verb == "restart") {
      TW_RETURN_IF_ERROR(words(w, 2, verb + " V"));
      TW_RETURN_IF_ERROR(vm(w[1]));
      c->op = verb == "reset" ? Op::kReset : Op::kRestart;
      c->target = w[1];
      return Status::ok();
    }
    if (verb == "end") {
      TW_RETURN_IF_ERROR(words(w, 1, "end"));
      c->op = Op::kEnd;
      return Status::ok();
    }
    return fail("unknown command '" + verb +
                "' (expected apply, host, agent, vm, controller, controllers, link, drain, "
                "undrain, migrate, reset, restart or end)");
  }

 private:
  const std::string& file_;
  int line_;
  const ScriptNames& names_;
  const int replicas_;
};

}  // namespace

Result<Millis> parseScriptTime(const std::string& text) {
  size_t i = 0;
  int64_t whole = 0;
  int64_t frac = 0;
  int64_t frac_scale = 1;
  bool digits = false;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    whole = whole * 10 + (text[i] - '0');
    if (whole > 1000000000LL) return invalidArgument("time '" + text + "' is too large");
    digits = true;
    ++i;
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    bool frac_digits = false;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      if (frac_scale < 1000000) {
        frac = frac * 10 + (text[i] - '0');
        frac_scale *= 10;
      } else if (text[i] != '0') {
        return invalidArgument("time '" + text + "' has too many decimals");
      }
      frac_digits = true;
      ++i;
    }
    if (!frac_digits) digits = false;
  }
  const std::string unit = text.substr(i);
  if (!digits) {
    return invalidArgument("expected a time like 0s, 1500ms, 1.5s or 2m, got '" + text + "'");
  }
  int64_t scale = 0;
  if (unit == "ms") {
    scale = 1;
  } else if (unit == "s") {
    scale = 1000;
  } else if (unit == "m") {
    scale = 60000;
  } else if (unit == "h") {
    scale = 3600000;
  } else {
    return invalidArgument("time '" + text + "' needs a unit: ms, s, m or h");
  }
  if ((frac * scale) % frac_scale != 0) {
    return invalidArgument("time '" + text + "' is not a whole number of milliseconds");
  }
  return whole * scale + frac * scale / frac_scale;
}

Result<Script> parseScript(const std::string& text, const std::string& file,
                           const ScriptNames& names) {
  Script script;
  script.file = file;
  std::istringstream in(text);
  std::string raw;
  int line_no = 0;
  Millis last = 0;
  bool ended = false;
  while (std::getline(in, raw)) {
    ++line_no;
    const size_t hash = raw.find('#');
    if (hash != std::string::npos) raw.erase(hash);
    std::vector<std::string> w = splitWords(raw);
    if (w.empty()) continue;
    LineParser p(file, line_no, names, script.controllers);
    if (ended) return p.fail("command after 'end'");
    Result<Millis> t = parseScriptTime(w[0]);
    if (!t) return p.fail(t.status().message());
    if (*t % kStepMs != 0) {
      return p.fail("time '" + w[0] + "' is not a multiple of the " + std::to_string(kStepMs) +
                    " ms step");
    }
    if (*t < last) {
      return p.fail("time '" + w[0] + "' is earlier than the line before (" + std::to_string(last) +
                    " ms)");
    }
    if (w.size() < 2) return p.fail("expected a command after the time '" + w[0] + "'");
    last = *t;
    Command c;
    c.t_ms = *t;
    c.line = line_no;
    std::vector<std::string> cmd(w.begin() + 1, w.end());
    c.text = joinWords(cmd, 0);
    TW_RETURN_IF_ERROR(p.parse(cmd, &c));
    if (c.op == Op::kControllers) {
      if (c.t_ms != 0 || !script.commands.empty()) {
        return p.fail("'controllers N' must be the script's first command, at 0s");
      }
      script.controllers = c.count;
    }
    if (c.op == Op::kEnd) {
      ended = true;
      script.end_ms = c.t_ms;
    }
    script.commands.push_back(std::move(c));
  }
  if (!ended) {
    return Status(Code::kInvalidArgument, "the script must end with an 'end' command",
                  SourceLocation{file, std::max(line_no, 1), 0});
  }
  return script;
}

}  // namespace tw::sim
