// The simulator's pieces around the real controller and agents: the hosts
// file it generates, cluster-wide start failures, the host connector, the
// in-process link, and a whole run being deterministic.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "controller_fixture.h"
#include "sim/controller_front.h"
#include "sim/in_process_link.h"
#include "sim/scenario.h"
#include "sim/sim_host_connector.h"
#include "sim/sim_hypervisor.h"
#include "sim/simulation.h"
#include "tw/policy.h"

namespace tw::sim {
namespace {

const char* kCluster = R"(
cluster:
  lease: 6s
hosts:
  - name: h1
    capacity: { cpus: 4, memory: 4GiB }
  - name: h2
    fence: { agent: fail }
  - name: h3
    role: spare
    fence: { agent: ok }
  - name: h4
    uri: sim://h4
    fence: none
)";

// Pins how cluster.yaml becomes sim-hosts.yaml: uri filled in, fence libvirt
// by default, fence agents kept (the simulated controller defines them),
// capacity kept as the simulated hardware only, non-default settings carried
// over.
TEST(SimWorldTest, GeneratesTheHostsPolicy) {
  Scenario s;
  Status st = loadHosts(kCluster, "cluster.yaml", &s);
  ASSERT_TRUE(st.isOk()) << st.toString();
  ASSERT_EQ(s.hosts.size(), 4u);
  EXPECT_EQ(s.settings.lease_ms, 6000);
  EXPECT_EQ(s.hosts[0].capacity.cpus, 4);
  EXPECT_EQ(s.hosts[0].capacity.memory_mib, 4096);
  EXPECT_EQ(s.hosts[1].capacity.cpus, 8);  // the FakeHypervisor default

  Result<Policy> p = parsePolicy({s.hosts_policy});
  ASSERT_TRUE(p.isOk()) << p.status().toString() << "\n" << s.hosts_policy.content;
  EXPECT_EQ(s.hosts_policy.name, "sim-hosts.yaml");
  EXPECT_EQ(p->settings.lease_ms, 6000);
  EXPECT_EQ(p->hosts[0].uri, "sim://h1");
  EXPECT_EQ(p->hosts[0].fence, FenceMethod::kLibvirt);
  EXPECT_EQ(p->hosts[0].cpus, 0);  // no capacity override
  EXPECT_EQ(p->hosts[1].fence, FenceMethod::kAgent);
  EXPECT_EQ(p->hosts[1].fence_agent, "fail");
  EXPECT_EQ(p->hosts[2].role, HostRole::kSpare);
  EXPECT_EQ(p->hosts[2].fence_agent, "ok");
  FenceAgents agents = simFenceAgents();
  EXPECT_EQ(fenceAgentNames(agents), "'fail', 'ok'");
  EXPECT_EQ(p->hosts[3].fence, FenceMethod::kNone);
}

// Pins what a hosts file may not hold: tiers, a foreign uri, no hosts, a
// fence agent the simulator does not define, the old fence commands.
TEST(SimWorldTest, RefusesBadHostsFiles) {
  Scenario s;
  EXPECT_NE(loadHosts("hosts:\n  - name: h1\n    uri: qemu:///system\n", "c.yaml", &s)
                .toString()
                .find("c.yaml:2:5: host 'h1' has uri 'qemu:///system'"),
            std::string::npos);
  EXPECT_NE(loadHosts("hosts:\n  - name: h1\ntiers:\n  - name: web\n    image: x\n", "c.yaml", &s)
                .toString()
                .find("declares tier 'web'"),
            std::string::npos);
  EXPECT_EQ(loadHosts("cluster:\n  lease: 9s\n", "c.yaml", &s).toString(),
            "c.yaml:1: declares no hosts");
  EXPECT_EQ(
      loadHosts("hosts:\n  - { name: h1, fence: { agent: ipmi } }\n", "c.yaml", &s).toString(),
      "c.yaml:2:33: host 'h1' names fence agent 'ipmi': the simulator defines 'fail', 'ok' "
      "(ok powers the host off, fail fails)");
  EXPECT_NE(
      loadHosts("hosts:\n  - name: h1\n    fence: command\n    fence_command: ok\n", "c.yaml", &s)
          .toString()
          .find("c.yaml:4:5: 'fence_command' (of host 'h1') is no longer supported"),
      std::string::npos);
}

// Pins that `vm V fail-start N` counts N failures over all hosts together,
// and fails only starts that would have happened.
TEST(SimWorldTest, StartFailuresAreCountedClusterWide) {
  FakeHypervisor a, b;
  std::map<std::string, int> fail_starts{{"web-1", 2}};
  SimHypervisor ha(a, fail_starts), hb(b, fail_starts);
  DomainSpec spec;
  spec.meta.vm = "web-1";
  spec.meta.epoch = 1;
  ASSERT_TRUE(ha.define(spec).isOk());
  ASSERT_TRUE(hb.define(spec).isOk());
  EXPECT_EQ(ha.start("web-1").code(), Code::kInternal);
  EXPECT_EQ(hb.start("web-1").code(), Code::kInternal);
  EXPECT_TRUE(ha.start("web-1").isOk());
  EXPECT_TRUE(a.isRunning("web-1"));
  EXPECT_EQ(fail_starts["web-1"], 0);
  // Not defined: FakeHypervisor's own answer, no failure consumed.
  fail_starts["db-1"] = 1;
  EXPECT_EQ(ha.start("db-1").code(), Code::kNotFound);
  EXPECT_EQ(fail_starts["db-1"], 1);
}

class FakeWorld : public SimWorld {
 public:
  bool libvirtAnswers(const std::string& host) override { return alive.count(host) != 0; }
  FakeHypervisor* hypervisorOf(const std::string& host) override {
    return host == "h1" ? &hv : nullptr;
  }
  void powerOffByFence(const std::string& host) override { powered_off.push_back(host); }

