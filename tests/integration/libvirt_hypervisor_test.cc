// LibvirtHypervisor on libvirt's test driver. Each test opens
// test:///<abs>/tests/integration/data/node.xml: every connection parses the
// file anew, so each connection is a fresh, independent host holding two
// unmanaged domains ("legacy", "uuid-holder").
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <libvirt/libvirt.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tw/hypervisor.h"

namespace tw {
namespace {

// As in the agent: libvirt's remote client writes to its socket without
// MSG_NOSIGNAL, so a connection the daemon closes must not kill the test.
const bool kSigpipeIgnored = std::signal(SIGPIPE, SIG_IGN) != SIG_ERR;

const std::string kNodeUri =
    std::string("test://") + TW_SOURCE_DIR + "/tests/integration/data/node.xml";

DomainSpec specFor(const std::string& vm, int64_t epoch = 1) {
  DomainSpec spec;
  spec.meta.vm = vm;
  spec.meta.tier = "web";
  spec.meta.epoch = epoch;
  spec.meta.policy_version = 3;
  spec.meta.spec_digest = "digest-1";
  spec.memory_mib = 128;
  return spec;
}

std::unique_ptr<Hypervisor> connect(const std::string& uri = kNodeUri) {
  auto hv = connectLibvirt(uri);
  EXPECT_TRUE(hv.isOk()) << hv.status().toString();
  return hv.isOk() ? std::move(hv).value() : nullptr;
}

std::vector<std::string> names(const std::vector<DomainStatus>& list) {
  std::vector<std::string> out;
  for (const auto& d : list) out.push_back(d.meta.vm);
  return out;
}

// Collects events from libvirt's event thread; tests wait on it.
class EventLog {
 public:
  DomainEventHandler handler() {
    return [this](const DomainEvent& e) {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(e);
      cv_.notify_all();
    };
  }
  // True when an event of that vm and kind arrived within a generous timeout.
  bool waitFor(const std::string& vm, DomainEventKind kind, std::string* detail = nullptr) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      for (const auto& e : events_) {
        if (e.vm == vm && e.kind == kind) {
          if (detail != nullptr) *detail = e.detail;
          return true;
        }
      }
      return false;
    });
  }
  std::vector<DomainEvent> snapshot() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<DomainEvent> events_;
};

// Pins: define + start work; only managed domains are listed, sorted, with
// their state; capacity is the node's; ping answers.
TEST(LibvirtHypervisorTest, DefineStartListOnlyManaged) {
  auto hv = connect();
  ASSERT_TRUE(hv);
  ASSERT_TRUE(hv->ping().isOk());
  ASSERT_TRUE(hv->define(specFor("web-1")).isOk());
  ASSERT_TRUE(hv->define(specFor("db-1")).isOk());
  Status started = hv->start("web-1");
  ASSERT_TRUE(started.isOk()) << started.toString();
  ASSERT_TRUE(hv->start("web-1").isOk());  // already running: ok

  auto list = hv->listManaged();
  ASSERT_TRUE(list.isOk()) << list.status().toString();
  EXPECT_EQ(names(*list), (std::vector<std::string>{"db-1", "web-1"}));
  EXPECT_EQ((*list)[0].state, DomainState::kShutoff);
  EXPECT_EQ((*list)[1].state, DomainState::kRunning);

  auto st = hv->domainState("web-1");
  ASSERT_TRUE(st.isOk()) << st.status().toString();
  EXPECT_EQ(st->state, DomainState::kRunning);
  EXPECT_EQ(st->meta.tier, "web");
  EXPECT_EQ(hv->domainState("absent").status().code(), Code::kNotFound);

  auto cap = hv->capacity();
  ASSERT_TRUE(cap.isOk()) << cap.status().toString();
  EXPECT_EQ(cap->cpus, 4);
  EXPECT_EQ(cap->memory_mib, 8192);
}

