// What goes into and around the agent's domains: service ports (host ports
// given, forwarded, reported, released) and the DomainBuilder (kernel command
// line, image metadata, shared disks) (agent_fixture.h).
#include "agent/agent.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tw/json.h"

#include "agent_fixture.h"

namespace tw {
namespace {

using namespace testing_agent;  // agent_fixture.h

// ------------------------------------------------------------ service ports ---

// Pins: every assigned VM gets a host port per service port and check port,
// lowest free first; they are reported in heartbeats (DomainReport::ports) and
// released when the VM is no longer assigned, for the next VM to reuse.
TEST_F(AgentTest, GivesReportsAndReleasesHostPorts) {
  Assignment web1 = assignment("web-1", 1);
  web1.ports = {ServicePort{"http", 80, "tcp"}, ServicePort{"https", 443, "tcp"}};
  web1.health.kind = HealthKind::kTcp;
  web1.health.port = 8080;
  Assignment web2 = assignment("web-2", 1);
  web2.ports = {ServicePort{"http", 80, "tcp"}};
  startWith({web1, web2});

  ASSERT_NE(link_.lastReport("web-1"), nullptr);
  EXPECT_EQ(link_.lastReport("web-1")->ports,
            (std::map<int, int>{{80, 20000}, {443, 20001}, {8080, 20002}}));
  EXPECT_EQ(link_.lastReport("web-2")->ports, (std::map<int, int>{{80, 20003}}));

  AssignmentSet next = link_.set;
  next.version = 2;
  Assignment web3 = assignment("web-3", 1);
  web3.ports = {ServicePort{"ssh", 22, "tcp"}};
  next.assignments = {web2, web3};
  link_.set = next;
  agent_->onAssignments(next);
  settle();

  EXPECT_EQ(ports_.ports("web-1"), (std::map<int, int>{}));
  EXPECT_EQ(link_.lastReport("web-2")->ports, (std::map<int, int>{{80, 20003}}));
  EXPECT_EQ(link_.lastReport("web-3")->ports, (std::map<int, int>{{22, 20000}}));
}

// Pins: the forwards are added on the hypervisor right after the start, at
// the service address; a crashed VM reports no ports until its restarted QEMU
// has them again (added anew: forwards die with the QEMU process).
TEST_F(AgentTest, ForwardsPortsAfterEveryStart) {
  Assignment web1 = assignment("web-1", 1);
  web1.ports = {ServicePort{"http", 80, "tcp"}};
  startWith({web1});

  EXPECT_EQ(hv_.forwards, (std::vector<std::string>{"web-1 127.0.0.1:20000->80"}));
  ASSERT_TRUE(fake_.portForwards("web-1").isOk());
  EXPECT_EQ(fake_.portForwards("web-1")->size(), 1u);
  EXPECT_EQ(link_.lastReport("web-1")->ports, (std::map<int, int>{{80, 20000}}));
  EXPECT_EQ(link_.heartbeats.back().service_address, "127.0.0.1");

  fake_.crash("web-1");
  settle();
  ASSERT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(hv_.forwards, (std::vector<std::string>{"web-1 127.0.0.1:20000->80",
                                                    "web-1 127.0.0.1:20000->80"}));
  EXPECT_EQ(fake_.portForwards("web-1")->size(), 1u);
  EXPECT_EQ(link_.lastReport("web-1")->ports, (std::map<int, int>{{80, 20000}}));
}

// Pins: a restarted agent takes over the forwards its running VMs already have
// (no second forward, the same host port reported), and gives new VMs other ports.
TEST_F(AgentTest, RestartedAgentAdoptsExistingForwards) {
  Assignment web1 = assignment("web-1", 1);
  web1.ports = {ServicePort{"http", 80, "tcp"}};
  ASSERT_TRUE(fake_.define(specOf(web1)).isOk());
  ASSERT_TRUE(fake_.start("web-1").isOk());
  ASSERT_TRUE(fake_.addPortForward("web-1", PortForward{"127.0.0.1", 20007, 80}).isOk());
  Assignment web2 = assignment("web-2", 1);
  web2.ports = {ServicePort{"http", 80, "tcp"}};
  startWith({web1, web2});

  EXPECT_EQ(fake_.startCount("web-1"), 1);
  EXPECT_EQ(link_.lastReport("web-1")->ports, (std::map<int, int>{{80, 20007}}));
  EXPECT_EQ(link_.lastReport("web-2")->ports, (std::map<int, int>{{80, 20000}}));
  EXPECT_EQ(hv_.forwards, (std::vector<std::string>{"web-2 127.0.0.1:20000->80"}));
}

// Pins: on a hypervisor without forwards (libvirt's test driver) the VM runs,
// no ports are reported (none reach it), and the agent stops asking after the
// first answer.
TEST_F(AgentTest, NoForwardsOnTheTestDriverReportsNoPorts) {
  hv_.no_monitor = true;
  Assignment web1 = assignment("web-1", 1);
  web1.ports = {ServicePort{"http", 80, "tcp"}};
  Assignment web2 = assignment("web-2", 1);
  web2.ports = {ServicePort{"http", 80, "tcp"}};
  startWith({web1, web2});

  EXPECT_TRUE(fake_.isRunning("web-1"));
  ASSERT_NE(link_.lastReport("web-1"), nullptr);
  EXPECT_TRUE(link_.lastReport("web-1")->ports.empty());
  EXPECT_TRUE(hv_.forwards.empty());
  EXPECT_EQ(hv_.forward_lists, 1);
}

// Pins: the domain comes from the DomainBuilder; a build failure is a failed
// start that counts against the budget, with the builder's message.
class FailingBuilder final : public DomainBuilder {
 public:
  Result<DomainSpec> build(const Assignment& a) override {
    if (a.image == "missing") return notFound("image 'missing' is not in /x (run images/build)");
    DomainSpec spec;
    spec.meta = DomainMeta{a.vm, a.tier, a.epoch, a.policy_version, a.spec_digest};
    spec.kernel = "/x/vmlinux";
    return spec;
  }
  void release(const std::string& vm) override { released.push_back(vm); }
  std::vector<std::string> released;
};

TEST_F(AgentTest, BuildsDomainsWithTheBuilderAndReleasesThem) {
  FailingBuilder builder;
  builder_ = &builder;
  Assignment good = assignment("web-1", 1);
  Assignment bad = assignment("web-2", 1);
  bad.image = "missing";
  assign({good, bad}, 1);
  startAgent();
  for (int i = 0; i < 3; ++i) agent_->runOnce();

  ASSERT_NE(fake_.spec("web-1"), nullptr);
  EXPECT_EQ(fake_.spec("web-1")->kernel, "/x/vmlinux");
  EXPECT_FALSE(fake_.isRunning("web-2"));
  const AgentEvent* failed = link_.findEvent("vm.start_failed", "web-2");
  ASSERT_NE(failed, nullptr);
  EXPECT_NE(failed->message.find("image 'missing' is not in /x"), std::string::npos) << failed->message;
  EXPECT_EQ(agent_->restarts("web-2"), 1);

  assign({bad}, 2);
  agent_->onAssignments(link_.set);
  agent_->runOnce();
  EXPECT_EQ(fake_.spec("web-1"), nullptr);
  EXPECT_EQ(builder.released, (std::vector<std::string>{"web-1"}));
}

// Pins: the kernel command line appends the image's parameters with the VM's
// identity; tw.backend is the first tier of `after`; empty values are left out.
TEST(DomainBuilderTest, KernelCmdlineCarriesIdentity) {
  ImageInfo img;
  img.cmdline = "console=ttyS0 tw.role=balancer";
  img.cmdline_params = {"tw.vm", "tw.tier", "tw.host", "tw.api", "tw.backend"};
  Assignment a = assignment("balancer-1", 1);
  a.tier = "balancer";
  a.after = {"apache", "mysql"};
  EXPECT_EQ(kernelCmdline(img, a, "h2", "127.0.0.1:7800"),
            "console=ttyS0 tw.role=balancer tw.vm=balancer-1 tw.tier=balancer tw.host=h2 "
            "tw.api=127.0.0.1:7800 tw.backend=apache");
  a.after.clear();
  EXPECT_EQ(kernelCmdline(img, a, "h2", ""),
            "console=ttyS0 tw.role=balancer tw.vm=balancer-1 tw.tier=balancer tw.host=h2");
}

// Pins: image metadata loads from DIR/<name>.json with paths made absolute; a
// missing image, a missing file it names and a bad name are clear errors.
TEST(DomainBuilderTest, LoadsImageMetadata) {
  const std::string dir = ::testing::TempDir() + "tw-images-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir + "/tiny");
  std::ofstream(dir + "/tiny/vmlinux") << "k";
  std::ofstream(dir + "/tiny/initrd") << "i";
  std::ofstream(dir + "/tiny-web.json")
      << R"({"name":"tiny-web","kernel":"tiny/vmlinux","initrd":"tiny/initrd","cmdline":"c",)"
      << R"("cmdline_params":"tw.vm tw.tier","memory_mib":128,"min_memory_mib":96,"ports":[80],"disk":""})";
  std::ofstream(dir + "/broken.json") << R"({"kernel":"tiny/nothing"})";
  Result<ImageInfo> img = loadImage(dir, "tiny-web");
  ASSERT_TRUE(img.isOk()) << img.status().toString();
  EXPECT_EQ(img->kernel, dir + "/tiny/vmlinux");
  EXPECT_EQ(img->initrd, dir + "/tiny/initrd");
  EXPECT_EQ(img->cmdline_params, (std::vector<std::string>{"tw.vm", "tw.tier"}));
  EXPECT_EQ(img->ports, (std::vector<int>{80}));
  EXPECT_EQ(img->min_memory_mib, 96);
  EXPECT_EQ(loadImage(dir, "nope").status().code(), Code::kNotFound);
  EXPECT_NE(loadImage(dir, "broken").status().message().find("tiny/nothing is missing"), std::string::npos);
  EXPECT_EQ(loadImage(dir, "../etc/passwd").status().code(), Code::kInvalidArgument);

  ImageBuilderOptions options;
  options.images_dir = dir;
  options.host = "h1";
  ImageDomainBuilder builder(options);
  Assignment a = assignment("web-1", 1);
  a.image = "tiny-web";
  a.memory_mib = 64;
  EXPECT_EQ(builder.build(a).status().code(), Code::kInvalidArgument);  // below min_memory_mib
  a.memory_mib = 128;
  Result<DomainSpec> spec = builder.build(a);
  ASSERT_TRUE(spec.isOk()) << spec.status().toString();
  EXPECT_EQ(spec->kernel, dir + "/tiny/vmlinux");
  EXPECT_EQ(spec->cmdline, "c tw.vm=web-1 tw.tier=web");
  EXPECT_TRUE(spec->user_network);
  EXPECT_TRUE(spec->disk_path.empty());
  std::filesystem::remove_all(dir);
}

// Pins: with api_now set (several controller replicas, docs/ha.md), tw.api= is
// what it returns at each build, not the fixed `api`: a VM started after the
// leader moved polls the replica that answered last.
TEST(DomainBuilderTest, GuestApiFollowsTheReplicaThatAnsweredLast) {
  const std::string dir = ::testing::TempDir() + "tw-api-now-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir + "/tiny");
  std::ofstream(dir + "/tiny/vmlinux") << "k";
  std::ofstream(dir + "/tiny-balancer.json")
      << R"({"name":"tiny-balancer","kernel":"tiny/vmlinux","cmdline":"c",)"
      << R"("cmdline_params":"tw.vm tw.api","memory_mib":128,"ports":[80],"disk":""})";
  ImageBuilderOptions options;
  options.images_dir = dir;
  options.host = "h2";
  options.api = "10.0.0.1:7801";
  std::string answered = "10.0.0.1:7801";
  ImageDomainBuilder fixed(options);
  options.api_now = [&answered] { return answered; };
  ImageDomainBuilder following(options);
  Assignment a = assignment("balancer-1", 1);
  a.image = "tiny-balancer";
  a.memory_mib = 128;
  ASSERT_EQ(following.build(a)->cmdline, "c tw.vm=balancer-1 tw.api=10.0.0.1:7801");
  answered = "10.0.0.3:7801";  // the leader moved to the third replica
  EXPECT_EQ(following.build(a)->cmdline, "c tw.vm=balancer-1 tw.api=10.0.0.3:7801");
  EXPECT_EQ(fixed.build(a)->cmdline, "c tw.vm=balancer-1 tw.api=10.0.0.1:7801");
  std::filesystem::remove_all(dir);
}

// Pins: a shared disk goes into storage.path, or into the directory its
// storage.pool resolves to on this host; a pool this host lacks and a path that
// is no directory here are clear errors naming the VM.
TEST(DomainBuilderTest, SharedDiskInAPathOrAPool) {
  const std::string dir = ::testing::TempDir() + "tw-shared-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir + "/tiny");
  std::filesystem::create_directories(dir + "/pool");
  for (const char* f : {"/tiny/vmlinux", "/tiny/initrd", "/tiny/data.qcow2"}) std::ofstream(dir + f) << "x";
  std::ofstream(dir + "/tiny-db.json")
      << R"({"name":"tiny-db","kernel":"tiny/vmlinux","initrd":"tiny/initrd","cmdline":"c",)"
      << R"("memory_mib":128,"ports":[3306],"disk":"tiny/data.qcow2"})";
  ImageBuilderOptions options;
  options.images_dir = dir;
  options.host = "h2";
  options.qemu_img = "true";  // creates nothing; the path is what is pinned
  std::vector<std::string> asked;
  options.pool_dir = [&](const std::string& pool) -> Result<std::string> {
    asked.push_back(pool);
    if (pool == "nfs-db") return dir + "/pool";
    return notFound("storage pool '" + pool + "' on 'qemu:///system': no such pool");
  };
  ImageDomainBuilder builder(options);
  Assignment a = assignment("db-1", 1);
  a.image = "tiny-db";
  a.memory_mib = 128;
  a.storage.kind = StorageKind::kShared;
  a.storage.path = dir + "/pool";
  Result<DomainSpec> spec = builder.build(a);
  ASSERT_TRUE(spec.isOk()) << spec.status().toString();
  EXPECT_EQ(spec->disk_path, dir + "/pool/db-1.qcow2");
  EXPECT_TRUE(asked.empty());

  a.storage.path = dir + "/not-mounted";
  Status no_dir = builder.build(a).status();
  EXPECT_EQ(no_dir.code(), Code::kFailedPrecondition);
  EXPECT_EQ(no_dir.message(), "the shared storage of vm 'db-1', " + dir +
                                  "/not-mounted, is no directory on host 'h2' (mount it on every host)");

  a.storage.path.clear();
  a.storage.pool = "nfs-db";
  spec = builder.build(a);
  ASSERT_TRUE(spec.isOk()) << spec.status().toString();
  EXPECT_EQ(spec->disk_path, dir + "/pool/db-1.qcow2");
  a.storage.pool = "gone";
  Status no_pool = builder.build(a).status();
  EXPECT_EQ(no_pool.code(), Code::kNotFound);
  EXPECT_NE(no_pool.toString().find("the shared disk of vm 'db-1'"), std::string::npos) << no_pool.toString();
  EXPECT_EQ(asked, (std::vector<std::string>{"nfs-db", "gone"}));
  std::filesystem::remove_all(dir);
}

// Pins: DomainReport::ports crosses the wire as an object keyed by the guest
// port ({"80": 20000}) and comes back the same; a key that is no port is refused.
TEST(AgentProtocolTest, DomainReportCarriesPorts) {
  DomainReport r;
  r.vm = "web-1";
  r.ports = {{80, 20000}, {443, 20001}};
  Json j = r;
  EXPECT_EQ(j["ports"], Json::parse(R"({"80": 20000, "443": 20001})"));
  Result<DomainReport> back = decode<DomainReport>(j);
  ASSERT_TRUE(back.isOk()) << back.status().toString();
  EXPECT_EQ(back->ports, r.ports);

  Json without = Json::parse(R"({"vm": "web-1"})");
  ASSERT_TRUE(decode<DomainReport>(without).isOk());
  EXPECT_TRUE(decode<DomainReport>(without)->ports.empty());
  Json bad = Json::parse(R"({"vm": "web-1", "ports": {"http": 20000}})");
  EXPECT_FALSE(decode<DomainReport>(bad).isOk());
}

}  // namespace
}  // namespace tw
