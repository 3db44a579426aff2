// EtcdStore: tw::Store on etcd (see tw/store_etcd.h for the key layout and
// the guarantees). Every etcd error becomes a tw::Status here, with what we
// were doing; nlohmann's exceptions on stored values are caught here.
// This file: the write buffer of a transaction, the id counters, reads with
// the buffer applied, and send(), the one txn with the schema and leader
// guard compares; store_etcd_store.h lists the other files.
#include "store_etcd_store.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tw::etcd_store {

Status EtcdStore::transaction(const std::function<Status()>& body) {
  if (txn_) return failedPrecondition("Store::transaction called inside another; nesting is not supported");
  txn_.emplace();
  Status status = body();
  Pending pending = std::move(*txn_);
  txn_.reset();
  if (!status.isOk()) return status;  // nothing was sent: nothing to undo
  return commit(pending);
}

// Runs `fn` on the open transaction's buffer (restored when fn fails), or
// on a buffer of its own that is committed at once. A write outside a
// transaction that loses a race for an id counter is retried once.
Status EtcdStore::stage(const std::function<Status(Pending&)>& fn) {
  if (txn_) {
    Pending saved = *txn_;
    Status s = fn(*txn_);
    if (!s.isOk()) *txn_ = std::move(saved);
    return s;
  }
  for (int attempt = 0;; ++attempt) {
    Pending p;
    TW_RETURN_IF_ERROR(fn(p));
    Status s = commit(p);
    if (s.code() != Code::kUnavailable || p.counters.empty() || attempt > 0) return s;
  }
}

Status EtcdStore::putRecord(const std::string& key, const Json& j) {
  return stage([&](Pending& p) -> Status {
    Result<std::string> value = dumpValue(j);
    if (!value.isOk()) return value.status();
    p.writes[key] = *value;
    return Status::ok();
  });
}

Status EtcdStore::deleteKey(const std::string& key) {
  return stage([&](Pending& p) -> Status {
    p.writes[key] = std::nullopt;
    return Status::ok();
  });
}

// The counter P/meta/last/<kind>: from the transaction, else from what our
// last commit left, else from etcd.
Result<Counter> EtcdStore::readCounter(const Pending* p, const std::string& kind) {
  const std::string key = dir("/meta/last/") + kind;
  if (p != nullptr) {
    auto it = p->counters.find(key);
    if (it != p->counters.end()) return it->second;
  }
  auto cached = counter_cache_.find(key);
  if (cached != counter_cache_.end()) return cached->second;
  Result<EtcdRangeResult> r = client_->range(key, "");
  if (!r.isOk()) return r.status();
  Counter c;
  if (!r->kvs.empty()) {
    Result<int64_t> last = parseInt(key, r->kvs[0].value);
    if (!last.isOk()) return last.status();
    c.last = *last;
    c.mod_revision = r->kvs[0].mod_revision;
  }
  return c;
}

Result<int64_t> EtcdStore::nextId(Pending& p, const std::string& kind) {
  Result<Counter> c = readCounter(&p, kind);
  if (!c.isOk()) return c.status();
  c->last += 1;
  c->dirty = true;
  p.counters[dir("/meta/last/") + kind] = *c;
  return c->last;
}

// One key, with the overlay applied.
Result<std::optional<std::string>> EtcdStore::get(const Pending* p, const std::string& key) {
  if (p != nullptr) {
    auto it = p->writes.find(key);
    if (it != p->writes.end()) return it->second;
  }
  Result<EtcdRangeResult> r = client_->range(key, "");
  if (!r.isOk()) return r.status();
  if (r->kvs.empty()) return std::optional<std::string>();
  return std::optional<std::string>(std::move(r->kvs[0].value));
}

// Keys in [start, end) with the overlay applied, by key, at most `limit`
// (0 = all).
Result<std::vector<std::pair<std::string, std::string>>> EtcdStore::list(const Pending* p, const std::string& start,
                                                              const std::string& end, int64_t limit) {
  auto inside = [&](const std::string& k) { return k >= start && k < end; };
  int64_t fetch = limit;
  if (p != nullptr && limit > 0) {
    for (const auto& [k, v] : p->writes) {
      if (!v && inside(k)) ++fetch;  // a delete may hide a fetched key
    }
  }
  Result<EtcdRangeResult> r = client_->range(start, end, fetch);
  if (!r.isOk()) return r.status();
  std::map<std::string, std::string> m;
  for (EtcdKv& kv : r->kvs) m.emplace(std::move(kv.key), std::move(kv.value));
  if (p != nullptr) {
    for (const auto& [k, v] : p->writes) {
      if (!inside(k)) continue;
      if (v) {
        m[k] = *v;
      } else {
        m.erase(k);
      }
    }
  }
  std::vector<std::pair<std::string, std::string>> out(std::make_move_iterator(m.begin()), std::make_move_iterator(m.end()));
  if (limit > 0 && static_cast<int64_t>(out.size()) > limit) out.resize(static_cast<size_t>(limit));
  return out;
}

