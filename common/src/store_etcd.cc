// EtcdStore: tw::Store on etcd (see tw/store_etcd.h for the key layout and
// the guarantees). Every etcd error becomes a tw::Status here, with what we
// were doing; nlohmann's exceptions on stored values are caught here.
#include "tw/store_etcd.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "tw/json.h"
#include "tw/log.h"

namespace tw {
namespace {

// ------------------------------------------------------------ migrations ---
//
// The schema, oldest step first; step i takes P/meta/schema from i to i + 1
// in one txn that compares the old value, so two replicas starting together
// never both run a step. The numbering is SQLite's (kMigrations in
// store_sqlite.cc): version N holds the same records in both stores.
//
// TO CHANGE THE SCHEMA, append a step here AND in store_sqlite.cc. A step's
// `rewrite` returns the ops that convert existing keys (null: nothing to
// convert, new keys are written on first use). Never edit a released step.
struct EtcdMigration {
  const char* description;
  Result<std::vector<EtcdOp>> (*rewrite)(EtcdClient& client, const std::string& prefix);
};

constexpr EtcdMigration kEtcdMigrations[] = {
    {"v1: policies, tiers, hosts, vms, events", nullptr},
    {"v2: incidents, action journal", nullptr},
    {"v3: backup catalogue", nullptr},
    // A host record without "watchdog_ms" reads as -1 (never heard): no key
    // to convert. The step is there so that an older build refuses the store.
    {"v4: host watchdog timeouts", nullptr},
    // Append v5 here (see above).
};

constexpr int kEtcdMigrationCount = static_cast<int>(std::size(kEtcdMigrations));

// The data of a store: what importState() clears and emptiness counts.
constexpr const char* kDataDirs[] = {"/policies/", "/tiers/", "/hosts/",  "/vms/",
                                     "/events/",   "/incidents/", "/actions/", "/meta/last/",
                                     "/backups/"};

std::string inQuotes(const std::string& s) { return "'" + s + "'"; }

std::string padded(int64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%020" PRId64, id);
  return buf;
}

Result<int64_t> parseInt(const std::string& key, const std::string& text) {
  if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string::npos) {
    return internalError("etcd key " + inQuotes(key) + " holds " + inQuotes(text) + ", not a number");
  }
  return static_cast<int64_t>(std::stoll(text));
}

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

Result<std::string> dumpValue(const Json& j) {
  try {
    return j.dump();
  } catch (const Json::exception& e) {
    return invalidArgument(std::string("cannot encode as JSON: ") + e.what());
  }
}

// ---- records <-> JSON values (to_json of tw/json.h where it exists) ----

Json policyJson(const PolicyRecord& p) {
  Json files = Json::array();
  for (const PolicyFile& f : p.files) files.push_back(f);
  return Json{{"version", p.version}, {"applied_ms", p.applied_ms}, {"digest", p.digest}, {"files", files}};
}
PolicyRecord policyFrom(const Json& j) {
  PolicyRecord p;
  p.version = j.at("version").get<int64_t>();
  p.applied_ms = j.at("applied_ms").get<int64_t>();
  p.digest = j.at("digest").get<std::string>();
  p.files = j.at("files").get<std::vector<PolicyFile>>();
  return p;
}

HostRecord hostFrom(const Json& j) {
  HostRecord h;
  h.name = j.at("name").get<std::string>();
  std::string state = j.at("state").get<std::string>();
  std::optional<HostState> parsed = hostStateFromString(state);
  if (!parsed) throw Json::other_error::create(501, "unknown host state '" + state + "'", &j);
  h.state = *parsed;
  h.state_since_ms = j.at("state_since_ms").get<int64_t>();
  h.capacity.cpus = j.at("capacity").at("cpus").get<int>();
  h.capacity.memory_mib = j.at("capacity").at("memory_mib").get<int64_t>();
  h.reason = j.at("reason").get<std::string>();
  h.watchdog_ms = j.contains("watchdog_ms") ? j.at("watchdog_ms").get<int64_t>() : -1;
  return h;
}

VmRecord vmFrom(const Json& j) {
  VmRecord v;
  v.name = j.at("name").get<std::string>();
  v.tier = j.at("tier").get<std::string>();
  v.ordinal = j.at("ordinal").get<int>();
  v.host = j.at("host").get<std::string>();
  v.epoch = j.at("epoch").get<int64_t>();
  std::string state = j.at("state").get<std::string>();
  std::optional<VmState> s = vmStateFromString(state);
  if (!s) throw Json::other_error::create(501, "unknown vm state '" + state + "'", &j);
  v.state = *s;
  std::string health = j.at("health").get<std::string>();
  std::optional<Health> h = healthFromString(health);
  if (!h) throw Json::other_error::create(501, "unknown health '" + health + "'", &j);
  v.health = *h;
  v.restarts = j.at("restarts").get<int>();
  v.relocations = j.at("relocations").get<int>();
  v.reason = j.at("reason").get<std::string>();
  v.updated_ms = j.at("updated_ms").get<int64_t>();
  return v;
}

Json incidentJson(const IncidentRecord& i) {
  Json steps = Json::array();
  for (const IncidentStep& st : i.steps) steps.push_back(Json{{"step", st.step}, {"t_ms", st.t_ms}, {"detail", st.detail}});
  return Json{{"id", i.id},           {"subject", i.subject}, {"kind", i.kind}, {"opened_ms", i.opened_ms},
              {"closed_ms", i.closed_ms}, {"summary", i.summary}, {"steps", steps}};
}
IncidentRecord incidentFrom(const Json& j) {
  IncidentRecord i;
  i.id = j.at("id").get<int64_t>();
  i.subject = j.at("subject").get<std::string>();
  i.kind = j.at("kind").get<std::string>();
  i.opened_ms = j.at("opened_ms").get<int64_t>();
  i.closed_ms = j.at("closed_ms").get<int64_t>();
  i.summary = j.at("summary").get<std::string>();
  for (const Json& st : j.at("steps")) {
    i.steps.push_back(IncidentStep{st.at("step").get<std::string>(), st.at("t_ms").get<int64_t>(),
                                   st.at("detail").get<std::string>()});
  }
  return i;
}

Json actionJson(const ActionRecord& a) {
  return Json{{"id", a.id}, {"kind", a.kind}, {"subject", a.subject}, {"data_json", a.data_json},
              {"started_ms", a.started_ms}};
}
ActionRecord actionFrom(const Json& j) {
  return ActionRecord{j.at("id").get<int64_t>(), j.at("kind").get<std::string>(),
                      j.at("subject").get<std::string>(), j.at("data_json").get<std::string>(),
                      j.at("started_ms").get<int64_t>()};
}

Json tierJson(int64_t policy_version, int64_t ord, const Json& spec) {
  return Json{{"policy_version", policy_version}, {"ord", ord}, {"spec", spec}};
}

// ------------------------------------------------------------ the store ---

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

