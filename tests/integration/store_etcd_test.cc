// EtcdStore, LeaderLease and migrate-store against a real etcd (one member,
// started by this test process; every test skips when etcd is not
// installed). The Store contract and the etcd contract run here exactly as
// they run on SQLite and FakeEtcd in the unit tests.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "../unit/etcd_store_contract.h"
#include "../unit/lease_renewals_contract.h"
#include "../unit/store_contract.h"
#include "controller/leader_lease.h"
#include "etcd_process.h"
#include "tw/clock.h"
#include "tw/store_etcd.h"

namespace tw {
namespace {

namespace fs = std::filesystem;
using testing_etcd::EtcdProcess;

// A new cluster prefix per open(), unique across test processes (ctest runs
// each test in its own process, all on their own etcd).
std::string uniquePrefix() {
  static int n = 0;
  return "/tierwarden/p" + std::to_string(::getpid()) + "-" + std::to_string(++n);
}

struct RealEtcdStoreBackend {
  bool available() { return EtcdProcess::shared() != nullptr; }
  std::unique_ptr<Store> open() {
    prefix = uniquePrefix();
    return reopen();
  }
  std::unique_ptr<Store> reopen() {
    EtcdStoreOptions options;
    options.prefix = prefix;
    auto store = openEtcdStore(EtcdProcess::shared()->client(), options);
    EXPECT_TRUE(store.isOk()) << store.status().toString();
    return store.isOk() ? std::move(store).value() : nullptr;
  }
  std::string prefix;
};
using namespace store_contract;  // the suites' generated names are unqualified
using namespace etcd_contract;
INSTANTIATE_TYPED_TEST_SUITE_P(RealEtcd, StoreContractTest, RealEtcdStoreBackend);

struct RealEtcdBackend {
  bool available() { return EtcdProcess::shared() != nullptr; }
  std::unique_ptr<EtcdClient> client() { return EtcdProcess::shared()->client(); }
  std::string freshPrefix() { return uniquePrefix(); }
};
INSTANTIATE_TYPED_TEST_SUITE_P(RealEtcd, EtcdStoreTest, RealEtcdBackend);
using namespace renewals_contract;
INSTANTIATE_TYPED_TEST_SUITE_P(RealEtcd, LeaseRenewalsTest, RealEtcdBackend);

class RealEtcdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    etcd_ = EtcdProcess::shared();
    if (etcd_ == nullptr) GTEST_SKIP() << "etcd is not installed (apt-get install etcd-server etcd-client)";
  }
  EtcdProcess* etcd_ = nullptr;
};