// Pins: all five metadata fields survive libvirt, including characters that
// need escaping in XML (quotes, &, <, >, newline, tab, non-ASCII).
TEST(LibvirtHypervisorTest, MetadataRoundTrip) {
  auto hv = connect();
  ASSERT_TRUE(hv);
  DomainSpec spec = specFor("odd&'\"<name>");
  spec.meta.tier = "t&<>\"'ier";
  spec.meta.epoch = 9000000000LL;
  spec.meta.policy_version = 42;
  spec.meta.spec_digest = "line1\nline2\ttab &amp; \xc3\xa9";
  Status defined = hv->define(spec);
  ASSERT_TRUE(defined.isOk()) << defined.toString();
  auto st = hv->domainState(spec.meta.vm);
  ASSERT_TRUE(st.isOk()) << st.status().toString();
  EXPECT_EQ(st->meta.vm, spec.meta.vm);
  EXPECT_EQ(st->meta.tier, spec.meta.tier);
  EXPECT_EQ(st->meta.epoch, spec.meta.epoch);
  EXPECT_EQ(st->meta.policy_version, spec.meta.policy_version);
  EXPECT_EQ(st->meta.spec_digest, spec.meta.spec_digest);
}

// Pins: redefining replaces the definition in place (libvirt refuses a new
// UUID for an existing name, so success means the same UUID), also while the
// domain runs; the metadata read back is the new definition's.
TEST(LibvirtHypervisorTest, RedefineWithNewEpochKeepsIdentity) {
  auto hv = connect();
  ASSERT_TRUE(hv);
  ASSERT_TRUE(hv->define(specFor("web-1", 1)).isOk());
  ASSERT_TRUE(hv->define(specFor("web-1", 2)).isOk());
  EXPECT_EQ(hv->domainState("web-1")->meta.epoch, 2);
  ASSERT_TRUE(hv->start("web-1").isOk());
  Status redefined = hv->define(specFor("web-1", 3));
  ASSERT_TRUE(redefined.isOk()) << redefined.toString();
  auto st = hv->domainState("web-1");
  ASSERT_TRUE(st.isOk());
  EXPECT_EQ(st->meta.epoch, 3);
  EXPECT_EQ(st->state, DomainState::kRunning);
  EXPECT_EQ(hv->listManaged()->size(), 1u);
}

// Pins: the libvirt UUID of a VM is uuidForVm(name): node.xml's "uuid-holder"
// owns uuidForVm("uuid-probe"), so libvirt refuses to define "uuid-probe".
TEST(LibvirtHypervisorTest, UuidIsUuidForVm) {
  auto hv = connect();
  ASSERT_TRUE(hv);
  ASSERT_EQ(uuidForVm("uuid-probe"), "fa3cf759-9532-502e-b95c-e0cd6d9473e8");
  Status s = hv->define(specFor("uuid-probe"));
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("uuid-holder"), std::string::npos) << s.toString();
  EXPECT_NE(s.message().find("defining vm 'uuid-probe'"), std::string::npos) << s.toString();
  EXPECT_TRUE(hv->define(specFor("uuid-probe-2")).isOk());  // control: any other name works
}

// Pins: lifecycle events reach the handler from libvirt's event thread:
// defined, started, and a destroy seen as kStopped/"destroyed".
TEST(LibvirtHypervisorTest, DestroySeenThroughLifecycleEvent) {
  auto hv = connect();
  ASSERT_TRUE(hv);
  EventLog log;
  ASSERT_TRUE(hv->subscribe(log.handler()).isOk());
  ASSERT_TRUE(hv->define(specFor("web-1")).isOk());
  ASSERT_TRUE(hv->start("web-1").isOk());
  EXPECT_TRUE(log.waitFor("web-1", DomainEventKind::kDefined));
  EXPECT_TRUE(log.waitFor("web-1", DomainEventKind::kStarted));
  ASSERT_TRUE(hv->destroy("web-1").isOk());
  std::string detail;
  ASSERT_TRUE(log.waitFor("web-1", DomainEventKind::kStopped, &detail));
  EXPECT_EQ(detail, "destroyed");
  EXPECT_EQ(hv->domainState("web-1")->state, DomainState::kShutoff);
  ASSERT_TRUE(hv->destroy("web-1").isOk());   // not running: ok
  ASSERT_TRUE(hv->destroy("absent").isOk());  // absent: ok
}