  Status transaction(const std::function<Status()>& body) override {
    if (txn_) return failedPrecondition("Store::transaction called inside another; nesting is not supported");
    txn_.emplace();
    Status status = body();
    Pending pending = std::move(*txn_);
    txn_.reset();
    if (!status.isOk()) return status;  // nothing was sent: nothing to undo
    return commit(pending);
  }

  Result<int64_t> insertPolicy(const PolicyRecord& record) override {
    int64_t version = 0;
    Status s = stage([&](Pending& p) -> Status {
      Result<int64_t> id = nextId(p, "policy");
      if (!id.isOk()) return id.status();
      PolicyRecord stored = record;
      stored.version = *id;
      Result<std::string> value = dumpValue(policyJson(stored));
      if (!value.isOk()) return value.status();
      p.writes[dir("/policies/") + padded(*id)] = *value;
      p.policy_version = *id;
      version = *id;
      return Status::ok();
    });
    if (!s.isOk()) return s.withContext("storing policy");
    return version;
  }

  Result<std::optional<PolicyRecord>> latestPolicy() override {
    const char* context = "loading latest policy";
    Result<Counter> last = readCounter(overlay(), "policy");
    if (!last.isOk()) return last.status().withContext(context);
    if (last->last == 0) return std::optional<PolicyRecord>();
    Result<std::optional<std::string>> value = get(overlay(), dir("/policies/") + padded(last->last));
    if (!value.isOk()) return value.status().withContext(context);
    if (!value->has_value()) {
      return internalError("policy version " + std::to_string(last->last) + " is missing from etcd")
          .withContext(context);
    }
    Result<PolicyRecord> p = decodeValue<PolicyRecord>(dir("/policies/") + padded(last->last), **value, policyFrom);
    if (!p.isOk()) return p.status().withContext(context);
    return std::optional<PolicyRecord>(std::move(*p));
  }

