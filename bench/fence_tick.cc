// bench/fence_tick: what placing one fenced host's VMs costs the controller's
// loop at N hosts x 20 VMs (issue #16), in process, on a manual clock: no
// HTTP, no agents' threads, so the figure does not depend on how many
// heartbeats a loaded machine lets through (bench/scale's fence needs a
// quorum of them).
//
// It applies N hosts (capacity 64 vCPUs, 256 GiB, fence agent "ipmi" that
// confirms at once) and 20·N VMs in 1,000-replica tiers (bench/scale's
// policy), heartbeats every host once a virtual second reporting its VMs
// running until all run, then silences host 1 (its peers report it
// unreachable, its libvirt is gone) and steps the loop until it is fenced.
// It prints, in wall time:
//   - the fence tick: the runOnce() in which the fence was confirmed and its
//     VMs placed (fenced(), placement, assignments, the tick's writes), and
//     within it bench/scale's stage "placed": host.fenced -> last vm.placed;
//   - place() on the whole input of that moment (every VM's current host):
//     what each placement run cost before PlacementIndex, for comparison;
//   - the placement runs of the whole bench, and how many were full ones.
// A program that prints figures, not a test.
//
// With --full-placement every placement run is place() on everything, as
// before PlacementIndex (Controller::setIncrementalPlacement(false)): the
// same cluster and fence, to compare the fence tick.
//
//   build/bin/fence_tick [--hosts 1000] [--vms-per-host 20] [--full-placement]
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "controller/controller.h"
#include "controller/fence_agents.h"
#include "tw/clock.h"
#include "tw/log.h"
#include "tw/placement.h"
#include "tw/store.h"