// Pins: undefine refuses a running domain, removes a stopped one (kUndefined
// event), and is ok for an absent one.
TEST(LibvirtHypervisorTest, Undefine) {
  auto hv = connect();
  ASSERT_TRUE(hv);
  EventLog log;
  ASSERT_TRUE(hv->subscribe(log.handler()).isOk());
  ASSERT_TRUE(hv->define(specFor("web-1")).isOk());
  ASSERT_TRUE(hv->start("web-1").isOk());
  EXPECT_EQ(hv->undefine("web-1").code(), Code::kFailedPrecondition);
  ASSERT_TRUE(hv->destroy("web-1").isOk());
  Status s = hv->undefine("web-1");
  ASSERT_TRUE(s.isOk()) << s.toString();
  EXPECT_TRUE(log.waitFor("web-1", DomainEventKind::kUndefined));
  EXPECT_EQ(hv->domainState("web-1").status().code(), Code::kNotFound);
  EXPECT_TRUE(hv->undefine("web-1").isOk());
  EXPECT_TRUE(hv->listManaged()->empty());
}

// Pins: a domain without our metadata is never listed nor touched: every call
// on its name fails with kFailedPrecondition and says why.
TEST(LibvirtHypervisorTest, RefusesUnmanagedDomain) {
  auto hv = connect();
  ASSERT_TRUE(hv);
  Status s = hv->define(specFor("legacy"));
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "defining vm 'legacy': domain 'legacy' exists and is not managed by tierwarden");
  EXPECT_EQ(hv->start("legacy").code(), Code::kFailedPrecondition);
  EXPECT_EQ(hv->destroy("legacy").code(), Code::kFailedPrecondition);
  EXPECT_EQ(hv->undefine("legacy").code(), Code::kFailedPrecondition);
  EXPECT_EQ(hv->domainState("legacy").status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(hv->migrate("legacy", kNodeUri, {}).code(), Code::kFailedPrecondition);
  EXPECT_TRUE(hv->listManaged()->empty());
  // Still there, still not ours.
  EXPECT_EQ(hv->define(specFor("legacy")).code(), Code::kFailedPrecondition);
}

// Pins: on test:///default the driver's own domain 'test' is never listed or
// touched, and capacity is that driver's node.
TEST(LibvirtHypervisorTest, DefaultDriverDomainIsNotOurs) {
  auto hv = connect("test:///default");
  ASSERT_TRUE(hv);
  auto list = hv->listManaged();
  ASSERT_TRUE(list.isOk()) << list.status().toString();
  for (const auto& d : *list) EXPECT_NE(d.meta.vm, "test");
  EXPECT_EQ(hv->destroy("test").code(), Code::kFailedPrecondition);
  EXPECT_EQ(hv->undefine("test").code(), Code::kFailedPrecondition);
  EXPECT_EQ(hv->define(specFor("test")).code(), Code::kFailedPrecondition);
  auto cap = hv->capacity();
  ASSERT_TRUE(cap.isOk());
  EXPECT_EQ(cap->cpus, 16);
  EXPECT_EQ(cap->memory_mib, 3072);
}

// Pins: the test driver cannot migrate; the answer is a clear error with our
// context, and the domain keeps running here.
TEST(LibvirtHypervisorTest, MigrateOnTestDriverIsAClearError) {
  auto hv = connect();
  ASSERT_TRUE(hv);
  ASSERT_TRUE(hv->define(specFor("web-1")).isOk());
  ASSERT_TRUE(hv->start("web-1").isOk());
  MigrateOptions opts;
  opts.migrate_uri = "unix:///tmp/nowhere.sock";
  Status s = hv->migrate("web-1", kNodeUri, opts);
  EXPECT_FALSE(s.isOk());
  EXPECT_EQ(s.message().rfind("migrating vm 'web-1' to '" + kNodeUri + "': ", 0), 0u)
      << s.toString();
  EXPECT_EQ(hv->domainState("web-1")->state, DomainState::kRunning);
}

// Pins: storage.pool resolves to the pool's target directory (the test
// driver's "default-pool" is a dir pool at /default-pool); an unknown pool is
// kNotFound with a hint, an inactive one kFailedPrecondition.
TEST(LibvirtHypervisorTest, StoragePoolDirIsThePoolsTarget) {
  auto hv = connect("test:///default");
  ASSERT_TRUE(hv);
  Result<std::string> dir = hv->storagePoolDir("default-pool");
  ASSERT_TRUE(dir.isOk()) << dir.status().toString();
  EXPECT_EQ(*dir, "/default-pool");
  Result<std::string> missing = hv->storagePoolDir("nfs-db");
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_EQ(missing.status().message(),
            "storage pool 'nfs-db' on 'test:///default': no such pool (define it on every host: "
            "virsh pool-define)");

  virConnectPtr conn = virConnectOpen("test:///default");
  ASSERT_NE(conn, nullptr);
  virStoragePoolPtr pool = virStoragePoolDefineXML(
      conn, "<pool type='dir'><name>idle</name><target><path>/srv/a&amp;b</path></target></pool>", 0);
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(hv->storagePoolDir("idle").status().code(), Code::kFailedPrecondition);
  ASSERT_EQ(virStoragePoolCreate(pool, 0), 0);
  EXPECT_EQ(*hv->storagePoolDir("idle"), "/srv/a&b");
  virStoragePoolDestroy(pool);
  virStoragePoolUndefine(pool);
  virStoragePoolFree(pool);
  virConnectClose(conn);
}