  Status replaceTiers(int64_t policy_version, const std::vector<TierSpec>& tiers) override {
    Status s = stage([&](Pending& p) -> Status {
      Result<std::optional<std::string>> policy = get(&p, dir("/policies/") + padded(policy_version));
      if (!policy.isOk()) return policy.status();
      if (!policy->has_value()) {
        return failedPrecondition("policy version " + std::to_string(policy_version) + " does not exist");
      }
      std::set<std::string> names;
      std::vector<std::pair<std::string, std::string>> puts;
      int64_t ord = 0;
      for (const TierSpec& tier : tiers) {
        if (!names.insert(tier.name).second) return failedPrecondition("tier " + inQuotes(tier.name) + " appears twice");
        Result<std::string> value = dumpValue(tierJson(policy_version, ord++, Json(tier)));
        if (!value.isOk()) return value.status().withContext("tier " + inQuotes(tier.name));
        puts.emplace_back(dir("/tiers/") + tier.name, *value);
      }
      // etcd refuses a txn that deletes a range and puts a key inside it
      // ("duplicate key given in txn request"): delete the old tiers one by
      // one, and only those not written again.
      auto old = list(&p, dir("/tiers/"), etcdPrefixEnd(dir("/tiers/")), 0);
      if (!old.isOk()) return old.status();
      for (const auto& kv : *old) p.writes[kv.first] = std::nullopt;
      for (auto& [key, value] : puts) p.writes[key] = std::move(value);
      return Status::ok();
    });
    return s.withContext("replacing tiers of policy version " + std::to_string(policy_version));
  }

  Status putHost(const HostRecord& host) override {
    return putRecord(dir("/hosts/") + host.name, Json(host)).withContext("storing host " + inQuotes(host.name));
  }
  Status deleteHost(const std::string& name) override {
    return deleteKey(dir("/hosts/") + name).withContext("deleting host " + inQuotes(name));
  }
  Result<std::vector<HostRecord>> hosts() override {
    return listRecords<HostRecord>(dir("/hosts/"), hostFrom, "loading hosts");
  }

  Status putVm(const VmRecord& vm) override {
    return putRecord(dir("/vms/") + vm.name, Json(vm)).withContext("storing vm " + inQuotes(vm.name));
  }
  Status deleteVm(const std::string& name) override {
    return deleteKey(dir("/vms/") + name).withContext("deleting vm " + inQuotes(name));
  }
  Result<std::vector<VmRecord>> vms() override { return listRecords<VmRecord>(dir("/vms/"), vmFrom, "loading vms"); }

  // P/backups/<vm>/<id>: the record as JSON (BackupRecord's codec).
  Status putBackup(const BackupRecord& b) override {
    return putRecord(dir("/backups/") + b.vm + "/" + b.id, Json(b))
        .withContext("storing backup " + inQuotes(b.id) + " of vm " + inQuotes(b.vm));
  }
  Status deleteBackup(const std::string& vm, const std::string& id) override {
    return deleteKey(dir("/backups/") + vm + "/" + id)
        .withContext("deleting backup " + inQuotes(id) + " of vm " + inQuotes(vm));
  }
  Result<std::vector<BackupRecord>> backups(const std::string& vm) override {
    const std::string prefix = dir("/backups/") + (vm.empty() ? "" : vm + "/");
    return listRecords<BackupRecord>(
        prefix, [](const Json& j) { return j.get<BackupRecord>(); }, "loading the backup catalogue");
  }

  Result<EventRecord> appendEvent(EventRecord event) override {
    Status s = stage([&](Pending& p) -> Status {
      Result<int64_t> id = nextId(p, "event");
      if (!id.isOk()) return id.status();
      event.id = *id;
      Result<std::string> value = dumpValue(Json(event));
      if (!value.isOk()) return value.status();
      p.writes[dir("/events/") + padded(*id)] = *value;
      ++p.new_events;
      return Status::ok();
    });
    if (!s.isOk()) return s.withContext("appending event " + inQuotes(event.kind));
    return event;
  }

