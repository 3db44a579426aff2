#include "tw/fake_etcd.h"

#include <algorithm>
#include <set>

namespace tw {

FakeEtcd::FakeEtcd(const Clock& clock, int max_txn_ops, int64_t min_ttl_s)
    : clock_(clock), max_txn_ops_(max_txn_ops), min_ttl_s_(min_ttl_s) {}

std::map<std::string, std::string> FakeEtcd::dump() {
  expireLeases();
  std::map<std::string, std::string> out;
  for (const auto& [k, e] : kv_) out[k] = e.value;
  return out;
}

void FakeEtcd::expireLeases() {
  const Millis now = clock_.nowMs();
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (now >= it->second.expires_ms) {
      // One revision for the whole expiry, as etcd deletes the keys in one txn.
      bool deleted = false;
      for (const std::string& key : it->second.keys) deleted |= kv_.erase(key) > 0;
      if (deleted) ++revision_;
      it = leases_.erase(it);
    } else {
      ++it;
    }
  }
}

bool FakeEtcd::holds(const EtcdCompare& c) const {
  auto it = kv_.find(c.key);
  const Entry none;
  const Entry& e = it == kv_.end() ? none : it->second;
  if (c.target == EtcdCompare::Target::kValue) {
    if (it == kv_.end()) return false;  // etcd: a value compare on a missing key fails
    int cmp = e.value.compare(c.value);
    switch (c.result) {
      case EtcdCompare::Result::kEqual: return cmp == 0;
      case EtcdCompare::Result::kNotEqual: return cmp != 0;
      case EtcdCompare::Result::kGreater: return cmp > 0;
      case EtcdCompare::Result::kLess: return cmp < 0;
    }
  }
  int64_t have = c.target == EtcdCompare::Target::kCreate ? e.create_revision
                 : c.target == EtcdCompare::Target::kMod  ? e.mod_revision
                                                          : e.version;
  switch (c.result) {
    case EtcdCompare::Result::kEqual: return have == c.number;
    case EtcdCompare::Result::kNotEqual: return have != c.number;
    case EtcdCompare::Result::kGreater: return have > c.number;
    case EtcdCompare::Result::kLess: return have < c.number;
  }
  return false;
}

namespace {
bool inRange(const std::string& k, const std::string& key, const std::string& range_end) {
  if (range_end.empty()) return k == key;
  if (range_end == std::string(1, '\0')) return k >= key;
  return k >= key && k < range_end;
}
}  // namespace

EtcdRangeResult FakeEtcd::rangeNow(const std::string& key, const std::string& range_end,
                                   int64_t limit, bool count_only) const {
  EtcdRangeResult out;
  out.revision = revision_;
  for (auto it = kv_.lower_bound(key); it != kv_.end(); ++it) {
    if (!inRange(it->first, key, range_end)) {
      if (range_end.empty() || it->first >= range_end) break;
      continue;
    }
    ++out.count;
    if (count_only) continue;
    if (limit > 0 && static_cast<int64_t>(out.kvs.size()) >= limit) {
      out.more = true;
      continue;
    }
    const Entry& e = it->second;
    out.kvs.push_back(EtcdKv{it->first, e.value, e.create_revision, e.mod_revision, e.version, e.lease});
  }
  return out;
}

Status FakeEtcd::checkOp(const EtcdOp& op) const {
  if (op.key.empty()) return invalidArgument("etcd: etcdserver: key is not provided");
  if (op.kind == EtcdOp::Kind::kPut && op.lease != 0 && leases_.count(op.lease) == 0) {
    return notFound("etcd: etcdserver: requested lease not found");
  }
  return Status::ok();
}

void FakeEtcd::putNow(const std::string& key, const std::string& value, int64_t lease) {
  Entry& e = kv_[key];
  if (e.create_revision == 0) {
    e.create_revision = revision_;
    e.version = 0;
  }
  if (e.lease != 0 && e.lease != lease) {
    auto old = leases_.find(e.lease);
    if (old != leases_.end()) old->second.keys.erase(key);
  }
  e.value = value;
  e.mod_revision = revision_;
  ++e.version;
  e.lease = lease;
  if (lease != 0) leases_[lease].keys.insert(key);
}

int64_t FakeEtcd::deleteNow(const std::string& key, const std::string& range_end) {
  int64_t deleted = 0;
  for (auto it = kv_.lower_bound(key); it != kv_.end();) {
    if (!inRange(it->first, key, range_end)) {
      if (range_end.empty() || it->first >= range_end) break;
      ++it;
      continue;
    }
    if (it->second.lease != 0) {
      auto lease = leases_.find(it->second.lease);
      if (lease != leases_.end()) lease->second.keys.erase(it->first);
    }
    it = kv_.erase(it);
    ++deleted;
  }
  return deleted;
}

