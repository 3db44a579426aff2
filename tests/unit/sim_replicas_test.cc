// The simulator's controller replicas (sim/controller_replicas.h): real
// Controllers with their LeaderLease and EtcdStore over one FakeEtcd, on the
// virtual clock. What is pinned here is timing on the simulator's clock,
// which the scenarios' golden logs show but do not measure.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "sim/controller_replicas.h"
#include "sim/fuzz.h"
#include "sim/scenario.h"
#include "sim/simulation.h"

namespace tw::sim {
namespace {

const char* kCluster = R"(hosts:
  - name: h1
    capacity: { cpus: 4, memory: 4GiB }
  - name: h2
    capacity: { cpus: 4, memory: 4GiB }
  - name: h3
    role: spare
    capacity: { cpus: 4, memory: 4GiB }
)";

const char* kPolicy = R"(tiers:
  - name: web
    image: tiny-web
    replicas: 2
    memory: 512MiB
)";

struct RunResult {
  std::vector<ControllerReplicas::Acting> history;
  int64_t double_copies = 0;
  int max_copies = 0;
  int64_t fenced_writes = 0;
  int64_t overlapping_ticks = 0;
  int64_t unforced_overlaps = 0;
  Json state;
  std::vector<std::string> log;
};

RunResult runScript(const std::string& script) {
  RunResult out;
  Result<Scenario> s = scenarioFromTexts("replicas", kCluster, {{"policy.yaml", kPolicy}}, script);
  EXPECT_TRUE(s.isOk()) << s.status().toString();
  if (!s.isOk()) return out;
  Simulation sim(*s, [&](const SimEvent& e) { out.log.push_back(formatEvent(e)); });
  Status st = sim.run();
  EXPECT_TRUE(st.isOk()) << st.toString();
  EXPECT_NE(sim.replicas(), nullptr);
  if (sim.replicas() == nullptr) return out;
  out.history = sim.replicas()->history();
  out.double_copies = sim.doubleCopies();
  out.max_copies = sim.maxRunningCopies();
  out.fenced_writes = sim.replicas()->fencedWrites();
  out.overlapping_ticks = sim.replicas()->overlappingTicks();
  out.unforced_overlaps = sim.replicas()->unforcedOverlaps();
  out.state = sim.stateJson();
  return out;
}

std::string dump(const RunResult& r) {
  std::string out;
  for (const auto& line : r.log) out += line + "\n";
  return out;
}

// Pins the hand-over after a leader crash: c1 leads from 0s; killed at 10s
// (its last renewal was at 9s), its etcd lease runs out at 12s, and c2 (the
// next to read the leader key, every 250 ms) leads within TTL + 250 ms of
// the last renewal; the agents follow it (the hosts are online in its view)
// and every VM runs once.
TEST(SimReplicasTest, LeaderCrashHandsOverWhenItsLeaseRunsOut) {
  RunResult r = runScript("0s controllers 3\n0s apply policy.yaml\n10s controller leader kill\n30s end\n");
  ASSERT_EQ(r.history.size(), 2u) << dump(r);
  EXPECT_EQ(r.history[0].replica, "c1");
  EXPECT_EQ(r.history[0].from_ms, 0);
  EXPECT_EQ(r.history[0].to_ms, 10000);
  EXPECT_EQ(r.history[1].replica, "c2");
  EXPECT_GT(r.history[1].term, r.history[0].term);
  EXPECT_GE(r.history[1].from_ms, 9000 + ControllerReplicas::kLeaderTtlMs);
  EXPECT_LE(r.history[1].from_ms, 9000 + ControllerReplicas::kLeaderTtlMs + 250);
  EXPECT_EQ(r.history[1].to_ms, -1);
  EXPECT_EQ(r.state["controllers"]["leader"], "c2");
  for (const Json& h : r.state["hosts"]) EXPECT_EQ(h["state"], "online") << h.dump();
  EXPECT_EQ(r.double_copies, 0);
  EXPECT_EQ(r.max_copies, 1);
  EXPECT_EQ(r.unforced_overlaps, 0);
}

