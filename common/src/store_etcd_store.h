// EtcdStore: tw::Store on etcd (opened by openEtcdStore; tw/store_etcd.h has
// the key layout and the guarantees). Its methods live in one file per concern:
//   store_etcd.cc            the write buffer, id counters and the guarded txn
//   store_etcd_schema.cc     the migrations, the cluster prefix, openEtcdStore
//   store_etcd_codec.cc      records <-> the JSON values stored under the keys
//   store_etcd_records.cc    policies, tiers, hosts, vms, the backup catalogue
//   store_etcd_events.cc     the event log and its retention
//   store_etcd_journal.cc    incidents and the action journal
//   store_etcd_snapshot.cc   exportState / importState
//   store_etcd_published.cc  the published assignment sets
// Internal to twcommon: include tw/store_etcd.h.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tw/json.h"
#include "tw/store_etcd.h"

namespace tw::etcd_store {

inline std::string inQuotes(const std::string& s) { return "'" + s + "'"; }

// An id as a key's last part: zero-padded to 20 digits, so keys sort by id.
std::string padded(int64_t id);
// The decimal number stored under `key`; kInternal naming the key otherwise.
Result<int64_t> parseInt(const std::string& key, const std::string& text);

// Decodes a stored JSON value with `f`; a bad value is kInternal naming the key.
template <typename T, typename F>
Result<T> decodeValue(const std::string& key, const std::string& text, F f) {
  Result<Json> j = parseJson(text);
  if (!j.isOk()) return internalError("etcd key " + inQuotes(key) + " holds bad JSON: " + j.status().message());
  try {
    return f(*j);
  } catch (const Json::exception& e) {
    return internalError("etcd key " + inQuotes(key) + " holds a bad record: " + e.what());
  }
}

// kInvalidArgument when nlohmann cannot encode `j`.
Result<std::string> dumpValue(const Json& j);

// ---- records <-> JSON values (store_etcd_codec.cc; to_json of tw/json.h where it exists) ----
Json policyJson(const PolicyRecord& p);
PolicyRecord policyFrom(const Json& j);
HostRecord hostFrom(const Json& j);
VmRecord vmFrom(const Json& j);
Json incidentJson(const IncidentRecord& i);
IncidentRecord incidentFrom(const Json& j);
Json actionJson(const ActionRecord& a);
ActionRecord actionFrom(const Json& j);
Json tierJson(int64_t policy_version, int64_t ord, const Json& spec);

// An id counter (P/meta/last/<kind>) as this store last saw it.
struct Counter {
  int64_t last = 0;          // the last id given out
  int64_t mod_revision = 0;  // of the key when read (0: no key yet)
  bool dirty = false;        // `last` moved in this transaction
};

// The writes of one transaction, not yet sent.
struct Pending {
  std::map<std::string, std::optional<std::string>> writes;    // key -> value; nullopt = delete
  std::map<std::string, Counter> counters;                     // key -> counter
  int64_t policy_version = 0;                                  // a policy inserted
  int64_t new_events = 0;
};


class EtcdStore final : public Store {
 public:
  EtcdStore(std::unique_ptr<EtcdClient> client, EtcdStoreOptions options, int schema_version)
      : client_(std::move(client)), options_(std::move(options)), schema_version_(schema_version) {}

  int schemaVersion() const override { return schema_version_; }

  void setPolicyCommitListener(PolicyCommitListener listener) override { listener_ = std::move(listener); }

  // The write buffer and the txn (store_etcd.cc).
  Status transaction(const std::function<Status()>& body) override;

  // Policies and tiers, hosts, vms, the backup catalogue (store_etcd_records.cc).
  Result<int64_t> insertPolicy(const PolicyRecord& record) override;
  Result<std::optional<PolicyRecord>> latestPolicy() override;
  Status replaceTiers(int64_t policy_version, const std::vector<TierSpec>& tiers) override;
  Status putHost(const HostRecord& host) override;
  Status deleteHost(const std::string& name) override;
  Result<std::vector<HostRecord>> hosts() override;
  Status putVm(const VmRecord& vm) override;
  Status deleteVm(const std::string& name) override;
  Result<std::vector<VmRecord>> vms() override;
  Status putBackup(const BackupRecord& b) override;
  Status deleteBackup(const std::string& vm, const std::string& id) override;
  Result<std::vector<BackupRecord>> backups(const std::string& vm) override;