void FakeEtcd::apply(const EtcdOp& op, EtcdTxnResult& out) {
  switch (op.kind) {
    case EtcdOp::Kind::kPut: putNow(op.key, op.value, op.lease); break;
    case EtcdOp::Kind::kDelete: deleteNow(op.key, op.range_end); break;
    case EtcdOp::Kind::kRange: out.ranges.push_back(rangeNow(op.key, op.range_end, 0, false)); break;
  }
}

Status FakeEtcdClient::reach() {
  if (cut_off_) return unavailable("etcd: cannot reach the fake etcd (cut off)");
  ++etcd_.requests_;
  etcd_.expireLeases();
  return Status::ok();
}

Result<EtcdRangeResult> FakeEtcdClient::range(const std::string& key, const std::string& range_end,
                                              int64_t limit, bool count_only) {
  TW_RETURN_IF_ERROR(reach());
  return etcd_.rangeNow(key, range_end, limit, count_only);
}

Result<int64_t> FakeEtcdClient::put(const std::string& key, const std::string& value, int64_t lease) {
  Result<EtcdTxnResult> r = txn({}, {EtcdOp::put(key, value, lease)}, {});
  if (!r.isOk()) return r.status();
  return r->revision;
}

Result<int64_t> FakeEtcdClient::deleteRange(const std::string& key, const std::string& range_end) {
  TW_RETURN_IF_ERROR(reach());
  int64_t deleted = etcd_.deleteNow(key, range_end);
  if (deleted > 0) ++etcd_.revision_;
  return deleted;
}

Result<EtcdTxnResult> FakeEtcdClient::txn(const std::vector<EtcdCompare>& compares,
                                          const std::vector<EtcdOp>& success,
                                          const std::vector<EtcdOp>& failure) {
  TW_RETURN_IF_ERROR(reach());
  // etcd counts the larger branch (and the compares) against --max-txn-ops.
  const size_t ops = std::max({compares.size(), success.size(), failure.size()});
  if (static_cast<int>(ops) > etcd_.max_txn_ops_) {
    return invalidArgument(
        "etcd txn: etcdserver: too many operations in txn request (etcd's --max-txn-ops, 128 by "
        "default, bounds one transaction)");
  }
  // etcd refuses a branch that puts one key twice, or puts a key that a
  // delete in the same branch covers.
  for (const std::vector<EtcdOp>* b : {&success, &failure}) {
    std::set<std::string> puts;
    for (const EtcdOp& op : *b) {
      if (op.kind == EtcdOp::Kind::kPut && !puts.insert(op.key).second) {
        return invalidArgument("etcd txn: etcdserver: duplicate key given in txn request");
      }
    }
    for (const EtcdOp& op : *b) {
      if (op.kind != EtcdOp::Kind::kDelete) continue;
      for (const std::string& k : puts) {
        if (inRange(k, op.key, op.range_end)) {
          return invalidArgument("etcd txn: etcdserver: duplicate key given in txn request");
        }
      }
    }
  }
  bool ok = std::all_of(compares.begin(), compares.end(),
                        [&](const EtcdCompare& c) { return etcd_.holds(c); });
  const std::vector<EtcdOp>& branch = ok ? success : failure;
  for (const EtcdOp& op : branch) TW_RETURN_IF_ERROR(etcd_.checkOp(op));
  bool writes = std::any_of(branch.begin(), branch.end(),
                            [](const EtcdOp& op) { return op.kind != EtcdOp::Kind::kRange; });
  if (writes) ++etcd_.revision_;  // one revision per txn, like etcd
  EtcdTxnResult out;
  out.succeeded = ok;
  for (const EtcdOp& op : branch) etcd_.apply(op, out);
  out.revision = etcd_.revision_;
  return out;
}

Result<EtcdLease> FakeEtcdClient::leaseGrant(int64_t ttl_s) {
  TW_RETURN_IF_ERROR(reach());
  if (ttl_s <= 0) return invalidArgument("etcd lease grant: TTL must be positive");
  int64_t ttl = std::max(ttl_s, etcd_.min_ttl_s_);
  int64_t id = etcd_.next_lease_++;
  etcd_.leases_[id] = FakeEtcd::Lease{ttl, etcd_.clock_.nowMs() + ttl * 1000, {}};
  return EtcdLease{id, ttl};
}

Result<int64_t> FakeEtcdClient::leaseKeepAlive(int64_t id) {
  TW_RETURN_IF_ERROR(reach());
  auto it = etcd_.leases_.find(id);
  if (it == etcd_.leases_.end()) return int64_t{0};
  it->second.expires_ms = etcd_.clock_.nowMs() + it->second.ttl_s * 1000;
  return it->second.ttl_s;
}

Status FakeEtcdClient::leaseRevoke(int64_t id) {
  TW_RETURN_IF_ERROR(reach());
  auto it = etcd_.leases_.find(id);
  if (it == etcd_.leases_.end()) return Status::ok();
  bool deleted = false;
  for (const std::string& key : it->second.keys) deleted |= etcd_.kv_.erase(key) > 0;
  if (deleted) ++etcd_.revision_;
  etcd_.leases_.erase(it);
  return Status::ok();
}

}  // namespace tw
