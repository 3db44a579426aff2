// What the controller's unit tests share (controller_test.cc,
// controller_backups_test.cc, controller_healing_test.cc,
// controller_address_test.cc, scale_down_test.cc, apply_checks_test.cc,
// path_probes_test.cc, replica_test.cc, term_guard_test.cc,
// lease_renewal_liveness_test.cc, service_published_test.cc,
// heartbeat_fastpath_test.cc, compact_heartbeats_test.cc, sim_world_test.cc):
// a Controller over a store (":memory:" SQLite or a file), recovered
// (openController, ControllerFixture); the heartbeat of an agent that runs
// every VM assigned to it (agentHeartbeat, runningReport, runningHeartbeat);
// the event log as text (eventLines). Hermetic: a ManualClock, no threads.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "controller/controller.h"
#include "controller/fence_agents.h"
#include "tw/clock.h"
#include "tw/store.h"

namespace tw::testing_controller {

// A controller and the store it reads and writes (the store outlives it).
struct StoredController {
  std::unique_ptr<Store> store;
  std::unique_ptr<Controller> controller;
};

// Opens the store at `path` and a Controller over it, recovered.
inline Result<StoredController> openController(Clock& clock, const std::string& path = ":memory:",
                                               HostConnector* hosts = nullptr,
                                               FenceAgents fence_agents = {}) {
  auto store = Store::open(path);
  if (!store.isOk()) return store.status();
  StoredController out{std::move(store).value(), nullptr};
  out.controller = std::make_unique<Controller>(*out.store, clock, hosts, std::move(fence_agents));
  Status recovered = out.controller->recover();
  if (!recovered.isOk()) return recovered;
  return out;
}

// The same in memory, with `files` applied (no dry run).
inline Result<StoredController> openWithPolicy(Clock& clock, std::vector<PolicyFile> files) {
  auto opened = openController(clock);
  if (!opened.isOk()) return opened.status();
  auto applied = opened->controller->applyPolicy(files, false);
  if (!applied.isOk()) return applied.status();
  return opened;
}

// A heartbeat of `host`'s agent ("agent-H", 4 CPUs, 4 GiB) reporting nothing.
inline Heartbeat agentHeartbeat(const std::string& host) {
  Heartbeat hb;
  hb.host = host;
  hb.agent_id = "agent-" + host;
  hb.capacity = {4, 4096};
  return hb;
}

// `a`'s VM running and healthy at its epoch.
inline DomainReport runningReport(const Assignment& a) {
  DomainReport d;
  d.vm = a.vm;
  d.tier = a.tier;
  d.epoch = a.epoch;
  d.state = DomainState::kRunning;
  d.health = Health::kHealthy;
  return d;
}

// agentHeartbeat() reporting every VM the controller assigns to `host`
// running and healthy (`skip_incoming`: not those migrating in).
inline Heartbeat runningHeartbeat(const Controller& c, const std::string& host,
                                  bool skip_incoming = false) {
  Heartbeat hb = agentHeartbeat(host);
  for (const auto& a : c.assignmentsFor(host).assignments) {
    if (skip_incoming && a.incoming) continue;
    hb.domains.push_back(runningReport(a));
  }
  return hb;
}

// The first `limit` events, "kind message" one a line.
inline std::string eventLines(Store& store, int limit = 1000) {
  std::string out;
  auto list = store.eventsSince(0, limit);
  if (list.isOk())
    for (const auto& e : *list) out += e.kind + " " + e.message + "\n";
  return out;
}

// A Controller over a store on a ManualClock starting at `start_ms`. Call
// openController() in SetUp under ASSERT_NO_FATAL_FAILURE.
class ControllerFixture : public ::testing::Test {
 protected:
  explicit ControllerFixture(Millis start_ms = 1000) : clock_(start_ms) {}

  // The controller goes first, before the fixture's own members (a
  // HostConnector it calls) are destroyed.
  void TearDown() override {
    controller_.reset();
    store_.reset();
  }

  // (Re)opens the store at `path` and a controller over it, recovered.
  void openController(const std::string& path = ":memory:", HostConnector* hosts = nullptr,
                      FenceAgents fence_agents = {}) {
    controller_.reset();
    store_.reset();
    auto opened = testing_controller::openController(clock_, path, hosts, std::move(fence_agents));
    ASSERT_TRUE(opened.isOk()) << opened.status().toString();
    store_ = std::move(opened->store);
    controller_ = std::move(opened->controller);
  }

  // A restart: a new controller over the same store, recovered.
  void restartController(HostConnector* hosts = nullptr, FenceAgents fence_agents = {}) {
    controller_ = std::make_unique<Controller>(*store_, clock_, hosts, std::move(fence_agents));
    ASSERT_TRUE(controller_->recover().isOk());
  }

  // Handles `hb`, which must succeed; its answer (empty when it failed).
  AssignmentSet answer(const Heartbeat& hb) {
    auto r = controller_->handleHeartbeat(hb);
    EXPECT_TRUE(r.isOk()) << r.status().toString();
    return r.isOk() ? *r : AssignmentSet{};
  }

  // Every declared host reports its VMs running (runningHeartbeat).
  void beatAll() {
    for (const auto& h : controller_->policy().hosts) answer(runningHeartbeat(*controller_, h.name));
  }

  // Steps the cluster: heartbeats then a controller pass, `rounds` times, 100 ms apart.
  void settle(int rounds = 6) {
    for (int i = 0; i < rounds; ++i) {
      clock_.advance(100);
      beatAll();
      controller_->runOnce();
    }
  }

  ManualClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Controller> controller_;
};

}  // namespace tw::testing_controller
