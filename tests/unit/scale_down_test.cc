// Scaling a tier down before any host has reported: the VMs it no longer
// wants were never placed (pending, no host), and must still go. Hermetic:
// in-memory SQLite, manual clock, no agents.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "controller/controller.h"
#include "controller_fixture.h"
#include "tw/store.h"

namespace tw {
namespace {

std::string policyWith(int apache_replicas) {
  return R"(
hosts:
  - name: h1
  - name: h2
tiers:
  - name: apache
    image: tiny-web
    replicas: )" + std::to_string(apache_replicas) + "\n";
}

class ScaleDownTest : public testing_controller::ControllerFixture {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(openController()); }
  Result<ApplyResult> apply(int replicas, bool dry_run) {
    return controller_->applyPolicy({PolicyFile{"demo.yaml", policyWith(replicas)}}, dry_run);
  }
  std::vector<std::string> storedVmNames() {
    std::vector<std::string> names;
    auto vms = store_->vms();
    EXPECT_TRUE(vms.isOk());
    if (vms.isOk())
      for (const auto& vm : *vms) names.push_back(vm.name);
    return names;
  }
};

// Pins: apache x4 then x1 with no agent up leaves only apache-1 (pending), in
// memory and in the store, and says vm.deleted for the other three.
TEST_F(ScaleDownTest, RemovesPendingVmsWhenNoHostHasReported) {
  ASSERT_TRUE(apply(4, false).isOk());
  controller_->runOnce();
  ASSERT_EQ(controller_->vms().size(), 4u);
  for (const auto& vm : controller_->vms()) EXPECT_EQ(vm.state, VmState::kPending) << vm.name;

  auto applied = apply(1, false);
  ASSERT_TRUE(applied.isOk()) << applied.status().toString();
  controller_->runOnce();
  clock_.advance(10000);  // past any settling wait
  controller_->runOnce();

  std::vector<VmRecord> vms = controller_->vms();
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].name, "apache-1");
  EXPECT_EQ(vms[0].state, VmState::kPending);
  EXPECT_EQ(storedVmNames(), std::vector<std::string>{"apache-1"});
  auto events = store_->eventsSince(0, 1000);
  ASSERT_TRUE(events.isOk());
  int deleted = 0;
  for (const auto& e : *events) deleted += e.kind == "vm.deleted" ? 1 : 0;
  EXPECT_EQ(deleted, 3);
}

// Pins: the dry-run plan of the same scale-down says "delete" for apache-2..4
// and "pending" for apache-1, and changes nothing.
TEST_F(ScaleDownTest, DryRunPlanShowsPendingVmsDeleted) {
  ASSERT_TRUE(apply(4, false).isOk());
  controller_->runOnce();

  auto plan = apply(1, true);
  ASSERT_TRUE(plan.isOk()) << plan.status().toString();
  std::map<std::string, std::string> action;
  for (const auto& item : plan->plan) action[item.vm] = item.action;
  EXPECT_EQ(action["apache-1"], "pending");
  EXPECT_EQ(action["apache-2"], "delete");
  EXPECT_EQ(action["apache-3"], "delete");
  EXPECT_EQ(action["apache-4"], "delete");
  EXPECT_EQ(action.size(), 4u);
  EXPECT_EQ(controller_->vms().size(), 4u);  // a dry run changes nothing
}

}  // namespace
}  // namespace tw
