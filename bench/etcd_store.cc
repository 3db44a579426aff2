// bench/etcd_store: what the etcd store costs and how fast a leader notices
// that it lost its lease, against a running etcd. Prints its figures.
//
//   etcd_store --store etcd://127.0.0.1:2379 [--iterations 500] [--etcd-pid PID]
//
// 1. Latency of a typical controller transaction on EtcdStore, guarded by a
//    real LeaderLease: a VM restarted on its host = putVm + putHost +
//    appendEvent x2 in one Store::transaction (one etcd txn), and of a single
//    appendEvent outside a transaction. Median and p99.
// 2. Lease lost at etcd (another client revokes it, as etcd's expiry would):
//    time until isLeader() is false on the leader, whose LeaseRunner renews
//    every TTL/3.
// 3. With --etcd-pid: etcd stops answering (SIGSTOP): time until the leader
//    stops acting, on its own deadline, against the TTL after which etcd
//    could let another replica in. etcd gets SIGCONT afterwards.
// 4. The leader dies at a random instant between its renewals (kill -9: its
//    renewals stop and its lease is left to expire, not revoked): time until
//    a follower, campaigning on its own LeaseRunner, leads. The TTL minus the
//    time since the last renewal, plus at most one look at the key (250 ms).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "controller/leader_lease.h"
#include "controller/lease_runner.h"
#include "tw/clock.h"
#include "tw/etcd_client.h"
#include "tw/log.h"
#include "tw/store_etcd.h"