  FakeHypervisor hv;
  std::set<std::string> alive;
  std::vector<std::string> powered_off;
};

// Pins the connector: liveness only for watched, answering hosts; a libvirt
// fence destroys every running managed domain; fence agent `fail` fails, any
// other powers the host off; results come with takeResults().
TEST(SimWorldTest, HostConnectorFencesAsTheScenarioSays) {
  FakeWorld world;
  SimHostConnector c(world);
  world.alive = {"h1"};
  EXPECT_FALSE(c.libvirtAlive("h1"));  // not watched yet
  HostSpec h1;
  h1.name = "h1";
  c.setHosts({h1});
  EXPECT_TRUE(c.libvirtAlive("h1"));
  for (const char* vm : {"a-1", "b-1"}) {
    DomainSpec spec;
    spec.meta.vm = vm;
    ASSERT_TRUE(world.hv.define(spec).isOk());
    ASSERT_TRUE(world.hv.start(vm).isOk());
  }
  c.fenceByLibvirt("h1");
  EXPECT_EQ(world.hv.runningCount(), 0);
  world.alive.clear();
  c.fenceByLibvirt("h1");
  c.fenceByAgent("h1", "fail", {"sim-fence", "--fail", "h1"}, 5000);
  c.fenceByAgent("h1", "ok", {"sim-fence", "h1"}, 5000);
  std::vector<FenceResult> r = c.takeResults();
  ASSERT_EQ(r.size(), 4u);
  EXPECT_TRUE(r[0].confirmed);
  EXPECT_EQ(r[0].detail, "destroyed 2 domains");
  EXPECT_FALSE(r[1].confirmed);
  EXPECT_EQ(r[1].detail, "libvirt not answering");
  EXPECT_FALSE(r[2].confirmed);
  EXPECT_EQ(r[2].detail, "exited 1");
  EXPECT_EQ(r[2].agent, "fail");
  EXPECT_TRUE(r[3].confirmed);
  EXPECT_EQ(r[3].method, "agent");
  EXPECT_EQ(r[3].agent, "ok");
  EXPECT_EQ(r[3].detail, "exited 0");
  EXPECT_EQ(world.powered_off, std::vector<std::string>{"h1"});
  EXPECT_TRUE(c.takeResults().empty());
}

// Pins that the in-process link fails as a network does: cut off, or no
// controller, is kUnavailable "network unreachable".
TEST(SimWorldTest, InProcessLinkIsUnreachableWhenCutOff) {
  bool connected = false;
  ControllerFront front;  // no controller: down
  InProcessLink link(front, [&] { return connected; });
  Heartbeat hb;
  hb.host = "h1";
  Result<AssignmentSet> r = link.heartbeat(hb);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_EQ(r.status().message(), "network unreachable");
  connected = true;  // connected, but the controller is down
  EXPECT_EQ(link.sendEvent(AgentEvent{}).code(), Code::kUnavailable);
}

// Pins the controller's HTTP side while its loop is stalled: a heartbeat is
// answered from the last published set (or not at all before any) and
// queued; an event is acknowledged and queued; operator work is queued; the
// end of the stall handles all of it in arrival order.
TEST(SimWorldTest, StalledControllerAnswersFromThePublishedSetAndQueues) {
  ManualClock clock{0};
  auto opened = testing_controller::openController(clock);
  ASSERT_TRUE(opened.isOk()) << opened.status().toString();
  Controller& controller = *opened->controller;
  ControllerFront front;
  front.setController(&controller);
  std::vector<std::string> events;
  controller.setEventListener([&](const EventRecord& e) { events.push_back(e.message); });
  controller.setAssignmentListener(
      [&](const std::string& host, int64_t) { front.published(host); });
  Scenario s;
  ASSERT_TRUE(loadHosts("hosts:\n  - name: h1\n  - name: h2\n", "cluster.yaml", &s).isOk());
  ASSERT_TRUE(controller
                  .applyPolicy({s.hosts_policy, PolicyFile{"p.yaml",
                                                           "tiers:\n  - name: web\n"
                                                           "    image: tiny\n"}},
                               false)
                  .isOk());
  Heartbeat hb;
  hb.host = "h1";
  hb.agent_id = "a1";
  front.stall(5000);
  EXPECT_TRUE(front.stalled());
  Result<AssignmentSet> answer = front.heartbeat(hb);
  ASSERT_TRUE(answer.isOk()) << answer.status().toString();  // published by the apply
  EXPECT_EQ(answer->host, "h1");
  EXPECT_EQ(controller.host("h1")->state, HostState::kUnknown);  // not handled yet
  hb.host = "h9";
  EXPECT_EQ(front.heartbeat(hb).status().code(), Code::kNotFound);
  AgentEvent e;
  e.host = "h1";
  e.kind = "host.note";
  e.message = "queued event";
  EXPECT_TRUE(front.agentEvent(e).isOk());
  bool ran = false;
  EXPECT_FALSE(front.run([&](Controller&) { ran = true; }));
  EXPECT_FALSE(ran);
  EXPECT_EQ(front.endStall(), 3u);
  EXPECT_TRUE(ran);
  EXPECT_FALSE(front.stalled());
  EXPECT_EQ(controller.host("h1")->state, HostState::kOnline);
  EXPECT_EQ(events.back(), "queued event");
  EXPECT_TRUE(front.run([&](Controller&) {}));  // not stalled: at once
  front.setController(nullptr);
  front.stall(9000);  // down: nothing to stall
  EXPECT_FALSE(front.stalled());
}

// Pins that the agent's hypervisor counts libvirt calls (for `host H libvirt
// slow`), a startAll as one call per 4 VMs.
TEST(SimWorldTest, SimHypervisorCountsCalls) {
  FakeHypervisor hv;
  std::map<std::string, int> fail_starts;
  SimHypervisor sim(hv, fail_starts);
  std::vector<std::string> vms;
  for (int i = 1; i <= 5; ++i) {
    DomainSpec spec;
    spec.meta.vm = "web-" + std::to_string(i);
    ASSERT_TRUE(sim.define(spec).isOk());
    vms.push_back(spec.meta.vm);
  }
  EXPECT_EQ(sim.takeCalls(), 5);
  sim.startAll(vms);
  (void)sim.listManaged();
  EXPECT_EQ(sim.takeCalls(), 3);
  EXPECT_EQ(sim.takeCalls(), 0);
  EXPECT_EQ(hv.runningCount(), 5);
}

Scenario crashScenario() {
  Scenario s;
  EXPECT_TRUE(loadHosts("hosts:\n  - name: h1\n  - name: h2\n", "cluster.yaml", &s).isOk());
  s.files["policy.yaml"] =
      PolicyFile{"policy.yaml", "tiers:\n  - name: web\n    image: tiny\n    replicas: 2\n"};
  Result<Script> script =
      parseScript("0s apply policy.yaml\n3s vm web-1 crash\n6s end\n", "script");
  EXPECT_TRUE(script.isOk()) << script.status().toString();
  if (script.isOk()) s.script = *script;
  return s;
}

std::vector<std::string> runLog(const Scenario& s, Json* state) {
  std::vector<std::string> lines;
  Simulation sim(s, [&](const SimEvent& e) { lines.push_back(formatEvent(e)); });
  Status st = sim.run();
  EXPECT_TRUE(st.isOk()) << st.toString();
  *state = sim.stateJson();
  return lines;
}

// Pins that a run is deterministic (same scenario, same log), that script
// commands appear in the log at their virtual time, and that the ground
// truth sees each VM run once.
TEST(SimWorldTest, RunsAreDeterministic) {
  Scenario s = crashScenario();
  Json first_state, second_state;
  std::vector<std::string> first = runLog(s, &first_state);
  std::vector<std::string> second = runLog(s, &second_state);
  EXPECT_EQ(first, second);
  EXPECT_NE(std::find(first.begin(), first.end(), "3000 info sim vm web-1 crash (on h1)"),
            first.end());
  EXPECT_EQ(first.back(), "6000 info sim end");
  EXPECT_EQ(first_state["time_ms"], 6000);
  EXPECT_EQ(first_state["max_running_copies"], 1);
  ASSERT_EQ(first_state["vms"].size(), 2u);
  EXPECT_EQ(first_state["vms"][0]["running_on"], Json::array({"h1"}));
}

// Pins Simulation::reachesAll and notReachedFrom (the peer view's shortcuts,
// issue #16): reachesAll is true exactly when a host reached every other host
// at the last update (lastReach to each is that update's time);
// notReachedFrom lists the others, in index order.
TEST(SimWorldTest, ReachShortcutsSayWhatLastReachSays) {
  for (const bool cut : {false, true}) {
    Scenario s;
    ASSERT_TRUE(
        loadHosts("hosts:\n  - name: h1\n  - name: h2\n  - name: h3\n", "cluster.yaml", &s)
            .isOk());
    s.files["policy.yaml"] =
        PolicyFile{"policy.yaml", "tiers:\n  - name: web\n    image: tiny\n    replicas: 1\n"};
    const std::string text = std::string("0s apply policy.yaml\n") +
                             (cut ? "2s host h3 network off\n" : "") + "3s end\n";
    Result<Script> script = parseScript(text, "script");
    ASSERT_TRUE(script.isOk()) << script.status().toString();
    s.script = *script;
    Simulation sim(s, [](const SimEvent&) {});
    ASSERT_TRUE(sim.run().isOk());
    EXPECT_EQ(sim.reachUpdatedMs(), 3000);
    for (const char* from : {"h1", "h2", "h3"}) {
      const size_t f = sim.hostIndex(from);
      bool all = true;
      for (const char* to : {"h1", "h2", "h3"}) {
        if (std::string(from) != to) all &= sim.lastReach(f, sim.hostIndex(to)) == 3000;
      }
      EXPECT_EQ(sim.reachesAll(f), all) << from;
      EXPECT_EQ(sim.reachesAll(f), !cut) << from;
      // notReachedFrom: exactly the others whose lastReach is not that time.
      std::vector<size_t> late;
      for (const char* to : {"h1", "h2", "h3"}) {
        const size_t t = sim.hostIndex(to);
        if (std::string(from) != to && sim.lastReach(f, t) != 3000) late.push_back(t);
      }
      EXPECT_EQ(sim.notReachedFrom(f), late) << from;
    }
    if (cut) {
      EXPECT_EQ(sim.notReachedFrom(sim.hostIndex("h1")),
                std::vector<size_t>{sim.hostIndex("h3")});
      EXPECT_EQ(sim.notReachedFrom(sim.hostIndex("h3")).size(), 2u);
    }
  }
  const Scenario crash = crashScenario();  // outlives the simulation
  Simulation none(crash, [](const SimEvent&) {});
  EXPECT_FALSE(none.reachesAll(Simulation::kNoHost));
}

// A scenario folder in a temp dir, removed at the end.
class ScenarioDir {
 public:
  ScenarioDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "sim-world-test-XXXXXX").string();
    EXPECT_NE(mkdtemp(pattern.data()), nullptr);
    path_ = pattern;
  }
  ~ScenarioDir() { std::filesystem::remove_all(path_); }
  void write(const std::string& name, const std::string& text) {
    std::filesystem::create_directories((std::filesystem::path(path_) / name).parent_path());
    std::ofstream(std::filesystem::path(path_) / name) << text;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Pins what loadScenario reads and refuses: VM names come from the policies
// the script applies (merged as the controller merges them), files are read
// relative to the folder, and every error names file:line.
TEST(SimWorldTest, LoadsScenarioFoldersAndRefusesBadOnes) {
  ScenarioDir dir;
  dir.write("cluster.yaml", "hosts:\n  - name: h1\n  - name: h2\n");
  dir.write("policy.yaml", "tiers:\n  - name: web\n    image: x\n");
  dir.write("v2/policy.yaml", "tiers:\n  - name: web\n    image: x\n    replicas: 2\n");
  dir.write("script", "0s apply policy.yaml\n5s apply v2/policy.yaml\n6s vm web-2 crash\n9s end\n");
  dir.write("assert", "vm web-2 state running\n");
  Result<Scenario> s = loadScenario(dir.path());
  ASSERT_TRUE(s.isOk()) << s.status().toString();
  EXPECT_EQ(s->hosts.size(), 2u);
  EXPECT_EQ(s->files.at("v2/policy.yaml").name, "policy.yaml");
  EXPECT_EQ(s->script.commands.size(), 4u);
  EXPECT_EQ(s->asserts.size(), 1u);
  EXPECT_EQ(vmNamesOf(*s), (std::set<std::string>{"web-1", "web-2"}));

  dir.write("script", "0s apply policy.yaml\n6s vm web-2 crash\n9s end\n");
  EXPECT_EQ(loadScenario(dir.path()).status().toString(),
            dir.path() + "/script:2: unknown vm 'web-2' (the applied policies declare: web-1)");
  dir.write("script", "0s apply policy.yaml nope.yaml\n9s end\n");
  EXPECT_EQ(loadScenario(dir.path()).status().toString(),
            dir.path() + "/script:1: no file 'nope.yaml' in the scenario folder");
  dir.write("script", "0s apply policy.yaml\n9s end\n");
  dir.write("assert", "vm web-2 state running\n");
  EXPECT_EQ(loadScenario(dir.path()).status().toString(),
            dir.path() + "/assert:1: unknown vm 'web-2'");
  EXPECT_EQ(loadScenario(dir.path() + "/none").status().code(), Code::kNotFound);
}

}  // namespace
}  // namespace tw::sim