// Pins: two connections to one node.xml are two independent hosts.
TEST(LibvirtHypervisorTest, TwoNodeConnectionsAreIndependentHosts) {
  auto a = connect();
  auto b = connect();
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->define(specFor("web-1")).isOk());
  ASSERT_TRUE(a->start("web-1").isOk());
  EXPECT_EQ(names(*a->listManaged()), std::vector<std::string>{"web-1"});
  EXPECT_TRUE(b->listManaged()->empty());
  EXPECT_EQ(b->domainState("web-1").status().code(), Code::kNotFound);
  ASSERT_TRUE(b->define(specFor("web-1", 5)).isOk());
  EXPECT_EQ(b->domainState("web-1")->state, DomainState::kShutoff);
  EXPECT_EQ(a->domainState("web-1")->meta.epoch, 1);
}

// Pins: connection failures carry libvirt's message and our context; invalid
// specs are refused before libvirt sees them.
TEST(LibvirtHypervisorTest, ErrorsCarryContext) {
  auto missing = connectLibvirt("test:///nonexistent/tierwarden-node.xml");
  ASSERT_FALSE(missing.isOk());
  EXPECT_EQ(missing.status().message().rfind(
                "connecting to libvirt at 'test:///nonexistent/tierwarden-node.xml': ", 0),
            0u)
      << missing.status().toString();

  auto hv = connect();
  ASSERT_TRUE(hv);
  DomainSpec bad = specFor("web-1");
  bad.meta.tier = std::string("a\x01", 2);
  EXPECT_EQ(hv->define(bad).code(), Code::kInvalidArgument);
  EXPECT_EQ(hv->define(specFor("")).code(), Code::kInvalidArgument);
  Status s = hv->start("absent");
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.message().rfind("starting vm 'absent': ", 0), 0u) << s.toString();
}