namespace {

using Steady = std::chrono::steady_clock;

double ms(Steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void report(const char* what, std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))]; };
  std::printf("%-48s n=%zu median=%.2f ms p99=%.2f ms max=%.2f ms\n", what, v.size(), at(0.5), at(0.99), v.back());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"etcd store and leader lease figures"};
  std::string url;
  int iterations = 500;
  int trials = 5;
  int ttl_ms = 3000;
  int etcd_pid = 0;
  app.add_option("--store", url, "etcd://HOST:PORT,...")->required();
  app.add_option("--iterations", iterations)->capture_default_str();
  app.add_option("--trials", trials, "lease-loss trials")->capture_default_str();
  app.add_option("--ttl-ms", ttl_ms)->capture_default_str();
  app.add_option("--etcd-pid", etcd_pid, "stop this etcd for the unreachable case (3)");
  CLI11_PARSE(app, argc, argv);
  tw::log::init("bench", "warn");

  auto endpoints = tw::parseEtcdStoreUrl(url);
  if (!endpoints.isOk()) {
    std::fprintf(stderr, "%s\n", endpoints.status().toString().c_str());
    return 1;
  }
  auto client = [&] {
    tw::HttpEtcdOptions o;
    o.endpoints = *endpoints;
    o.request_timeout_ms = 1000;
    return std::move(tw::makeHttpEtcdClient(o)).value();
  };
  const std::string prefix = "/tierwarden/bench-" + std::to_string(::getpid());
  auto lease_client_for = [&] {
    tw::HttpEtcdOptions o;
    o.endpoints = *endpoints;
    o.request_timeout_ms = std::max(500, ttl_ms / 3);  // as the controller's
    return std::move(tw::makeHttpEtcdClient(o)).value();
  };
  auto lease_client = lease_client_for();
  tw::LeaderLeaseOptions lo;
  lo.key = tw::etcdLeaderKey(prefix);
  lo.identity = "bench";
  lo.ttl_ms = ttl_ms;
  lo.margin_ms = 1000;
  tw::LeaderLease lease(*lease_client, tw::SteadyClock::instance(), lo);
  std::atomic<int> lost{0};
  tw::LeaseRunner runner(lease, [&] { ++lost; }, /*stop_after_loss=*/false);
  runner.start();
  while (!lease.isLeader()) std::this_thread::sleep_for(std::chrono::milliseconds(5));

  tw::EtcdStoreOptions so;
  so.prefix = prefix;
  so.guard = [&] { return lease.guard(); };
  auto store = tw::openEtcdStore(client(), so);
  if (!store.isOk()) {
    std::fprintf(stderr, "%s\n", store.status().toString().c_str());
    return 1;
  }
  tw::Store& s = **store;

  // 1. Transactions.
  std::vector<double> txn, single;
  tw::VmRecord vm;
  vm.name = "web-1";
  vm.tier = "web";
  vm.host = "h1";
  tw::HostRecord host;
  host.name = "h1";
  host.capacity = {8, 16384};
  for (int i = 0; i < iterations; ++i) {
    vm.restarts = i;
    vm.epoch = i;
    auto t0 = Steady::now();
    tw::Status st = s.transaction([&]() -> tw::Status {
      TW_RETURN_IF_ERROR(s.putVm(vm));
      TW_RETURN_IF_ERROR(s.putHost(host));
      TW_RETURN_IF_ERROR(s.appendEvent(tw::EventRecord{0, i, "warn", "vm.crashed", "vm/web-1", "domain crashed"}).status());
      return s.appendEvent(tw::EventRecord{0, i, "info", "vm.restarted", "vm/web-1", "restarted on 'h1'"}).status();
    });
    txn.push_back(ms(Steady::now() - t0));
    if (!st.isOk()) {
      std::fprintf(stderr, "txn: %s\n", st.toString().c_str());
      return 1;
    }
    t0 = Steady::now();
    auto e = s.appendEvent(tw::EventRecord{0, i, "info", "host.heartbeat", "host/h1", "x"});
    single.push_back(ms(Steady::now() - t0));
    if (!e.isOk()) return 1;
  }
  report("transaction (putVm+putHost+2 events, 1 txn)", txn);
  report("appendEvent outside a transaction", single);

  // 2. Lease revoked at etcd -> the leader notices.
  auto admin = client();
  std::vector<double> notice;
  for (int t = 0; t < trials; ++t) {
    while (!lease.isLeader()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    auto key = admin->range(lo.key, "");
    if (!key.isOk() || key->kvs.empty()) return 1;
    auto t0 = Steady::now();
    (void)admin->leaseRevoke(key->kvs[0].lease);
    while (lease.isLeader()) std::this_thread::sleep_for(std::chrono::microseconds(200));
    notice.push_back(ms(Steady::now() - t0));
  }
  report("lease revoked at etcd -> leader stops", notice);
  std::printf("  (renewal every %d ms; the next renewal sees it)\n", ttl_ms / 3);

  // 3. etcd stops answering -> the leader stops on its own deadline.
  if (etcd_pid > 0) {
    std::vector<double> stop_after, headroom;
    for (int t = 0; t < trials; ++t) {
      while (!lease.isLeader()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      std::this_thread::sleep_for(std::chrono::milliseconds(50 + 137 * t % 900));
      auto t0 = Steady::now();
      ::kill(etcd_pid, SIGSTOP);
      while (lease.isLeader()) std::this_thread::sleep_for(std::chrono::microseconds(200));
      auto stopped = Steady::now();
      const tw::Millis stopped_ms = tw::SteadyClock::instance().nowMs();
      const tw::Millis deadline = lease.deadline();  // the last one: renewals failed since
      ::kill(etcd_pid, SIGCONT);
      stop_after.push_back(ms(stopped - t0));
      // etcd counts the TTL from the last keepalive it received, which was
      // sent at deadline + margin - TTL: it cannot expire the lease (and let
      // another replica win) before deadline + margin.
      headroom.push_back(static_cast<double>(deadline + lo.margin_ms - stopped_ms));
    }
    report("etcd stopped -> leader stops acting", stop_after);
    report("  ...this long before etcd's TTL could end", headroom);
  }
  runner.stop();
  lease.resign();

  // 4. The leader dies -> a follower leads.
  std::vector<double> takeover;
  for (int t = 0; t < trials; ++t) {
    auto ca = lease_client_for();
    auto cb = lease_client_for();
    tw::LeaderLeaseOptions oa = lo;
    oa.identity = "dying";
    tw::LeaderLeaseOptions ob = lo;
    ob.identity = "successor";
    tw::LeaderLease a(*ca, tw::SteadyClock::instance(), oa);
    tw::LeaderLease b(*cb, tw::SteadyClock::instance(), ob);
    tw::LeaseRunner ra(a, [] {}, /*stop_after_loss=*/true);
    ra.start();
    while (!a.isLeader()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    tw::LeaseRunner rb(b, [] {}, /*stop_after_loss=*/false);
    rb.start();
    std::this_thread::sleep_for(std::chrono::milliseconds(1200 + 137 * t % 1000));
    auto t0 = Steady::now();
    ra.stop();  // dies: no renewal, no revoke
    while (!b.isLeader()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    takeover.push_back(ms(Steady::now() - t0));
    rb.stop();
    b.resign();
  }
  report("leader dies (kill -9) -> a follower leads", takeover);
  std::printf("  (TTL %d s, renewals every %d ms, a follower looks every %lld ms)\n", (ttl_ms + 999) / 1000,
              ttl_ms / 3, static_cast<long long>(lo.campaign_every_ms));
  (void)admin->deleteRange(prefix + "/", tw::etcdPrefixEnd(prefix + "/"));
  return 0;
}