Result<int64_t> EtcdStore::send(const std::vector<EtcdOp>& ops, const std::vector<EtcdCompare>& extra) {
  const std::string schema_key = dir("/meta/schema");
  std::vector<EtcdCompare> compares{EtcdCompare::valueIs(schema_key, std::to_string(schema_version_))};
  std::vector<EtcdOp> failure{EtcdOp::range(schema_key)};
  std::optional<EtcdWriteGuard> guard;
  if (options_.guard) {
    Result<EtcdWriteGuard> g = options_.guard();
    if (!g.isOk()) return failedPrecondition("not the leader: " + g.status().message() + "; nothing written");
    guard = *g;
    compares.push_back(EtcdCompare::createRevisionIs(guard->key, guard->create_revision));
    failure.push_back(EtcdOp::range(guard->key));
  }
  compares.insert(compares.end(), extra.begin(), extra.end());

  // etcd's own limits, checked here for a message that says what to do.
  const size_t needed = std::max(ops.size(), compares.size());
  if (static_cast<int64_t>(needed) > options_.max_txn_ops) {
    return failedPrecondition("this change needs " + std::to_string(needed) +
                              " operations in one etcd transaction, more than the " +
                              std::to_string(options_.max_txn_ops) +
                              " allowed; start etcd with --max-txn-ops=" + std::to_string(std::max<size_t>(needed * 2, 1024)) +
                              " and the controller with --etcd-max-txn-ops to match; nothing written");
  }
  int64_t bytes = 256;
  for (const EtcdOp& op : ops) bytes += 64 + static_cast<int64_t>(op.key.size() + op.value.size() + op.range_end.size()) * 4 / 3;
  for (const EtcdCompare& c : compares) bytes += 64 + static_cast<int64_t>(c.key.size() + c.value.size()) * 4 / 3;
  if (bytes > options_.max_request_bytes) {
    return failedPrecondition("this change is about " + std::to_string(bytes / 1024) +
                              " KiB in one etcd transaction, more than the " +
                              std::to_string(options_.max_request_bytes / 1024) +
                              " KiB allowed; start etcd with a larger --max-request-bytes and the "
                              "controller with --etcd-max-request-bytes to match; nothing written");
  }

  Result<EtcdTxnResult> r = client_->txn(compares, ops, failure);
  if (!r.isOk()) return r.status();
  if (r->succeeded) return r->revision;

  // Why: the guard first (the answer that matters), then the schema.
  if (guard) {
    const bool have = r->ranges.size() > 1 && !r->ranges[1].kvs.empty();
    if (!have || r->ranges[1].kvs[0].create_revision != guard->create_revision) {
      const std::string why =
          "the leader key " + inQuotes(guard->key) +
          (have ? " belongs to term " + std::to_string(r->ranges[1].kvs[0].create_revision)
                : std::string(" is gone (our lease ran out)")) +
          ", ours was term " + std::to_string(guard->create_revision);
      if (options_.on_deposed) options_.on_deposed(why);
      return failedPrecondition("not the leader: " + why + "; nothing written");
    }
  }
  const bool schema_there = !r->ranges.empty() && !r->ranges[0].kvs.empty();
  const std::string schema_now = schema_there ? r->ranges[0].kvs[0].value : "none";
  if (schema_now != std::to_string(schema_version_)) {
    return failedPrecondition("the etcd store's schema is now " + schema_now + ", this build opened it at " +
                              std::to_string(schema_version_) + "; nothing written; restart with a build that knows it");
  }
  return unavailable("another writer changed an id counter meanwhile; nothing written; retry");
}

Status EtcdStore::commit(Pending& p) {
  std::vector<EtcdOp> ops;
  std::vector<EtcdCompare> counters;
  for (const auto& [key, value] : p.writes) ops.push_back(value ? EtcdOp::put(key, *value) : EtcdOp::del(key));
  for (const auto& [key, c] : p.counters) {
    if (!c.dirty) continue;
    ops.push_back(EtcdOp::put(key, std::to_string(c.last)));
    counters.push_back(EtcdCompare::modRevisionIs(key, c.mod_revision));
  }
  if (ops.empty()) return Status::ok();
  Result<int64_t> revision = send(ops, counters);
  if (!revision.isOk()) {
    for (const auto& [key, c] : p.counters) counter_cache_.erase(key);  // read them afresh
    return revision.status().withContext("committing to etcd");
  }
  for (auto& [key, c] : p.counters) {
    if (c.dirty) counter_cache_[key] = Counter{c.last, *revision, false};
  }
  if (p.policy_version > 0 && listener_) listener_(p.policy_version);
  return Status::ok();
}

}  // namespace tw::etcd_store