// Pins: one hypervisor serves several threads at once (calls serialised on
// the connection) while events flow.
TEST(LibvirtHypervisorTest, ConcurrentCallers) {
  auto hv = connect();
  ASSERT_TRUE(hv);
  EventLog log;
  ASSERT_TRUE(hv->subscribe(log.handler()).isOk());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&hv, t] {
      const std::string vm = "vm-" + std::to_string(t);
      for (int i = 0; i < 20; ++i) {
        EXPECT_TRUE(hv->define(specFor(vm, i)).isOk());
        EXPECT_TRUE(hv->start(vm).isOk());
        EXPECT_TRUE(hv->listManaged().isOk());
        EXPECT_TRUE(hv->destroy(vm).isOk());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(names(*hv->listManaged()), (std::vector<std::string>{"vm-0", "vm-1", "vm-2", "vm-3"}));
  EXPECT_TRUE(log.waitFor("vm-3", DomainEventKind::kStopped));
}

// A private libvirtd in session mode (as 'nobody' when we are root), state in
// a temp dir: a real daemon that a test can kill and start again, serving the
// test driver at test+unix:///default?socket=<dir>/run/libvirt/libvirt-sock.
class SessionDaemon {
 public:
  static constexpr const char* kLibvirtd = "/usr/sbin/libvirtd";

  SessionDaemon() {
    char tmpl[] = "/tmp/tw-libvirtd-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return;
    dir_ = tmpl;
    for (const char* sub : {"run", "home", "config", "cache"}) {
      std::filesystem::create_directories(dir_ + "/" + sub);
    }
    chmod((dir_ + "/run").c_str(), 0700);
    if (geteuid() == 0) {
      for (const auto& entry : std::filesystem::recursive_directory_iterator(dir_)) {
        if (chown(entry.path().c_str(), kNobody, kNobody) != 0) return;
      }
      if (chown(dir_.c_str(), kNobody, kNobody) != 0) return;
    }
    env_ = {"HOME=" + dir_ + "/home", "XDG_RUNTIME_DIR=" + dir_ + "/run",
            "XDG_CONFIG_HOME=" + dir_ + "/config", "XDG_CACHE_HOME=" + dir_ + "/cache",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  }
  ~SessionDaemon() {
    kill9();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::string socket() const { return dir_ + "/run/libvirt/libvirt-sock"; }

  // Starts libvirtd and waits (bounded) until its socket accepts.
  bool start() {
    if (dir_.empty() || access(kLibvirtd, X_OK) != 0) return false;
    std::filesystem::remove(socket());
    std::vector<char*> envp;
    for (auto& e : env_) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string log_path = dir_ + "/libvirtd.log";
    const bool drop = geteuid() == 0;
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      if (drop && (setgroups(0, nullptr) != 0 || setgid(kNobody) != 0 || setuid(kNobody) != 0)) {
        _exit(126);
      }
      char arg0[] = "libvirtd";
      char arg1[] = "--timeout";
      char arg2[] = "0";
      char* argv[] = {arg0, arg1, arg2, nullptr};
      execve(kLibvirtd, argv, envp.data());
      _exit(127);
    }
    if (pid_ < 0) return false;
    for (int i = 0; i < 200; ++i) {  // up to 10 s for a real process to come up
      if (access(socket().c_str(), F_OK) == 0) return true;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // Kills the daemon we started (SIGKILL, by its pid) and reaps it.
  void kill9() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  static constexpr uid_t kNobody = 65534;
  std::string dir_;
  std::vector<std::string> env_;
  pid_t pid_ = -1;
};

// Pins: through a real daemon, a killed libvirtd makes calls fail with
// kUnavailable (after one reconnect attempt), and a restarted one is
// reconnected on the next call, with lifecycle events registered again.
// (The test driver has no close callback or keepalive; the daemon has both.)
TEST(LibvirtHypervisorTest, ReconnectsAfterDaemonRestart) {
  SessionDaemon daemon;
  if (!daemon.start()) GTEST_SKIP() << "cannot run a private libvirtd here";
  auto hv = connect("test+unix:///default?socket=" + daemon.socket());
  ASSERT_TRUE(hv);
  EventLog log;
  ASSERT_TRUE(hv->subscribe(log.handler()).isOk());
  ASSERT_TRUE(hv->define(specFor("web-1")).isOk());
  EXPECT_TRUE(log.waitFor("web-1", DomainEventKind::kDefined));
  // The daemon's own domain 'test' is not ours, also through the remote driver.
  EXPECT_EQ(names(*hv->listManaged()), std::vector<std::string>{"web-1"});

  daemon.kill9();
  EXPECT_EQ(hv->ping().code(), Code::kUnavailable);
  EXPECT_EQ(hv->listManaged().status().code(), Code::kUnavailable);

  ASSERT_TRUE(daemon.start());
  Status ping = hv->ping();
  ASSERT_TRUE(ping.isOk()) << ping.toString();
  ASSERT_TRUE(hv->define(specFor("web-2")).isOk());  // a fresh daemon: web-1 is gone
  EXPECT_TRUE(log.waitFor("web-2", DomainEventKind::kDefined));
  ASSERT_TRUE(hv->start("web-2").isOk());
  EXPECT_TRUE(log.waitFor("web-2", DomainEventKind::kStarted));
  EXPECT_EQ(names(*hv->listManaged()), std::vector<std::string>{"web-2"});
}

// Pins: startAll through a real daemon starts every domain (the workers use
// connections of their own) and reports each one's status in order: an
// unknown domain fails alone, a running one is ok.
TEST(LibvirtHypervisorTest, StartAllStartsTogetherAndReportsEach) {
  SessionDaemon daemon;
  if (!daemon.start()) GTEST_SKIP() << "cannot run a private libvirtd here";
  auto hv = connect("test+unix:///default?socket=" + daemon.socket());
  ASSERT_TRUE(hv);
  std::vector<std::string> vms;
  for (int i = 1; i <= 6; ++i) {
    vms.push_back("web-" + std::to_string(i));
    ASSERT_TRUE(hv->define(specFor(vms.back())).isOk());
  }
  ASSERT_TRUE(hv->start("web-6").isOk());
  vms.insert(vms.begin() + 2, "ghost");
  const std::vector<Status> got = hv->startAll(vms);
  ASSERT_EQ(got.size(), vms.size());
  for (size_t i = 0; i < vms.size(); ++i) {
    if (vms[i] == "ghost") {
      EXPECT_EQ(got[i].code(), Code::kNotFound) << got[i].toString();
      EXPECT_NE(got[i].toString().find("starting vm 'ghost'"), std::string::npos);
    } else {
      EXPECT_TRUE(got[i].isOk()) << vms[i] << ": " << got[i].toString();
    }
  }
  auto listed = hv->listManaged();
  ASSERT_TRUE(listed.isOk());
  ASSERT_EQ(listed->size(), 6u);
  for (const DomainStatus& d : *listed) EXPECT_EQ(d.state, DomainState::kRunning) << d.meta.vm;
}

// Pins: beginStarts through a real daemon returns at once and its starts run
// on connections of their own, so that they finish (and report each status
// in order) even after the LibvirtHypervisor that began them is gone: a
// start stuck in libvirtd holds nothing of the caller's. (The result is
// polled: StartCalls has no notification; the agent polls it too.)
TEST(LibvirtHypervisorTest, BeginStartsRunOnTheirOwnAndOutliveTheHypervisor) {
  SessionDaemon daemon;
  if (!daemon.start()) GTEST_SKIP() << "cannot run a private libvirtd here";
  const std::string uri = "test+unix:///default?socket=" + daemon.socket();
  // The daemon's test driver keeps its state while a connection to it is
  // open (the qemu driver keeps it always): this one holds it.
  auto keeper = connect(uri);
  ASSERT_TRUE(keeper);
  auto hv = connect(uri);
  ASSERT_TRUE(hv);
  std::vector<std::string> vms;
  for (int i = 1; i <= 6; ++i) {
    vms.push_back("web-" + std::to_string(i));
    ASSERT_TRUE(hv->define(specFor(vms.back())).isOk());
  }
  vms.insert(vms.begin() + 2, "ghost");
  std::shared_ptr<Hypervisor::StartCalls> calls = hv->beginStarts(vms);
  ASSERT_TRUE(calls);
  hv.reset();  // the batch lives on with its workers

  std::vector<std::optional<Status>> got(vms.size());
  for (int round = 0; round < 4000; ++round) {
    bool all = true;
    for (size_t i = 0; i < vms.size(); ++i) {
      if (!got[i]) got[i] = calls->result(i);
      all = all && got[i].has_value();
    }
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (size_t i = 0; i < vms.size(); ++i) {
    ASSERT_TRUE(got[i].has_value()) << vms[i] << " never returned";
    if (vms[i] == "ghost") {
      EXPECT_EQ(got[i]->code(), Code::kNotFound) << got[i]->toString();
    } else {
      EXPECT_TRUE(got[i]->isOk()) << vms[i] << ": " << got[i]->toString();
    }
  }
  auto listed = keeper->listManaged();
  ASSERT_TRUE(listed.isOk());
  ASSERT_EQ(listed->size(), 6u);
  for (const DomainStatus& d : *listed) EXPECT_EQ(d.state, DomainState::kRunning) << d.meta.vm;
}

// Pins: on the in-process test driver, beginStarts keeps the default: every
// result is there when it returns (`test:///FILE` connections each see a
// host of their own, so the starts run on the one connection).
TEST(LibvirtHypervisorTest, BeginStartsOnTheTestDriverReturnsEveryResult) {
  auto hv = connect("test:///default");
  ASSERT_TRUE(hv);
  ASSERT_TRUE(hv->define(specFor("begin-1")).isOk());
  std::shared_ptr<Hypervisor::StartCalls> calls = hv->beginStarts({"begin-1", "begin-ghost"});
  ASSERT_TRUE(calls->result(0).has_value());
  EXPECT_TRUE(calls->result(0)->isOk()) << calls->result(0)->toString();
  ASSERT_TRUE(calls->result(1).has_value());
  EXPECT_EQ(calls->result(1)->code(), Code::kNotFound);
  EXPECT_EQ(hv->domainState("begin-1")->state, DomainState::kRunning);
  ASSERT_TRUE(hv->destroy("begin-1").isOk());
  ASSERT_TRUE(hv->undefine("begin-1").isOk());
}

}  // namespace
}  // namespace tw
