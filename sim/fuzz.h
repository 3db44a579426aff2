// `tierwarden-sim fuzz`: randomized failure schedules against the real
// controller and agents (invariants 1 and 5 of DESIGN.md).
//
// Each seed gives one case, deterministically (the generator uses its own
// splitmix64, not <random>'s distributions, whose output the standard leaves
// to the library):
//  - a cluster of 3-7 hosts (0-2 of them spares; fence by libvirt, a fence
//    agent that works or fails, or lease expiry only) and one of three timing
//    presets (the defaults; the demo's fast detection; a slow one);
//  - a policy of 1-3 tiers of 1-3 replicas, some with a tcp health check,
//    sometimes with tier order, well within the hosts' capacity;
//  - a script: `apply` at 0s, then 3-5 virtual minutes of failures drawn from
//    every script command (VM crashes, health and start failures, host power
//    and network, slow libvirt, failed migrations, agent stop/start/stall,
//    controller stop/start/restart/stall/network, one-way and two-way link
//    cuts, partitions of the cluster in two, drain/undrain/migrate/reset/
//    restart), then everything healed, then a minute to settle.
// After every step the simulator checks its ground truth: no VM running on two
// hosts at once (double copies), and no VM destroyed by fencing on a host that
// was not cut off (collateral destroys; the definition is in sim/simulation.h).
//
//   tierwarden-sim fuzz --seeds N [--start S] [--replicas R] [--save DIR] [--save-all]
//
// With --replicas R (2-7) the cluster runs R controller replicas on an
// in-memory etcd (`controllers R`, sim/controller_replicas.h), and the
// controller-process faults become replica faults: the leader (or a
// follower) killed, started, restarted, cut off from etcd and back, and now
// and then a leader that overstays its term (two replicas act for a tick).
// Besides double copies and collateral destroys it then counts leader
// overlaps: two replicas that acted at once without an overstay (a replica
// that stops at its own deadline never overlaps its successor); each fails.
// Without --replicas a seed gives the very case it gave before.
//
// prints each failing seed with what broke and how to replay it, then
//   fuzz: N seeds, X double copies, Y collateral destroys, Z steps
//   fuzz: R watchdog resets (D of hosts whose agent was dead for W)
// and exits 1 when X or Y > 0 (there are no known gaps any more: every double
// copy and every collateral destroy fails). --save DIR writes each failing seed (every
// seed with --save-all) as a scenario folder DIR/seed-S (cluster.yaml,
// policy.yaml, script, assert, README) that `tierwarden-sim run` replays.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace tw::sim {

struct FuzzOptions {
  int64_t seeds = 100;
  uint64_t start = 1;
  std::string save_dir;  // empty: save nothing
  bool save_all = false;
  int replicas = 0;  // 0: one controller on SQLite
  // With replicas: an overstaying leader's window between its refused write
  // and its exit is not hidden (`controller leader overstay window`): only
  // the controller's TermGuard keeps what it decides there in.
  bool overstay_window = false;
};

// One generated case: the texts of a scenario folder.
struct FuzzCase {
  uint64_t seed = 0;
  std::string cluster_yaml;
  std::string policy_yaml;
  std::string script;
  int replicas = 0;
};

FuzzCase generateFuzzCase(uint64_t seed, int replicas = 0, bool overstay_window = false);

struct FuzzOutcome {
  bool ran = false;
  std::string error;                // why it did not run (a generator bug)
  int64_t double_copies = 0;
  int64_t collateral = 0;
  int64_t watchdog_resets = 0;       // hosts reset by their watchdog
  int64_t watchdog_resets_dead = 0;  // of those: their agent was not running
  int64_t steps = 0;
  // With replicas:
  int64_t leader_overlaps = 0;  // ControllerReplicas::unforcedOverlaps()
  int64_t terms = 0;            // times a replica began to act
  int64_t fenced_writes = 0;    // writes etcd refused for a deposed term
  int64_t overstay_ticks = 0;   // ticks in which two replicas acted (overstays)
  std::vector<std::string> problems;  // the simulator's error lines
};

FuzzOutcome runFuzzCase(const FuzzCase& c);

// Writes the case as a scenario folder `dir` (created). False when it cannot.
bool saveFuzzCase(const FuzzCase& c, const std::string& dir, const std::string& why);

// The `fuzz` subcommand. Returns 0 when every seed held, 1 when one did not,
// 2 when a case could not be built.
int runFuzz(const FuzzOptions& options, std::ostream& out, std::ostream& err);

}  // namespace tw::sim
