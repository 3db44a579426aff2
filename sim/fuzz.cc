#include "sim/fuzz.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "sim/scenario.h"
#include "sim/simulation.h"

namespace tw::sim {

namespace fs = std::filesystem;

namespace {

// splitmix64: the same numbers on every platform and library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi].
  int64_t range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(next() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool chance(int percent) { return range(0, 99) < percent; }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<size_t>(range(0, static_cast<int64_t>(v.size()) - 1))];
  }

 private:
  uint64_t state_;
};

// "12340ms" (the script's time; always whole steps).
std::string at(Millis t) { return std::to_string(t) + "ms"; }

std::string durationText(Millis ms) {
  if (ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

// What the generator believes about the cluster (the script's own commands
// only: a fence agent's power-off, say, is not known to it, which is fine —
// commands that find things otherwise log "already ..." and do nothing).
struct World {
  std::vector<std::string> hosts;
  std::vector<std::string> vms;
  std::vector<std::string> checked_vms;  // of tiers with a health check
  std::set<std::string> powered_off;
  std::set<std::string> network_off;
  std::set<std::string> agent_stopped;
  std::set<std::string> draining;
  std::set<std::pair<std::string, std::string>> cut;  // one-way cuts
  bool controller_down = false;
  bool controller_net_off = false;
  // With replicas: c1..cN, those down, those cut off from etcd.
  std::vector<std::string> replicas;
  std::set<std::string> replicas_down;
  std::set<std::string> replicas_store_off;
  bool overstay_window = false;  // `controller leader overstay window`
};


class ScriptWriter {
 public:
  void line(Millis t, const std::string& command) { out_ << at(t) << " " << command << "\n"; }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

// A fault of one controller replica (instead of the one controller's
// stop/start/restart/stall). `leader` is resolved when the command runs.
void replicaEvent(Rng& rng, World& w, ScriptWriter& s, Millis t) {
  const int64_t k = rng.range(0, 99);
  if (!w.replicas_down.empty() && (k < 25 || w.replicas_down.size() == w.replicas.size())) {
    std::vector<std::string> down(w.replicas_down.begin(), w.replicas_down.end());
    const std::string r = rng.pick(down);
    w.replicas_down.erase(r);
    s.line(t, "controller " + r + " start");
    return;
  }
  if (k < 50) {  // the leader crashes (the interesting one), now and then a follower
    const std::string r = rng.chance(75) ? "leader" : rng.pick(w.replicas);
    if (r != "leader") w.replicas_down.insert(r);
    s.line(t, "controller " + r + " kill");
    return;
  }
  if (k < 60) {
    s.line(t, "controller " + (rng.chance(50) ? std::string("leader") : rng.pick(w.replicas)) + " restart");
    return;
  }
  if (k < 88) {  // cut off from etcd, or back
    if (!w.replicas_store_off.empty() && rng.chance(50)) {
      std::vector<std::string> off(w.replicas_store_off.begin(), w.replicas_store_off.end());
      const std::string r = rng.pick(off);
      w.replicas_store_off.erase(r);
      s.line(t, "controller " + r + " store on");
      return;
    }
    const std::string r = rng.pick(w.replicas);
    w.replicas_store_off.insert(r);
    s.line(t, "controller " + r + " store off");
    return;
  }
  s.line(t, w.overstay_window ? "controller leader overstay window" : "controller leader overstay");
}

std::vector<std::string> without(const std::vector<std::string>& all,
                                 const std::set<std::string>& out) {
  std::vector<std::string> v;
  for (const auto& x : all) {
    if (out.count(x) == 0) v.push_back(x);
  }
  return v;
}

void cutLink(World& w, ScriptWriter& s, Millis t, const std::string& a, const std::string& b) {
  if (w.cut.insert({a, b}).second) s.line(t, "link " + a + " " + b + " off");
}

// One failure (or repair) at time t.
void event(Rng& rng, World& w, ScriptWriter& s, Millis t) {
  std::vector<std::string> nodes = w.hosts;
  nodes.push_back(kControllerNode);
  for (int attempt = 0; attempt < 20; ++attempt) {
    const int64_t r = rng.range(0, 99);
    if (r < 10) {
      s.line(t, "vm " + rng.pick(w.vms) + " crash");
      return;
    }
    if (r < 14) {
      if (w.checked_vms.empty()) continue;
      static const std::vector<std::string> kHow = {"fail", "fail", "fail-always", "ok", "ok"};
      s.line(t, "vm " + rng.pick(w.checked_vms) + " health " + rng.pick(kHow));
      return;
    }
    if (r < 16) {
      s.line(t, "vm " + rng.pick(w.vms) + " fail-start " + std::to_string(rng.range(1, 3)));
      return;
    }
    if (r < 22) {  // power
      std::vector<std::string> on = without(w.hosts, w.powered_off);
      if (!w.powered_off.empty() && (on.empty() || rng.chance(50))) {
        std::vector<std::string> off(w.powered_off.begin(), w.powered_off.end());
        const std::string h = rng.pick(off);
        w.powered_off.erase(h);
        w.agent_stopped.erase(h);
        s.line(t, "host " + h + " power on");
      } else {
        const std::string h = rng.pick(on);
        w.powered_off.insert(h);
        s.line(t, "host " + h + " power off");
      }
      return;
    }
    if (r < 29) {  // network
      std::vector<std::string> on = without(w.hosts, w.network_off);
      if (!w.network_off.empty() && (on.empty() || rng.chance(55))) {
        std::vector<std::string> off(w.network_off.begin(), w.network_off.end());
        const std::string h = rng.pick(off);
        w.network_off.erase(h);
        s.line(t, "host " + h + " network on");
      } else {
        const std::string h = rng.pick(on);
        w.network_off.insert(h);
        s.line(t, "host " + h + " network off");
      }
      return;
    }
    if (r < 30) {
      s.line(t,
             "host " + rng.pick(w.hosts) + " fail-migrations " + std::to_string(rng.range(1, 2)));
      return;
    }
    if (r < 34) {
      static const std::vector<std::string> kSlow = {"0", "0", "20ms", "100ms", "500ms", "2s"};
      s.line(t, "host " + rng.pick(w.hosts) + " libvirt slow " + rng.pick(kSlow));
      return;
    }
    if (r < 40) {  // agent stop/start
      std::vector<std::string> running = without(w.hosts, w.agent_stopped);
      if (!w.agent_stopped.empty() && (running.empty() || rng.chance(55))) {
        std::vector<std::string> stopped(w.agent_stopped.begin(), w.agent_stopped.end());
        const std::string h = rng.pick(stopped);
        w.agent_stopped.erase(h);
        s.line(t, "agent " + h + " start");
      } else {
        const std::string h = rng.pick(running);
        w.agent_stopped.insert(h);
        s.line(t, "agent " + h + " stop");
      }
      return;
    }
    if (r < 46) {
      static const std::vector<Millis> kStall = {100, 300, 800, 1500, 3000, 6000, 10000};
      s.line(t, "agent " + rng.pick(w.hosts) + " stall " + durationText(rng.pick(kStall)));
      return;
    }
    if (r < 53 && !w.replicas.empty()) {
      replicaEvent(rng, w, s, t);
      return;
    }
    if (r < 53) {  // the controller process
      const int64_t k = rng.range(0, 9);
      if (w.controller_down) {
        w.controller_down = false;
        s.line(t, "controller start");
      } else if (k < 3) {
        w.controller_down = true;
        s.line(t, "controller stop");
      } else if (k < 5) {
        s.line(t, "controller restart");
      } else {
        static const std::vector<Millis> kStall = {300, 1000, 2500, 8000, 20000, 60000, 120000};
        s.line(t, "controller stall " + durationText(rng.pick(kStall)));
      }
      return;
    }
    if (r < 57) {  // the controller's network
      w.controller_net_off = !w.controller_net_off;
      s.line(t, std::string("controller network ") + (w.controller_net_off ? "off" : "on"));
      return;
    }
    if (r < 66) {  // one link, one way or both
      if (!w.cut.empty() && rng.chance(45)) {
        std::vector<std::pair<std::string, std::string>> cut(w.cut.begin(), w.cut.end());
        const auto link = rng.pick(cut);
        w.cut.erase(link);
        s.line(t, "link " + link.first + " " + link.second + " on");
        return;
      }
      const std::string a = rng.pick(nodes);
      std::string b = rng.pick(nodes);
      if (a == b) continue;
      cutLink(w, s, t, a, b);
      if (rng.chance(50)) cutLink(w, s, t, b, a);
      return;
    }
    if (r < 72) {  // a partition: two groups, the controller on one side
      if (!w.cut.empty() && rng.chance(50)) {
        for (const auto& [a, b] : w.cut) s.line(t, "link " + a + " " + b + " on");
        w.cut.clear();
        return;
      }
      std::vector<std::string> left, right;
      for (const auto& n : nodes) (rng.chance(50) ? left : right).push_back(n);
      if (left.empty() || right.empty()) continue;
      const bool one_way = rng.chance(20);
      for (const auto& a : left) {
        for (const auto& b : right) {
          cutLink(w, s, t, a, b);
          if (!one_way) cutLink(w, s, t, b, a);
        }
      }
      return;
    }
    if (r < 74) {
      std::vector<std::string> not_draining = without(w.hosts, w.draining);
      if (!w.draining.empty() && rng.chance(50)) {
        std::vector<std::string> d(w.draining.begin(), w.draining.end());
        const std::string h = rng.pick(d);
        w.draining.erase(h);
        s.line(t, "undrain " + h);
      } else if (!not_draining.empty()) {
        const std::string h = rng.pick(not_draining);
        w.draining.insert(h);
        s.line(t, "drain " + h);
      }
      return;
    }
    if (r < 77) {
      s.line(t, "migrate " + rng.pick(w.vms) + " " + rng.pick(w.hosts));
      return;
    }
    if (r < 79) {
      s.line(t, "reset " + rng.pick(w.vms));
      return;
    }
    if (r < 81) {
      s.line(t, "restart " + rng.pick(w.vms));
      return;
    }
    // Quiet: an agent or the controller heals of its own accord (nothing).
    return;
  }
}

}  // namespace

FuzzCase generateFuzzCase(uint64_t seed, int replicas, bool overstay_window) {
  Rng rng(seed);
  FuzzCase fc;
  fc.seed = seed;
  fc.replicas = replicas;
  World w;
  w.overstay_window = overstay_window;
  for (int i = 1; i <= replicas; ++i) w.replicas.push_back("c" + std::to_string(i));

  // ---- cluster.yaml ----
  const int n = static_cast<int>(rng.range(3, 7));
  const int spares = static_cast<int>(rng.range(0, std::min(2, n - 2)));
  std::ostringstream cluster;
  cluster << "# tierwarden-sim fuzz, seed " << seed << "\n";
  switch (rng.range(0, 3)) {
    case 1:  // the demo's fast detection
      cluster << "cluster:\n  heartbeat_interval: 500ms\n  dead_after: 1500ms\n  lease: 3s\n";
      break;
    case 2:  // slow
      cluster << "cluster:\n  dead_after: 4s\n  lease: 8s\n  fence_margin: 2s\n";
      break;
    default:
      break;
  }
  cluster << "hosts:\n";
  for (int i = 1; i <= n; ++i) {
    const std::string name = "h" + std::to_string(i);
    w.hosts.push_back(name);
    cluster << "  - name: " << name << "\n";
    if (i > n - spares) cluster << "    role: spare\n";
    cluster << "    capacity: { cpus: 8, memory: 8GiB }\n";
    const int64_t fence = rng.range(0, 99);
    if (fence < 40) {
      // libvirt (the default)
    } else if (fence < 65) {
      cluster << "    fence: { agent: ok }\n";
    } else if (fence < 75) {
      cluster << "    fence: { agent: fail }\n";
    } else {
      cluster << "    uri: sim://" << name << "\n    fence: none\n";
    }
  }
  fc.cluster_yaml = cluster.str();

  // ---- policy.yaml ----
  static const std::vector<std::string> kTiers = {"db", "web", "lb"};
  static const std::vector<std::string> kMemory = {"256MiB", "512MiB", "1GiB"};
  const int tiers = static_cast<int>(rng.range(1, 3));
  std::ostringstream policy;
  policy << "tiers:\n";
  for (int i = 0; i < tiers; ++i) {
    const std::string& tier = kTiers[static_cast<size_t>(i)];
    const int replicas = static_cast<int>(rng.range(1, 3));
    const bool checked = rng.chance(50);
    policy << "  - name: " << tier << "\n    image: tiny\n    replicas: " << replicas
           << "\n    memory: " << rng.pick(kMemory) << "\n";
    if (checked) policy << "    health: { type: tcp, port: 80, interval: 2s, grace: 5s }\n";
    if (i > 0 && rng.chance(30))
      policy << "    after: [" << kTiers[static_cast<size_t>(i - 1)] << "]\n";
    for (int r = 1; r <= replicas; ++r) {
      const std::string vm = tier + "-" + std::to_string(r);
      w.vms.push_back(vm);
      if (checked) w.checked_vms.push_back(vm);
    }
  }
  fc.policy_yaml = policy.str();

  // ---- script ----
  ScriptWriter s;
  if (replicas > 0) s.line(0, "controllers " + std::to_string(replicas));
  s.line(0, "apply policy.yaml");
  const Millis faults_end = rng.range(180, 300) * 1000;
  Millis t = 10000 + rng.range(0, 500) * 10;
  while (t < faults_end) {
    event(rng, w, s, t);
    // Mostly a few seconds apart, sometimes bursts, sometimes quiet spells.
    const int64_t k = rng.range(0, 9);
    const Millis gap = k < 3   ? rng.range(1, 100) * 10
                       : k < 8 ? rng.range(100, 800) * 10
                               : rng.range(800, 3000) * 10;
    t += gap;
  }
  // Heal everything, then let it settle.
  const Millis heal = faults_end;
  if (replicas > 0) {
    for (const auto& r : w.replicas) {
      s.line(heal, "controller " + r + " store on");
      s.line(heal, "controller " + r + " start");
    }
  } else {
    s.line(heal, "controller start");
  }
  s.line(heal, "controller network on");
  for (const auto& [a, b] : w.cut) s.line(heal, "link " + a + " " + b + " on");
  for (const auto& h : w.hosts) {
    s.line(heal, "host " + h + " power on");
    s.line(heal, "host " + h + " network on");
    s.line(heal, "host " + h + " libvirt slow 0");
    s.line(heal, "agent " + h + " start");
  }
  for (const auto& vm : w.checked_vms) s.line(heal, "vm " + vm + " health ok");
  s.line(heal + 60000, "end");
  fc.script = s.text();
  return fc;
}

FuzzOutcome runFuzzCase(const FuzzCase& c) {
  FuzzOutcome out;
  Result<Scenario> scenario = scenarioFromTexts("seed-" + std::to_string(c.seed), c.cluster_yaml,
                                                {{"policy.yaml", c.policy_yaml}}, c.script);
  if (!scenario) {
    out.error = scenario.status().toString();
    return out;
  }
  Simulation sim(*scenario, [&](const SimEvent& e) {
    if (e.component == "sim" && e.level == "error") out.problems.push_back(formatEvent(e));
  });
  // The replicas' records need the simulation after run(): read them below.
  Status st = sim.run();
  if (!st.isOk()) {
    out.error = st.toString();
    return out;
  }
  out.ran = true;
  out.double_copies = sim.doubleCopies();
  out.collateral = sim.collateralDestroys();
  out.watchdog_resets = sim.watchdogResets();
  out.watchdog_resets_dead = sim.watchdogResetsDeadAgent();
  out.steps = sim.steps();
  if (const ControllerReplicas* r = sim.replicas()) {
    out.leader_overlaps = r->unforcedOverlaps();
    out.terms = r->termsActed();
    out.fenced_writes = r->fencedWrites();
    out.overstay_ticks = r->overlappingTicks();
    for (const auto& a : r->history()) {
      if (a.to_ms < 0) continue;
      for (const auto& b : r->history()) {
        if (&a == &b || a.overstayed || b.overstayed) continue;
        if (a.from_ms < (b.to_ms < 0 ? sim.nowMs() + 1 : b.to_ms) && b.from_ms < a.to_ms) {
          out.problems.push_back("replicas " + a.replica + " (term " + std::to_string(a.term) + ") and " +
                                 b.replica + " (term " + std::to_string(b.term) + ") acted at once");
        }
      }
    }
  }
  return out;
}

bool saveFuzzCase(const FuzzCase& c, const std::string& dir, const std::string& why) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return false;
  auto write = [&](const char* name, const std::string& text) {
    std::ofstream f(fs::path(dir) / name, std::ios::binary);
    f << text;
    return static_cast<bool>(f);
  };
  return write("cluster.yaml", c.cluster_yaml) && write("policy.yaml", c.policy_yaml) &&
         write("script", c.script) &&
         write("assert", "max_running_copies == 1\ncollateral_destroys == 0\n") &&
         write("README", "tierwarden-sim fuzz seed " + std::to_string(c.seed) + ": " + why + "\n");
}

int runFuzz(const FuzzOptions& options, std::ostream& out, std::ostream& err) {
  const auto started = std::chrono::steady_clock::now();
  int64_t doubles = 0, collateral = 0, resets = 0, resets_dead = 0, steps = 0, failed = 0;
  int64_t overlaps = 0, terms = 0, fenced_writes = 0, overstay_ticks = 0;
  bool malformed = false;
  for (int64_t i = 0; i < options.seeds; ++i) {
    const uint64_t seed = options.start + static_cast<uint64_t>(i);
    const FuzzCase c = generateFuzzCase(seed, options.replicas, options.overstay_window);
    const FuzzOutcome o = runFuzzCase(c);
    if (!o.ran) {
      err << "seed " << seed << ": the generated case does not run: " << o.error << "\n";
      malformed = true;
      continue;
    }
    doubles += o.double_copies;
    collateral += o.collateral;
    resets += o.watchdog_resets;
    resets_dead += o.watchdog_resets_dead;
    steps += o.steps;
    overlaps += o.leader_overlaps;
    terms += o.terms;
    fenced_writes += o.fenced_writes;
    overstay_ticks += o.overstay_ticks;
    const bool bad = o.double_copies > 0 || o.collateral > 0 || o.leader_overlaps > 0;
    std::string why = std::to_string(o.double_copies) + " double copies, " +
                      std::to_string(o.collateral) + " collateral destroys";
    if (options.replicas > 0) why += ", " + std::to_string(o.leader_overlaps) + " leader overlaps";
    if (bad) {
      ++failed;
      out << "seed " << seed << ": FAILED: " << why << "\n";
      size_t shown = 0;
      for (const auto& p : o.problems) {
        if (++shown > 6) {
          out << "  ... (" << o.problems.size() - 6 << " more)\n";
          break;
        }
        out << "  " << p << "\n";
      }
      out << "  replay: tierwarden-sim fuzz --seeds 1 --start " << seed
          << (options.replicas > 0 ? " --replicas " + std::to_string(options.replicas) : std::string())
          << " --save DIR, then tierwarden-sim run DIR/seed-" << seed << "\n";
    }
    if (!options.save_dir.empty() && (bad || options.save_all)) {
      const std::string dir =
          (fs::path(options.save_dir) / ("seed-" + std::to_string(seed))).string();
      if (!saveFuzzCase(c, dir, bad ? why : "held")) {
        err << dir << ": cannot write the scenario\n";
      }
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  out << "fuzz: " << options.seeds << " seeds, " << doubles << " double copies, " << collateral
      << " collateral destroys, " << steps << " steps\n";
  out << "fuzz: " << resets << " watchdog resets (" << resets_dead
      << " of hosts whose agent was dead for the watchdog's timeout)\n";
  if (options.replicas > 0) {
    out << "fuzz: " << options.replicas << " controller replicas: " << terms << " terms acted, " << overlaps
        << " leader overlaps (without an overstay), " << overstay_ticks
        << " ticks two replicas acted (overstays), " << fenced_writes
        << " writes refused by the leader guard\n";
  }
  out.flush();
  err << "fuzz: seeds " << options.start << ".." << options.start + options.seeds - 1 << ", "
      << failed << " failing, " << static_cast<int64_t>(secs) << " s\n";
  if (malformed) return 2;
  return doubles > 0 || collateral > 0 || overlaps > 0 ? 1 : 0;
}

}  // namespace tw::sim