  Result<std::vector<EventRecord>> eventsSince(int64_t after_id, int limit) override {
    const char* context = "loading events";
    if (limit <= 0) {
      return invalidArgument("limit must be positive, got " + std::to_string(limit)).withContext(context);
    }
    const std::string start = dir("/events/") + padded(std::max<int64_t>(after_id, -1) + 1);
    Result<std::vector<std::pair<std::string, std::string>>> kvs =
        list(overlay(), start, etcdPrefixEnd(dir("/events/")), limit);
    if (!kvs.isOk()) return kvs.status().withContext(context);
    return decodeAll<EventRecord>(*kvs, [](const Json& j) { return j.get<EventRecord>(); }, context);
  }

  Result<int64_t> eventCount() override {
    const std::string prefix = dir("/events/");
    Result<EtcdRangeResult> r = client_->range(prefix, etcdPrefixEnd(prefix), 0, /*count_only=*/true);
    if (!r.isOk()) return r.status().withContext("counting events");
    return r->count + (txn_ ? txn_->new_events : 0);
  }

  Result<int64_t> lastEventId() override {
    Result<Counter> last = readCounter(overlay(), "event");
    if (!last.isOk()) return last.status().withContext("reading the last event id");
    return last->last;
  }

  Result<int64_t> pruneEvents(Millis before_ms, int64_t keep_at_most, int max_rows) override {
    const char* context = "pruning the event log";
    if (Status st = checkPruneEventsArgs(keep_at_most, max_rows); !st.isOk()) return st.withContext(context);
    if (txn_) return failedPrecondition("pruneEvents inside a transaction").withContext(context);
    Result<int64_t> count = eventCount();
    if (!count.isOk()) return count.status().withContext(context);
    Result<std::vector<EventRecord>> oldest = eventsSince(0, max_rows);
    if (!oldest.isOk()) return oldest.status().withContext(context);
    const int64_t over = std::max<int64_t>(0, *count - keep_at_most);
    size_t n = 0;  // a prefix of the oldest: one range delete
    while (n < oldest->size() && (static_cast<int64_t>(n) < over || (*oldest)[n].t_ms < before_ms)) ++n;
    if (n == 0) return int64_t{0};
    const std::string from = dir("/events/") + padded((*oldest)[0].id);
    const std::string to = n < oldest->size() ? dir("/events/") + padded((*oldest)[n].id)
                                              : dir("/events/") + padded((*oldest)[n - 1].id + 1);
    Result<int64_t> sent = send({EtcdOp::del(from, to)}, {});
    if (!sent.isOk()) return sent.status().withContext(context);
    return static_cast<int64_t>(n);
  }

  // etcd keeps its own files (and their history until compaction): no
  // figure for one key range.
  Result<int64_t> eventLogBytes() override { return int64_t{-1}; }

  Result<int64_t> putIncident(const IncidentRecord& incident) override {
    int64_t id = incident.id;
    Status s = stage([&](Pending& p) -> Status {
      IncidentRecord stored = incident;
      if (stored.id == 0) {
        Result<int64_t> next = nextId(p, "incident");
        if (!next.isOk()) return next.status();
        stored.id = *next;
      }
      Result<std::string> value = dumpValue(incidentJson(stored));
      if (!value.isOk()) return value.status();
      p.writes[dir("/incidents/") + padded(stored.id)] = *value;
      id = stored.id;
      return Status::ok();
    });
    if (!s.isOk()) return s.withContext("storing incident of " + inQuotes(incident.subject));
    return id;
  }

  Result<std::vector<IncidentRecord>> incidents(int recent) override {
    // All of them, then the open ones and the newest `recent` closed ones.
    // TODO(issue 14): an index of open incidents when the history grows large.
    Result<std::vector<IncidentRecord>> all = listRecords<IncidentRecord>(dir("/incidents/"), incidentFrom, "loading incidents");
    if (!all.isOk()) return all;
    int64_t closed = std::count_if(all->begin(), all->end(), [](const IncidentRecord& i) { return i.closed_ms != 0; });
    int64_t skip = std::max<int64_t>(0, closed - std::max(recent, 0));
    std::vector<IncidentRecord> out;
    for (IncidentRecord& i : *all) {
      if (i.closed_ms != 0 && skip > 0) {
        --skip;
        continue;
      }
      out.push_back(std::move(i));
    }
    return out;
  }