// Pins: on a real etcd, one of two replicas leads; when it stops renewing
// it stops leading at its own deadline, which comes before etcd expires its
// lease, and the other replica wins a higher term only after that.
TEST_F(RealEtcdTest, LeaderLeaseHandsOverAfterExpiry) {
  auto client_a = etcd_->client();
  auto client_b = etcd_->client();
  LeaderLeaseOptions options;
  options.key = etcdLeaderKey(uniquePrefix());
  options.ttl_ms = 2000;
  options.margin_ms = 500;
  options.renew_every_ms = 200;
  options.identity = "a";
  LeaderLease a(*client_a, SteadyClock::instance(), options);
  options.identity = "b";
  LeaderLease b(*client_b, SteadyClock::instance(), options);
  a.runOnce();
  b.runOnce();
  ASSERT_TRUE(a.isLeader());
  ASSERT_FALSE(b.isLeader());
  EXPECT_EQ(b.leaderIdentity(), "a");

  // a stops renewing (its thread is stuck): only b keeps running.
  const Millis a_deadline = a.deadline();
  Millis a_stopped = 0;
  Millis b_started = 0;
  const Millis give_up = SteadyClock::instance().nowMs() + 10'000;
  while (SteadyClock::instance().nowMs() < give_up && b_started == 0) {
    const Millis now = SteadyClock::instance().nowMs();
    const bool a_leads = a.isLeader();
    if (now >= a_deadline) {
      EXPECT_FALSE(a_leads) << "a leads " << now - a_deadline << " ms after its deadline";
    }
    if (a_stopped == 0 && !a_leads) a_stopped = now;
    b.runOnce();
    if (b.isLeader()) b_started = SteadyClock::instance().nowMs();
    EXPECT_FALSE(a.isLeader() && b.isLeader());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(a_stopped, 0);
  ASSERT_GT(b_started, 0);
  EXPECT_LT(a_stopped, b_started);
  EXPECT_GT(b.term(), a.term());
  std::printf("a stopped %lld ms before b started\n", static_cast<long long>(b_started - a_stopped));
  // a's late renewal ends its term.
  a.runOnce();
  EXPECT_FALSE(a.isLeader());
  EXPECT_EQ(a.losses(), 1);
  b.resign();
}

struct RunResult {
  int exit_code = -1;
  std::string out;
};

RunResult run(const std::string& cmd) {
  RunResult r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Pins: tierwarden-controller migrate-store copies a SQLite state dir into
// etcd and back without losing or renumbering anything; a second copy into
// the now non-empty cluster is refused unless --force.
TEST_F(RealEtcdTest, MigrateStoreRoundTrip) {
  std::string templ = (fs::temp_directory_path() / "tw-migrate-XXXXXX").string();
  ASSERT_NE(::mkdtemp(templ.data()), nullptr);
  const fs::path dir = templ;
  const std::string cluster = "m" + std::to_string(::getpid());
  std::vector<std::string> want;
  {
    fs::create_directories(dir / "a");
    auto store = Store::open((dir / "a" / "tierwarden.db").string());
    ASSERT_TRUE(store.isOk()) << store.status().toString();
    store_contract::fill(**store);
    auto snap = (*store)->exportState();
    ASSERT_TRUE(snap.isOk());
    want = store_contract::describe(*snap);
  }
  const std::string bin = std::string(TW_BIN_DIR) + "/tierwarden-controller migrate-store --cluster " + cluster;
  auto to_etcd = run(bin + " --from sqlite:" + (dir / "a").string() + " --to " + etcd_->storeUrl());
  ASSERT_EQ(to_etcd.exit_code, 0) << to_etcd.out;
  EXPECT_NE(to_etcd.out.find("copied 2 policy versions"), std::string::npos) << to_etcd.out;

  auto again = run(bin + " --from sqlite:" + (dir / "a").string() + " --to " + etcd_->storeUrl());
  EXPECT_EQ(again.exit_code, 1) << again.out;
  EXPECT_NE(again.out.find("--force"), std::string::npos) << again.out;
  auto forced = run(bin + " --force --from sqlite:" + (dir / "a").string() + " --to " + etcd_->storeUrl());
  EXPECT_EQ(forced.exit_code, 0) << forced.out;

  auto back = run(bin + " --from " + etcd_->storeUrl() + " --to sqlite:" + (dir / "b").string());
  ASSERT_EQ(back.exit_code, 0) << back.out;
  auto store = Store::open((dir / "b" / "tierwarden.db").string());
  ASSERT_TRUE(store.isOk()) << store.status().toString();
  auto snap = (*store)->exportState();
  ASSERT_TRUE(snap.isOk());
  EXPECT_EQ(store_contract::describe(*snap), want);

  auto bad = run(bin + " --from sqlite:" + (dir / "nothing").string() + " --to " + etcd_->storeUrl());
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("no database"), std::string::npos) << bad.out;
  auto bad_url = run(bin + " --from sqlite:" + (dir / "a").string() + " --to etcd://h1:notaport");
  EXPECT_EQ(bad_url.exit_code, 1);
  EXPECT_NE(bad_url.out.find("bad port"), std::string::npos) << bad_url.out;
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace tw
