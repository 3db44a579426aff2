// sim_hour: one simulated hour of a big cluster on the simulator's engine
// (sim/simulation.h): 100 hosts (16 vCPUs, 64 GiB; 10 of them spares),
// 10 tiers of 100 replicas (512 MiB each) = 1,000 VMs, and 10 host power
// failures at spread times (each host powers on again 5 minutes later).
// Prints the real time taken, simulated/real, the CPU time, the process's peak RSS, and
// what the run came to (events, VMs running, most copies of one VM at once).
//
//   build/bin/sim_hour [--minutes 60] [--hosts 100] [--failures 10] [--vms 1000]
//                      [--host-cpus N]
//
// Host size. The default run fills 1,000 of its 1,600 vCPU slots (62.5 %;
// a VM takes 1 vCPU, and vCPUs bind before memory): after all 10 failures
// the 90 hosts left still have 1,440 slots, so every VM can run. With more
// VMs per host (--hosts 1000 --vms 20000: 20 per host) 16 vCPUs no longer
// hold them all (990 active hosts x 16 = 15,840 < 20,000), so unless
// --host-cpus is given the hosts get the vCPUs that keep the default's fill:
// max(16, ceil(1.6 x VMs / hosts)) — 16 for the default run, 32 for
// 1,000 hosts and 20,000 VMs (32,000 slots; 31,360 with 10 hosts down).
// Memory (64 GiB, 512 MiB a VM: 128 VMs) never binds first at these sizes.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "sim/scenario.h"
#include "sim/simulation.h"
#include "tw/log.h"

namespace {

std::string hostName(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "h%03d", i);
  return buf;
}

std::string at(tw::Millis ms) { return std::to_string(ms) + "ms"; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sim_hour: a simulated hour of a 100-host, 1,000-VM cluster"};
  int minutes = 60;
  int host_count = 100;
  int spares = 10;
  int tiers = 10;
  int replicas = 100;
  int failures = 10;
  app.add_option("--minutes", minutes, "simulated minutes")->capture_default_str();
  app.add_option("--hosts", host_count, "hosts (64 GiB)")->capture_default_str();
  int host_cpus = 0;
  app.add_option("--host-cpus", host_cpus,
                 "vCPUs per host (default: max(16, ceil(1.6 x VMs / hosts)), the default "
                 "run's 62.5 % fill)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--spares", spares, "of which spares")->capture_default_str();
  app.add_option("--tiers", tiers, "tiers")->capture_default_str();
  app.add_option("--replicas", replicas, "replicas per tier (512 MiB)")->capture_default_str();
  app.add_option("--failures", failures, "host power failures")->capture_default_str();
  int vms = 0;
  app.add_option("--vms", vms, "VMs in all (sets --replicas to VMS / --tiers)");
  CLI11_PARSE(app, argc, argv);
  if (vms > 0) {
    tiers = std::max(tiers, (vms + 999) / 1000);  // a tier has at most 1,000 replicas
    replicas = std::max(1, vms / tiers);
  }
  if (host_count < 1) {
    std::fprintf(stderr, "--hosts must be at least 1\n");
    return 2;
  }
  if (host_cpus == 0) {
    const int64_t total_vms = static_cast<int64_t>(tiers) * replicas;
    host_cpus = static_cast<int>(
        std::max<int64_t>(16, (total_vms * 16 + host_count * 10 - 1) / (host_count * 10)));
  }
  tw::log::init("sim_hour", "off");

  std::ostringstream cluster;
  cluster << "hosts:\n";
  for (int i = 1; i <= host_count; ++i) {
    cluster << "  - name: " << hostName(i) << "\n"
            << "    role: " << (i > host_count - spares ? "spare" : "active") << "\n"
            << "    capacity: { cpus: " << host_cpus << ", memory: 64GiB }\n"
            << "    fence: { agent: ok }\n";
  }
  tw::sim::Scenario scenario;
  scenario.name = "sim_hour";
  if (tw::Status s = tw::sim::loadHosts(cluster.str(), "sim_hour cluster", &scenario); !s.isOk()) {
    std::fprintf(stderr, "%s\n", s.toString().c_str());
    return 2;
  }
  std::ostringstream policy;
  policy << "tiers:\n";
  for (int t = 1; t <= tiers; ++t) {
    policy << "  - name: tier" << t << "\n    image: tiny\n    replicas: " << replicas
           << "\n    memory: 512MiB\n";
  }
  scenario.files["policy.yaml"] = tw::PolicyFile{"policy.yaml", policy.str()};

  // Failures at spread times over the active hosts, each back 5 min later.
  const tw::Millis total_ms = static_cast<tw::Millis>(minutes) * 60000;
  std::ostringstream script;
  script << "0s apply policy.yaml\n";
  std::vector<std::pair<tw::Millis, std::string>> lines;
  for (int k = 0; k < failures; ++k) {
    const tw::Millis t = total_ms * (k + 1) / (failures + 2) / 1000 * 1000;
    const std::string host = hostName(1 + (k * 37) % std::max(1, host_count - spares));
    lines.push_back({t, "host " + host + " power off"});
    lines.push_back({t + 300000, "host " + host + " power on"});
  }
  std::stable_sort(lines.begin(), lines.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [t, cmd] : lines) {
    if (t < total_ms) script << at(t) << " " << cmd << "\n";
  }
  script << at(total_ms) << " end\n";
  tw::Result<tw::sim::Script> parsed = tw::sim::parseScript(script.str(), "sim_hour script");
  if (!parsed) {
    std::fprintf(stderr, "%s\n", parsed.status().toString().c_str());
    return 2;
  }
  scenario.script = *parsed;

  int64_t lines_logged = 0;
  int64_t errors = 0;
  tw::sim::Simulation sim(scenario, [&](const tw::sim::SimEvent& e) {
    ++lines_logged;
    if (e.level == "error") ++errors;
  });
  const auto started = std::chrono::steady_clock::now();  // the bench's own measure
  tw::Status s = sim.run();
  const double real_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!s.isOk()) {
    std::fprintf(stderr, "the simulation could not run: %s\n", s.toString().c_str());
    return 1;
  }
  tw::Json state = sim.stateJson();
  int running = 0;
  for (const auto& vm : state["vms"]) {
    if (vm["state"] == "running") ++running;
  }
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  const double simulated_s = static_cast<double>(sim.nowMs()) / 1000.0;
  std::printf(
      "cluster: %d hosts (%d spares, %d vCPUs each), %d VMs in %d tiers, %d host failures\n",
      host_count, spares, host_cpus, tiers * replicas, tiers, failures);
  std::printf("simulated: %.0f s\n", simulated_s);
  std::printf("real: %.2f s\n", real_s);
  std::printf("simulated/real: %.1f\n", real_s > 0 ? simulated_s / real_s : 0.0);
  // CPU time as well: on a loaded machine the real time grows, this does not.
  const double cpu_s = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                       static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  std::printf("cpu: %.2f s (user + sys)\n", cpu_s);
  std::printf("peak RSS: %.1f MiB\n", static_cast<double>(usage.ru_maxrss) / 1024.0);
  std::printf("events: %lld log lines (%lld at error level)\n",
              static_cast<long long>(lines_logged), static_cast<long long>(errors));
  std::printf("end: %d of %zu VMs running, max running copies %d, incidents %zu\n", running,
              state["vms"].size(), sim.maxRunningCopies(), state["incidents"].size());
  return 0;
}