  Result<int64_t> beginAction(const ActionRecord& action) override {
    int64_t id = 0;
    Status s = stage([&](Pending& p) -> Status {
      Result<int64_t> next = nextId(p, "action");
      if (!next.isOk()) return next.status();
      ActionRecord stored = action;
      stored.id = *next;
      Result<std::string> value = dumpValue(actionJson(stored));
      if (!value.isOk()) return value.status();
      p.writes[dir("/actions/") + padded(stored.id)] = *value;
      id = stored.id;
      return Status::ok();
    });
    if (!s.isOk()) return s.withContext("journaling " + action.kind + " of " + inQuotes(action.subject));
    return id;
  }

  Status endAction(int64_t id) override {
    return deleteKey(dir("/actions/") + padded(id)).withContext("ending action " + std::to_string(id));
  }

  Result<std::vector<ActionRecord>> openActions() override {
    return listRecords<ActionRecord>(dir("/actions/"), actionFrom, "loading the action journal");
  }

  Result<StoreSnapshot> exportState() override {
    const char* context = "exporting the etcd store";
    if (txn_) return failedPrecondition("exportState inside a transaction").withContext(context);
    StoreSnapshot snap;
    snap.schema_version = schema_version_;
    auto policies = listRecords<PolicyRecord>(dir("/policies/"), policyFrom, context);
    if (!policies.isOk()) return policies.status();
    snap.policies = std::move(*policies);
    auto tiers = list(nullptr, dir("/tiers/"), etcdPrefixEnd(dir("/tiers/")), 0);
    if (!tiers.isOk()) return tiers.status().withContext(context);
    for (const auto& entry : *tiers) {
      const std::string& key = entry.first;  // named: a lambda cannot capture a binding (clang)
      Result<StoredTier> t = decodeValue<StoredTier>(key, entry.second, [&](const Json& j) {
        return StoredTier{key.substr(dir("/tiers/").size()), j.at("policy_version").get<int64_t>(),
                          j.at("ord").get<int64_t>(), j.at("spec").dump()};
      });
      if (!t.isOk()) return t.status().withContext(context);
      snap.tiers.push_back(std::move(*t));
    }
    std::sort(snap.tiers.begin(), snap.tiers.end(), [](const StoredTier& a, const StoredTier& b) { return a.ord < b.ord; });
    auto h = hosts();
    if (!h.isOk()) return h.status();
    snap.hosts = std::move(*h);
    auto v = vms();
    if (!v.isOk()) return v.status();
    snap.vms = std::move(*v);
    auto e = eventsSince(0, std::numeric_limits<int>::max());
    if (!e.isOk()) return e.status();
    snap.events = std::move(*e);
    auto i = listRecords<IncidentRecord>(dir("/incidents/"), incidentFrom, context);
    if (!i.isOk()) return i.status();
    snap.incidents = std::move(*i);
    auto a = openActions();
    if (!a.isOk()) return a.status();
    snap.actions = std::move(*a);
    auto b = backups("");
    if (!b.isOk()) return b.status();
    snap.backups = std::move(*b);
    return snap;
  }

  Status importState(const StoreSnapshot& snap, bool replace) override;

  // P/published-sets/<host>: {"term", "digest", "set"} (Store::publishSets).
  // Not part of exportState(): a new leader publishes every set again.
  bool wantsPublishedSets() const override { return true; }

  Status publishSets(const std::map<std::string, PublishedSet>& sets) override {
    if (sets.empty()) return Status::ok();
    int64_t term = 0;
    if (options_.guard) {
      Result<EtcdWriteGuard> g = options_.guard();
      if (!g.isOk()) return failedPrecondition("not the leader: " + g.status().message() + "; nothing written");
      term = g->create_revision;
    }
    // As few txns as etcd's limits allow: the schema and guard compares
    // come on top of the ops; half the byte limit leaves room for encoding.
    const size_t max_ops = static_cast<size_t>(std::max(1, options_.max_txn_ops - 2));
    const int64_t max_bytes = std::max<int64_t>(options_.max_request_bytes / 2, 1);
    std::vector<EtcdOp> ops;
    int64_t bytes = 0;
    auto flush = [&]() -> Status {
      if (ops.empty()) return Status::ok();
      Result<int64_t> r = send(ops, {});
      ops.clear();
      bytes = 0;
      return r.status();
    };
    for (const auto& [host, set] : sets) {
      // The set's JSON is spliced in as it is (the leader built it once).
      std::string value = "{\"term\":" + std::to_string(term) + ",\"digest\":" + Json(set.digest).dump() +
                          ",\"set\":" + set.set_json + "}";
      const int64_t size = static_cast<int64_t>(value.size() + host.size()) + 64;
      if (ops.size() >= max_ops || (bytes + size > max_bytes && !ops.empty())) {
        TW_RETURN_IF_ERROR(flush().withContext("publishing assignment sets"));
      }
      ops.push_back(EtcdOp::put(dir("/published-sets/") + host, std::move(value)));
      bytes += size;
    }
    return flush().withContext("publishing assignment sets");
  }