  // The event log and its retention (store_etcd_events.cc).
  Result<EventRecord> appendEvent(EventRecord event) override;
  Result<std::vector<EventRecord>> eventsSince(int64_t after_id, int limit) override;
  Result<int64_t> eventCount() override;
  Result<int64_t> lastEventId() override;
  Result<int64_t> pruneEvents(Millis before_ms, int64_t keep_at_most, int max_rows) override;
  Result<int64_t> eventLogBytes() override;

  // Incidents and the action journal (store_etcd_journal.cc).
  Result<int64_t> putIncident(const IncidentRecord& incident) override;
  Result<std::vector<IncidentRecord>> incidents(int recent) override;
  Result<int64_t> beginAction(const ActionRecord& action) override;
  Status endAction(int64_t id) override;
  Result<std::vector<ActionRecord>> openActions() override;

  // The whole store as one snapshot (store_etcd_snapshot.cc).
  Result<StoreSnapshot> exportState() override;
  Status importState(const StoreSnapshot& snap, bool replace) override;

  // P/published-sets/<host>: {"term", "digest", "set"} (Store::publishSets).
  // Not part of exportState(): a new leader publishes every set again.
  bool wantsPublishedSets() const override { return true; }
  // store_etcd_published.cc
  Status publishSets(const std::map<std::string, PublishedSet>& sets) override;
  Result<std::optional<PublishedSet>> publishedSet(const std::string& host) override;

 private:
  std::string dir(const char* sub) const { return options_.prefix + sub; }
  const Pending* overlay() const { return txn_ ? &*txn_ : nullptr; }

  // store_etcd.cc
  Status stage(const std::function<Status(Pending&)>& fn);
  Status putRecord(const std::string& key, const Json& j);
  Status deleteKey(const std::string& key);
  Result<Counter> readCounter(const Pending* p, const std::string& kind);
  Result<int64_t> nextId(Pending& p, const std::string& kind);
  Result<std::optional<std::string>> get(const Pending* p, const std::string& key);
  Result<std::vector<std::pair<std::string, std::string>>> list(const Pending* p, const std::string& start,
                                                                const std::string& end, int64_t limit);

  template <typename T, typename F>
  Result<std::vector<T>> decodeAll(const std::vector<std::pair<std::string, std::string>>& kvs, F f,
                                   const char* context) {
    std::vector<T> out;
    out.reserve(kvs.size());
    for (const auto& [key, text] : kvs) {
      Result<T> v = decodeValue<T>(key, text, f);
      if (!v.isOk()) return v.status().withContext(context);
      out.push_back(std::move(*v));
    }
    return out;
  }

  template <typename T, typename F>
  Result<std::vector<T>> listRecords(const std::string& prefix, F f, const char* context) {
    auto kvs = list(overlay(), prefix, etcdPrefixEnd(prefix), 0);
    if (!kvs.isOk()) return kvs.status().withContext(context);
    return decodeAll<T>(*kvs, f, context);
  }

  // Sends `ops` as one txn with the schema, guard and `extra` compares.
  // Returns the txn's revision.
  Result<int64_t> send(const std::vector<EtcdOp>& ops, const std::vector<EtcdCompare>& extra);
  Status commit(Pending& p);

  std::unique_ptr<EtcdClient> client_;
  const EtcdStoreOptions options_;
  const int schema_version_;
  std::optional<Pending> txn_;  // the open transaction's buffer
  std::map<std::string, Counter> counter_cache_;  // as our last commit left them
  PolicyCommitListener listener_;
};

}  // namespace tw::etcd_store