namespace {

using Steady = std::chrono::steady_clock;

double msSince(Steady::time_point t0) {
  return std::chrono::duration<double, std::milli>(Steady::now() - t0).count();
}

// Libvirt answers for the hosts in `alive`; every fence agent confirms.
class BenchConnector final : public tw::HostConnector {
 public:
  void setHosts(const std::vector<tw::HostSpec>&) override {}
  bool libvirtAlive(const std::string& host) override { return alive.count(host) > 0; }
  void fenceByLibvirt(const std::string& host) override { results.push_back({host, "libvirt", true, "destroyed"}); }
  void fenceByAgent(const std::string& host, const std::string& agent, const std::vector<std::string>&,
                    tw::Millis) override {
    results.push_back({host, "agent", true, "exited 0", agent});
  }
  std::vector<tw::FenceResult> takeResults() override {
    std::vector<tw::FenceResult> out;
    out.swap(results);
    return out;
  }
  std::set<std::string> alive;
  std::vector<tw::FenceResult> results;
};

std::string hostName(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "h%04d", i);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fence_tick: one fenced host's placement in the controller's loop (issue #16)"};
  int n = 1000;
  int per_host = 20;
  app.add_option("--hosts", n, "hosts")->capture_default_str();
  app.add_option("--vms-per-host", per_host, "VMs per host")->capture_default_str();
  bool full_placement = false;
  app.add_flag("--full-placement", full_placement, "place() on every VM in every placement run (as before)");
  CLI11_PARSE(app, argc, argv);
  tw::log::init("fence_tick", "warn");

  tw::ManualClock clock(1000);
  auto store = tw::Store::open(":memory:");
  if (!store.isOk()) return std::fprintf(stderr, "store: %s\n", store.status().toString().c_str()), 1;
  auto agents = tw::parseFenceAgents("ipmi = true\n", "fence-agents.conf");
  if (!agents.isOk()) return std::fprintf(stderr, "agents: %s\n", agents.status().toString().c_str()), 1;
  BenchConnector connector;
  tw::Controller c(**store, clock, &connector, *agents);
  if (!c.recover().isOk()) return std::fprintf(stderr, "recover failed\n"), 1;
  c.setIncrementalPlacement(!full_placement);
  // bench/scale's stage "placed": from the host.fenced event to the last of
  // its VMs' vm.placed events (the same tick: fenced(), then placement).
  Steady::time_point fenced_at, last_placed_at;
  c.setEventListener([&](const tw::EventRecord& e) {
    if (e.kind == "host.fenced") fenced_at = Steady::now();
    if (e.kind == "vm.placed") last_placed_at = Steady::now();
  });

  std::ostringstream hosts;
  hosts << "cluster:\n  n_plus_one: off\nhosts:\n";
  for (int i = 1; i <= n; ++i) {
    hosts << "  - name: " << hostName(i) << "\n    uri: \"qemu+tcp://" << hostName(i)
          << "/system\"\n    fence: { agent: ipmi }\n    capacity: { cpus: 64, memory: 256GiB }\n";
    connector.alive.insert(hostName(i));
  }
  std::ostringstream tiers;
  tiers << "tiers:\n";
  const int tier_count = std::max(10, (n * per_host + 999) / 1000);
  for (int t = 1; t <= tier_count; ++t) {
    tiers << "  - name: tier" << t << "\n    image: tiny\n    replicas: " << n * per_host / tier_count
          << "\n    memory: 512MiB\n";
  }

  std::set<std::string> silent;
  // One virtual second: every host that is not silent heartbeats (its VMs
  // running, the silent hosts unreachable), then ten loop ticks.
  Steady::time_point fence_tick_start;
  double fence_tick_ms = -1;
  auto second = [&] {
    for (int i = 1; i <= n; ++i) {
      const std::string h = hostName(i);
      if (silent.count(h)) continue;
      tw::Heartbeat hb;
      hb.host = h;
      hb.agent_id = "agent-" + h;
      hb.capacity = {64, 256 * 1024};
      const tw::AssignmentSet set = c.assignmentsFor(h);
      hb.assignments_version = set.version;
      hb.assignments_controller = set.controller_id;
      for (const auto& a : set.assignments) {
        if (a.incoming) continue;
        tw::DomainReport d;
        d.vm = a.vm;
        d.tier = a.tier;
        d.epoch = a.epoch;
        d.state = tw::DomainState::kRunning;
        d.health = tw::Health::kHealthy;
        hb.domains.push_back(d);
      }
      for (const auto& s : silent) hb.peers_unreachable[s] = 60000;
      (void)c.handleHeartbeat(hb);
    }
    for (int k = 0; k < 10; ++k) {
      clock.advance(100);
      const bool was_fenced = !silent.empty() && c.host(*silent.begin())->state == tw::HostState::kFenced;
      fence_tick_start = Steady::now();
      c.runOnce();
      if (!silent.empty() && !was_fenced && c.host(*silent.begin())->state == tw::HostState::kFenced) {
        fence_tick_ms = msSince(fence_tick_start);
      }
    }
  };
  auto allRunning = [&] {
    for (const auto& vm : c.vms())
      if (vm.state != tw::VmState::kRunning) return false;
    return true;
  };

  auto t0 = Steady::now();
  if (!c.applyPolicy({{"hosts.yaml", hosts.str()}}, false).isOk()) return std::fprintf(stderr, "hosts refused\n"), 1;
  second();
  auto applied = c.applyPolicy({{"tiers.yaml", tiers.str()}}, false);
  if (!applied.isOk()) return std::fprintf(stderr, "tiers: %s\n", applied.status().toString().c_str()), 1;
  int waited = 0;
  while (!allRunning() && waited < 120) {
    second();
    ++waited;
  }
  if (!allRunning()) return std::fprintf(stderr, "not all VMs run after %d s\n", waited), 1;
  std::printf("setup: %d hosts, %d VMs running after %d virtual s (%.1f s wall)\n", n, n * per_host, waited,
              msSince(t0) / 1000.0);

  const std::string victim = hostName(1);
  std::vector<std::string> displaced;
  for (const auto& vm : c.vms())
    if (vm.host == victim) displaced.push_back(vm.name);
  const int64_t runs_before = c.placementRuns();
  const int64_t full_before = c.placementFullRuns();
  silent.insert(victim);
  connector.alive.erase(victim);
  int fence_s = 0;
  while (c.host(victim)->state != tw::HostState::kFenced && fence_s < 60) {
    second();
    ++fence_s;
  }
  if (fence_tick_ms < 0) return std::fprintf(stderr, "host %s not fenced in 60 s\n", victim.c_str()), 1;
  int placed = 0;
  for (const auto& name : displaced) {
    const tw::VmRecord* vm = c.vm(name);
    if (vm != nullptr && !vm->host.empty() && vm->host != victim) ++placed;
  }

  // place() on everything, as each placement run did before PlacementIndex.
  tw::PlacementInput input;
  tw::Policy policy = c.policy();
  input.policy = &policy;
  for (const auto& spec : policy.hosts) {
    tw::HostView v;
    v.name = spec.name;
    v.capacity = {64, 256 * 1024};
    v.schedulable = spec.name != victim;
    input.hosts.push_back(v);
  }
  for (const auto& vm : c.vms())
    if (!vm.host.empty()) input.current[vm.name] = vm.host;
  for (const auto& name : displaced) input.current.erase(name);
  auto p0 = Steady::now();
  tw::PlacementResult whole = tw::place(input);
  const double place_ms = msSince(p0);

  std::printf("fence of %s: %d of its %zu VMs placed elsewhere in the fence tick\n", victim.c_str(), placed,
              displaced.size());
  std::printf("fence tick (runOnce, %s placement): %.2f ms; host.fenced -> last vm.placed: %.2f ms\n",
              full_placement ? "full" : "incremental", fence_tick_ms,
              std::chrono::duration<double, std::milli>(last_placed_at - fenced_at).count());
  std::printf("place() on the whole input (every placement run before): %.2f ms (%zu VMs decided)\n", place_ms,
              whole.vms.size());
  std::printf("placement runs since the fence: %lld, of them full: %lld; in the whole bench: %lld, full: %lld\n",
              static_cast<long long>(c.placementRuns() - runs_before),
              static_cast<long long>(c.placementFullRuns() - full_before),
              static_cast<long long>(c.placementRuns()), static_cast<long long>(c.placementFullRuns()));
  return placed == static_cast<int>(displaced.size()) ? 0 : 1;
}