  Result<std::optional<PublishedSet>> publishedSet(const std::string& host) override {
    const std::string key = dir("/published-sets/") + host;
    Result<EtcdRangeResult> r = client_->range(key, "");
    if (!r.isOk()) return r.status().withContext("reading the published assignment set of host " + inQuotes(host));
    if (r->kvs.empty()) return std::optional<PublishedSet>();
    Result<Json> j = parseJson(r->kvs[0].value);
    if (!j.isOk() || !j->is_object() || !j->contains("set") || !(*j)["set"].is_object()) {
      return internalError("the published assignment set of host " + inQuotes(host) + " in etcd is not valid JSON");
    }
    PublishedSet out;
    if (j->contains("term") && (*j)["term"].is_number_integer()) out.term = (*j)["term"].get<int64_t>();
    if (j->contains("digest") && (*j)["digest"].is_string()) out.digest = (*j)["digest"].get<std::string>();
    out.set_json = (*j)["set"].dump();
    return std::optional<PublishedSet>(std::move(out));
  }


 private:
  std::string dir(const char* sub) const { return options_.prefix + sub; }
  const Pending* overlay() const { return txn_ ? &*txn_ : nullptr; }

  // Runs `fn` on the open transaction's buffer (restored when fn fails), or
  // on a buffer of its own that is committed at once. A write outside a
  // transaction that loses a race for an id counter is retried once.
  Status stage(const std::function<Status(Pending&)>& fn) {
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

  Status putRecord(const std::string& key, const Json& j) {
    return stage([&](Pending& p) -> Status {
      Result<std::string> value = dumpValue(j);
      if (!value.isOk()) return value.status();
      p.writes[key] = *value;
      return Status::ok();
    });
  }

  Status deleteKey(const std::string& key) {
    return stage([&](Pending& p) -> Status {
      p.writes[key] = std::nullopt;
      return Status::ok();
    });
  }

  // The counter P/meta/last/<kind>: from the transaction, else from what our
  // last commit left, else from etcd.
  Result<Counter> readCounter(const Pending* p, const std::string& kind) {
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

  Result<int64_t> nextId(Pending& p, const std::string& kind) {
    Result<Counter> c = readCounter(&p, kind);
    if (!c.isOk()) return c.status();
    c->last += 1;
    c->dirty = true;
    p.counters[dir("/meta/last/") + kind] = *c;
    return c->last;
  }

  // One key, with the overlay applied.
  Result<std::optional<std::string>> get(const Pending* p, const std::string& key) {
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
  Result<std::vector<std::pair<std::string, std::string>>> list(const Pending* p, const std::string& start,
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

Status EtcdStore::importState(const StoreSnapshot& snap, bool replace) {
  const std::string context = "importing into the etcd store " + inQuotes(options_.prefix);
  if (txn_) return failedPrecondition("importState inside a transaction").withContext(context);
  if (snap.schema_version != schema_version_) {
    return invalidArgument("the snapshot has schema version " + std::to_string(snap.schema_version) +
                           ", this store " + std::to_string(schema_version_))
        .withContext(context);
  }
  if (!options_.guard) {
    Result<EtcdRangeResult> leader = client_->range(etcdLeaderKey(options_.prefix), "");
    if (!leader.isOk()) return leader.status().withContext(context);
    if (!leader->kvs.empty()) {
      return failedPrecondition("a controller leads this cluster (leader key " + inQuotes(etcdLeaderKey(options_.prefix)) +
                                " is held by " + inQuotes(leader->kvs[0].value) + "); stop every controller first")
          .withContext(context);
    }
  }
  int64_t held = 0;
  for (const char* sub : kDataDirs) {
    Result<EtcdRangeResult> r = client_->range(dir(sub), etcdPrefixEnd(dir(sub)), 0, true);
    if (!r.isOk()) return r.status().withContext(context);
    held += r->count;
  }
  if (held > 0 && !replace) {
    return failedPrecondition("it holds " + std::to_string(held) +
                              " keys; refusing to import over them (use --force to replace them)")
        .withContext(context);
  }

  // 1: the marker and the clearing, in one txn; then the records in batches
  // that fit etcd's limits; last the counters and the marker's removal. A
  // store left with the marker is refused by open() until an import finishes.
  const std::string marker = dir("/meta/importing");
  std::vector<EtcdOp> first{EtcdOp::put(marker, "migrate-store")};
  for (const char* sub : kDataDirs) first.push_back(EtcdOp::del(dir(sub), etcdPrefixEnd(dir(sub))));
  Result<int64_t> sent = send(first, {});
  if (!sent.isOk()) return sent.status().withContext(context);
  counter_cache_.clear();

  std::vector<std::pair<std::string, Json>> records;
  for (const PolicyRecord& p : snap.policies) records.emplace_back(dir("/policies/") + padded(p.version), policyJson(p));
  for (const StoredTier& t : snap.tiers) {
    Result<Json> spec = parseJson(t.spec_json);
    if (!spec.isOk()) return invalidArgument("tier " + inQuotes(t.name) + " has a bad spec").withContext(context);
    records.emplace_back(dir("/tiers/") + t.name, tierJson(t.policy_version, t.ord, *spec));
  }
  for (const HostRecord& h : snap.hosts) records.emplace_back(dir("/hosts/") + h.name, Json(h));
  for (const VmRecord& v : snap.vms) records.emplace_back(dir("/vms/") + v.name, Json(v));
  for (const EventRecord& e : snap.events) records.emplace_back(dir("/events/") + padded(e.id), Json(e));
  for (const IncidentRecord& i : snap.incidents) records.emplace_back(dir("/incidents/") + padded(i.id), incidentJson(i));
  for (const ActionRecord& a : snap.actions) records.emplace_back(dir("/actions/") + padded(a.id), actionJson(a));
  for (const BackupRecord& b : snap.backups) records.emplace_back(dir("/backups/") + b.vm + "/" + b.id, Json(b));

  std::vector<EtcdOp> batch;
  int64_t batch_bytes = 0;
  const int64_t max_ops = std::max(1, options_.max_txn_ops - 2);
  const int64_t max_bytes = options_.max_request_bytes / 2;
  auto flush = [&]() -> Status {
    if (batch.empty()) return Status::ok();
    Result<int64_t> r = send(batch, {});
    batch.clear();
    batch_bytes = 0;
    return r.status();
  };
  for (const auto& [key, j] : records) {
    Result<std::string> value = dumpValue(j);
    if (!value.isOk()) return value.status().withContext(context + ", key " + inQuotes(key));
    int64_t bytes = static_cast<int64_t>(key.size() + value->size()) * 4 / 3 + 64;
    if (static_cast<int64_t>(batch.size()) >= max_ops || (batch_bytes + bytes > max_bytes && !batch.empty())) {
      TW_RETURN_IF_ERROR(flush().withContext(context));
    }
    batch.push_back(EtcdOp::put(key, *value));
    batch_bytes += bytes;
  }
  TW_RETURN_IF_ERROR(flush().withContext(context));

  auto maxId = [](const auto& v) {
    int64_t m = 0;
    for (const auto& r : v) m = std::max<int64_t>(m, r.id);
    return m;
  };
  int64_t last_policy = 0;
  for (const PolicyRecord& p : snap.policies) last_policy = std::max(last_policy, p.version);
  std::vector<EtcdOp> last{EtcdOp::put(dir("/meta/last/policy"), std::to_string(last_policy)),
                           EtcdOp::put(dir("/meta/last/event"), std::to_string(maxId(snap.events))),
                           EtcdOp::put(dir("/meta/last/incident"), std::to_string(maxId(snap.incidents))),
                           EtcdOp::put(dir("/meta/last/action"), std::to_string(maxId(snap.actions))),
                           EtcdOp::del(marker)};
  sent = send(last, {});
  if (!sent.isOk()) return sent.status().withContext(context);
  log::info("imported {} policies, {} tiers, {} hosts, {} vms, {} events, {} incidents, {} actions into etcd {}",
            snap.policies.size(), snap.tiers.size(), snap.hosts.size(), snap.vms.size(), snap.events.size(),
            snap.incidents.size(), snap.actions.size(), inQuotes(options_.prefix));
  return Status::ok();
}

Status refuseNewer(const std::string& prefix, int version) {
  return failedPrecondition("etcd store " + inQuotes(prefix) + " has schema version " + std::to_string(version) +
                            ", newer than this build's " + std::to_string(kEtcdMigrationCount) +
                            "; upgrade tierwarden or use another cluster name");
}

Result<int> readSchema(EtcdClient& client, const std::string& key) {
  Result<EtcdRangeResult> r = client.range(key, "");
  if (!r.isOk()) return r.status();
  if (r->kvs.empty()) return 0;
  Result<int64_t> v = parseInt(key, r->kvs[0].value);
  if (!v.isOk()) return v.status();
  return static_cast<int>(std::min<int64_t>(*v, std::numeric_limits<int>::max()));
}

}  // namespace

int etcdMigrationCount() { return kEtcdMigrationCount; }

Result<std::string> etcdClusterPrefix(const std::string& cluster) {
  if (cluster.empty() || cluster.size() > 63 ||
      cluster.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos) {
    return invalidArgument("cluster name " + inQuotes(cluster) + " must be 1-63 of a-z, 0-9 and '-'");
  }
  return "/tierwarden/" + cluster;
}

std::string etcdLeaderKey(const std::string& prefix) { return prefix + "/leader"; }

Result<std::unique_ptr<Store>> openEtcdStore(std::unique_ptr<EtcdClient> client, EtcdStoreOptions options) {
  const std::string context = "opening etcd store " + inQuotes(options.prefix);
  if (client == nullptr) return invalidArgument("no etcd client").withContext(context);
  if (options.prefix.size() < 2 || options.prefix.front() != '/' || options.prefix.back() == '/') {
    return invalidArgument("the prefix must start with '/' and not end with one").withContext(context);
  }
  if (options.max_txn_ops < 8) return invalidArgument("max_txn_ops must be at least 8").withContext(context);
  if (kEtcdMigrationCount != Store::latestSchemaVersion()) {
    return internalError("the etcd store knows " + std::to_string(kEtcdMigrationCount) +
                         " schema versions, SQLite " + std::to_string(Store::latestSchemaVersion()) +
                         ": append the step to both (store_etcd.cc, store_sqlite.cc)");
  }
  Result<EtcdRangeResult> importing = client->range(options.prefix + "/meta/importing", "");
  if (!importing.isOk()) return importing.status().withContext(context);
  if (!importing->kvs.empty()) {
    return failedPrecondition("a migrate-store into it did not finish; run it again with --force").withContext(context);
  }
  const std::string schema_key = options.prefix + "/meta/schema";
  for (int guard = 0; guard <= kEtcdMigrationCount; ++guard) {
    Result<int> version = readSchema(*client, schema_key);
    if (!version.isOk()) return version.status().withContext(context);
    if (*version > kEtcdMigrationCount) return refuseNewer(options.prefix, *version);
    if (*version == kEtcdMigrationCount) {
      return std::unique_ptr<Store>(std::make_unique<EtcdStore>(std::move(client), std::move(options), *version));
    }
    const EtcdMigration& step = kEtcdMigrations[*version];
    std::vector<EtcdOp> ops;
    if (step.rewrite != nullptr) {
      Result<std::vector<EtcdOp>> rewrite = step.rewrite(*client, options.prefix);
      if (!rewrite.isOk()) return rewrite.status().withContext(context + ": migrating to " + step.description);
      ops = std::move(*rewrite);
    }
    ops.push_back(EtcdOp::put(schema_key, std::to_string(*version + 1)));
    EtcdCompare unchanged = *version == 0 ? EtcdCompare::createRevisionIs(schema_key, 0)
                                          : EtcdCompare::valueIs(schema_key, std::to_string(*version));
    Result<EtcdTxnResult> r = client->txn({unchanged}, ops, {});
    if (!r.isOk()) return r.status().withContext(context + ": migrating to " + step.description);
    if (r->succeeded) {
      log::info("etcd store '{}' migrated to schema version {} ({})", options.prefix, *version + 1, step.description);
    }  // else another replica migrated meanwhile: read again
  }
  return internalError("the schema kept changing while it was migrated").withContext(context);
}

}  // namespace tw
