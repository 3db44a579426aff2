// FloatingAddresses (agent/floating_address.h) on a fake host network and
// the fake hypervisor: add, announce, forward; remove what is not wanted.
#include "agent/floating_address.h"

#include <gtest/gtest.h>

#include "tw/fake_hypervisor.h"

namespace tw {
namespace {

class FloatingAddressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    net_.addInterface("lo", "127.0.0.1/8");
    net_.addInterface("eth0", "10.213.0.11/24");
    DomainSpec spec;
    spec.meta = DomainMeta{"lb-1", "lb", 1, 1, "d"};
    ASSERT_TRUE(hv_.define(spec).isOk());
    ASSERT_TRUE(hv_.start("lb-1").isOk());
  }
  WantedAddress lb(int64_t run = 1) {
    WantedAddress w;
    w.spec.cidr = "10.213.0.100/24";
    w.vm = "lb-1";
    w.ports = {80, 443};
    w.run = run;
    return w;
  }
  FakeHostNetwork net_;
  FakeHypervisor hv_;
  FloatingAddresses addrs_{net_, hv_};
  std::vector<FloatingAddressSpec> known_{{"10.213.0.100/24", ""}};
};

// Pins: a wanted address goes on the interface whose subnet holds it, is
// announced, and the tier's ports on it reach the VM's same ports; a second
// pass changes nothing.
TEST_F(FloatingAddressTest, AddsAnnouncesAndForwards) {
  auto changes = addrs_.converge({lb()}, known_);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].kind, "address.added");
  EXPECT_EQ(changes[0].message, "added address 10.213.0.100/24 to eth0 for vm 'lb-1'");
  EXPECT_EQ(net_.log, (std::vector<std::string>{"add 10.213.0.100/24 eth0", "announce 10.213.0.100 eth0"}));
  auto fwd = hv_.portForwards("lb-1");
  ASSERT_TRUE(fwd.isOk());
  EXPECT_EQ(*fwd, (std::vector<PortForward>{{"10.213.0.100", 80, 80}, {"10.213.0.100", 443, 443}}));
  EXPECT_EQ(addrs_.held(), std::vector<std::string>{"10.213.0.100/24"});
  EXPECT_TRUE(addrs_.converge({lb()}, known_).empty());
  EXPECT_EQ(net_.log.size(), 2u);
}

// Pins: a new QEMU (the VM restarted: `run` changed) gets its forwards again;
// the address stays.
TEST_F(FloatingAddressTest, RestartedVmIsForwardedAgain) {
  addrs_.converge({lb()}, known_);
  ASSERT_TRUE(hv_.destroy("lb-1").isOk());
  ASSERT_TRUE(hv_.start("lb-1").isOk());
  addrs_.converge({lb(2)}, known_);
  EXPECT_EQ(hv_.portForwards("lb-1")->size(), 2u);
  EXPECT_EQ(net_.log.size(), 2u);  // not added twice
}

// Pins: an address of the policy found on the host but not wanted (agent
// start, the controller gave it to another host, the VM stopped) is removed;
// so is one this process added that the policy no longer lists.
TEST_F(FloatingAddressTest, RemovesWhatItShouldNotHold) {
  net_.addInterface("eth0", "10.213.0.100/24");  // left from an earlier run
  auto changes = addrs_.converge({}, known_);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].kind, "address.removed");
  EXPECT_FALSE(net_.has("10.213.0.100/24"));
  EXPECT_TRUE(addrs_.held().empty());
  changes = addrs_.converge({lb()}, known_);
  ASSERT_TRUE(net_.has("10.213.0.100/24")) << (changes.empty() ? "" : changes[0].message);
  addrs_.converge({}, {});  // the policy dropped it
  EXPECT_FALSE(net_.has("10.213.0.100/24"));
  // Unrelated addresses are never touched.
  EXPECT_TRUE(net_.has("10.213.0.11/24"));
}

// Pins: the self-fence drops every address.
TEST_F(FloatingAddressTest, DropAllRemovesIt) {
  addrs_.converge({lb()}, known_);
  addrs_.dropAll(known_);
  EXPECT_FALSE(net_.has("10.213.0.100/24"));
}

// Pins: an address no interface's subnet holds, with no interface named and
// no default, fails once with a clear event and is tried again; a named
// interface or the default is used as given.
TEST_F(FloatingAddressTest, NoInterfaceFailsClearly) {
  WantedAddress w = lb();
  w.spec.cidr = "192.168.7.5/24";
  auto changes = addrs_.converge({w}, known_);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].kind, "address.failed");
  EXPECT_NE(changes[0].message.find("no interface of this host is in the subnet of 192.168.7.5/24"),
            std::string::npos)
      << changes[0].message;
  EXPECT_TRUE(addrs_.converge({w}, known_).empty());  // said once
  w.spec.interface = "br1";
  addrs_.converge({w}, known_);
  EXPECT_TRUE(net_.has("192.168.7.5/24"));
  FloatingAddresses with_default(net_, hv_, "eth9");
  WantedAddress v = lb();
  v.spec.cidr = "172.16.0.5/16";
  with_default.converge({v}, {});
  EXPECT_EQ(net_.log.back(), "announce 172.16.0.5 eth9");
}

// Pins: a failed `ip addr add` is an event once, and tried again later.
TEST_F(FloatingAddressTest, FailedAddIsRetried) {
  net_.fail_add = true;
  auto changes = addrs_.converge({lb()}, known_);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].kind, "address.failed");
  net_.fail_add = false;
  addrs_.converge({lb()}, known_);
  EXPECT_TRUE(net_.has("10.213.0.100/24"));
}

// Pins: prefixes parse and contain as expected.
TEST(IpPrefix, ParseAndContain) {
  auto a = parseIpPrefix("10.213.0.100/24");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->ip(), "10.213.0.100");
  auto net = parseIpPrefix("10.213.0.0/24");
  EXPECT_TRUE(net->contains(*a));
  EXPECT_FALSE(parseIpPrefix("10.213.1.0/24")->contains(*a));
  EXPECT_TRUE(parseIpPrefix("fd00::/64")->contains(*parseIpPrefix("fd00::5/64")));
  EXPECT_FALSE(parseIpPrefix("fd00::/64")->contains(*a));
  for (const char* bad : {"10.0.0.1", "10.0.0.1/", "/24", "10.0.0.1/x", "10.0.0.1/-1", "fd00::1/129",
                          "10.0.0.1/024x", "host/24"})
    EXPECT_FALSE(parseIpPrefix(bad)) << bad;
  EXPECT_TRUE(isValidInterfaceName("br-tw0"));
  EXPECT_FALSE(isValidInterfaceName("a/b"));
  EXPECT_FALSE(isValidInterfaceName("0123456789abcdef"));
}

}  // namespace
}  // namespace tw
