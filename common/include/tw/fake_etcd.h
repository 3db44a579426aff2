// FakeEtcd: an in-memory etcd with the semantics tierwarden relies on
// (revisions, create/mod revisions, txn compares, leases that expire on a
// Clock, --max-txn-ops), and FakeEtcdClient, one replica's view of it, which a
// test can cut off (every call kUnavailable) to model a partition.
//
// The store and lease tests run against it hermetically; the same tests run
// against a real etcd in tests/integration/store_etcd_test.cc, which is what
// keeps the two in step.
//
// Not thread-safe: one thread steps the clock and calls the clients.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "tw/clock.h"
#include "tw/etcd_client.h"

namespace tw {

class FakeEtcd {
 public:
  // Leases expire when clock.nowMs() passes their deadline (granted TTL after
  // the last grant/keepalive). `min_ttl_s`: etcd raises smaller TTLs to this.
  explicit FakeEtcd(const Clock& clock, int max_txn_ops = kEtcdDefaultMaxTxnOps, int64_t min_ttl_s = 1);

  int64_t revision() const { return revision_; }
  // Every key and value, for tests.
  std::map<std::string, std::string> dump();
  // Requests served, for tests that count round trips.
  int64_t requests() const { return requests_; }

 private:
  friend class FakeEtcdClient;
  struct Entry {
    std::string value;
    int64_t create_revision = 0;
    int64_t mod_revision = 0;
    int64_t version = 0;
    int64_t lease = 0;
  };
  struct Lease {
    int64_t ttl_s = 0;
    Millis expires_ms = 0;
    std::set<std::string> keys;
  };

  void expireLeases();
  bool holds(const EtcdCompare& c) const;
  EtcdRangeResult rangeNow(const std::string& key, const std::string& range_end, int64_t limit,
                           bool count_only) const;
  Status checkOp(const EtcdOp& op) const;
  void apply(const EtcdOp& op, EtcdTxnResult& out);
  void putNow(const std::string& key, const std::string& value, int64_t lease);
  int64_t deleteNow(const std::string& key, const std::string& range_end);

  const Clock& clock_;
  const int max_txn_ops_;
  const int64_t min_ttl_s_;
  std::map<std::string, Entry> kv_;
  std::map<int64_t, Lease> leases_;
  int64_t revision_ = 1;
  int64_t next_lease_ = 0x1000;
  int64_t requests_ = 0;
};

class FakeEtcdClient final : public EtcdClient {
 public:
  explicit FakeEtcdClient(FakeEtcd& etcd) : etcd_(etcd) {}

  // While cut off, every call fails with kUnavailable and reaches nothing.
  void setCutOff(bool cut_off) { cut_off_ = cut_off; }

  Result<EtcdRangeResult> range(const std::string& key, const std::string& range_end,
                                int64_t limit = 0, bool count_only = false) override;
  Result<int64_t> put(const std::string& key, const std::string& value, int64_t lease = 0) override;
  Result<int64_t> deleteRange(const std::string& key, const std::string& range_end) override;
  Result<EtcdTxnResult> txn(const std::vector<EtcdCompare>& compares,
                            const std::vector<EtcdOp>& success,
                            const std::vector<EtcdOp>& failure) override;
  Result<EtcdLease> leaseGrant(int64_t ttl_s) override;
  Result<int64_t> leaseKeepAlive(int64_t id) override;
  Status leaseRevoke(int64_t id) override;

 private:
  Status reach();

  FakeEtcd& etcd_;
  bool cut_off_ = false;
};

}  // namespace tw