// Pins invariant 6's timing on the simulator's clock: a leader cut off from
// etcd (not from the agents) stops acting at its own deadline (last renewal
// + TTL - margin), strictly before etcd lets the next replica in (last
// renewal + TTL); it comes back as a follower and never acts again.
TEST(SimReplicasTest, LeaderCutOffFromEtcdStopsBeforeAnotherStarts) {
  RunResult r = runScript(
      "0s controllers 3\n0s apply policy.yaml\n10s controller c1 store off\n20s controller c1 store on\n"
      "40s end\n");
  ASSERT_EQ(r.history.size(), 2u) << dump(r);
  const auto& old_leader = r.history[0];
  const auto& next = r.history[1];
  EXPECT_EQ(old_leader.replica, "c1");
  EXPECT_EQ(old_leader.to_ms, 9000 + ControllerReplicas::kLeaderTtlMs - ControllerReplicas::kLeaderMarginMs);
  EXPECT_EQ(next.replica, "c2");
  EXPECT_LT(old_leader.to_ms, next.from_ms);
  EXPECT_GE(next.from_ms - old_leader.to_ms, ControllerReplicas::kLeaderMarginMs);
  EXPECT_EQ(r.overlapping_ticks, 0);
  EXPECT_EQ(r.unforced_overlaps, 0);
  EXPECT_EQ(r.state["controllers"]["leader"], "c2");
}

// Pins the txn guard: a replica that overstays (its clock stopped) acts in
// the same ticks as the new leader; the first write it tries fails etcd's
// compare on the leader key, which ends it (at the next 10 ms step: it takes
// no heartbeat meanwhile); the crash it heard of first is recorded once, by
// the new leader, and nothing runs twice.
TEST(SimReplicasTest, OverstayingLeaderWritesNothing) {
  RunResult r = runScript(
      "0s controllers 3\n0s apply policy.yaml\n10500ms controller c1 overstay\n13050ms vm web-2 crash\n"
      "30s end\n");
  ASSERT_EQ(r.history.size(), 2u) << dump(r);
  EXPECT_TRUE(r.history[0].overstayed);
  EXPECT_GT(r.history[0].to_ms, r.history[1].from_ms);  // they overlapped...
  EXPECT_EQ(r.history[0].to_ms, 13050 + kStepMs);        // ...until its first refused write
  for (const Json& vm : r.state["vms"]) {
    if (vm["name"] == "web-2") {
      EXPECT_EQ(vm["restarts"], 1) << vm.dump();
    }
  }
  EXPECT_GE(r.overlapping_ticks, 1);
  EXPECT_GT(r.fenced_writes, 0) << dump(r);
  EXPECT_EQ(r.unforced_overlaps, 0);
  EXPECT_EQ(r.double_copies, 0);
  EXPECT_EQ(r.max_copies, 1);
  for (const Json& vm : r.state["vms"]) {
    EXPECT_EQ(vm["state"], "running") << vm.dump();
    EXPECT_EQ(vm["running_on"].size(), 1u) << vm.dump();
  }
}

// Pins that with no replica up the agents get no answer (503 everywhere),
// and that a replica started again leads and the cluster converges.
TEST(SimReplicasTest, AllReplicasDownThenOneBack) {
  RunResult r = runScript(
      "0s controllers 2\n0s apply policy.yaml\n5s controller c1 kill\n5s controller c2 kill\n"
      "15s controller c2 start\n30s end\n");
  ASSERT_EQ(r.history.size(), 2u) << dump(r);
  EXPECT_EQ(r.history[1].replica, "c2");
  EXPECT_GE(r.history[1].from_ms, 15000);
  EXPECT_EQ(r.state["controllers"]["leader"], "c2");
  EXPECT_EQ(r.double_copies, 0);
  for (const Json& vm : r.state["vms"]) EXPECT_EQ(vm["state"], "running") << vm.dump();
}

// Pins the fuzz's replica mode: the case starts with `controllers R`, its
// controller faults name replicas (never the one controller's stop/stall),
// the heal brings every replica back; without replicas no `controllers`
// line appears. One generated case runs with no double copy and no leader
// overlap.
TEST(SimReplicasTest, FuzzCasesWithReplicas) {
  bool replica_faults = false;
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    FuzzCase plain = generateFuzzCase(seed);
    EXPECT_EQ(plain.script.find("controllers"), std::string::npos);
    FuzzCase c = generateFuzzCase(seed, 3);
    EXPECT_EQ(c.script.rfind("0ms controllers 3\n", 0), 0u) << c.script;
    EXPECT_EQ(c.script.find("controller stop"), std::string::npos) << c.script;
    EXPECT_EQ(c.script.find("controller stall"), std::string::npos) << c.script;
    EXPECT_NE(c.script.find("controller c3 start"), std::string::npos) << c.script;
    replica_faults |= c.script.find("controller leader kill") != std::string::npos;
  }
  EXPECT_TRUE(replica_faults);
  FuzzOutcome o = runFuzzCase(generateFuzzCase(2, 3));
  ASSERT_TRUE(o.ran) << o.error;
  EXPECT_EQ(o.double_copies, 0);
  EXPECT_EQ(o.leader_overlaps, 0);
  EXPECT_GE(o.terms, 1);
}

}  // namespace
}  // namespace tw::sim
