#include "controller/store_setup.h"

#include <filesystem>
#include <utility>

#include "controller/state_guard.h"

namespace tw {

Result<StoreLocation> parseStoreLocation(const std::string& text) {
  StoreLocation where;
  where.text = text;
  if (text.rfind("sqlite:", 0) == 0) {
    where.kind = StoreLocation::Kind::kSqlite;
    where.state_dir = text.substr(7);
    if (where.state_dir.empty()) return invalidArgument("store '" + text + "' names no directory (sqlite:DIR)");
    return where;
  }
  if (text.rfind("etcd://", 0) == 0) {
    Result<std::vector<std::string>> endpoints = parseEtcdStoreUrl(text);
    if (!endpoints.isOk()) return endpoints.status();
    where.kind = StoreLocation::Kind::kEtcd;
    where.endpoints = std::move(*endpoints);
    return where;
  }
  return invalidArgument("store '" + text + "' is neither sqlite:DIR nor etcd://HOST[:PORT][,HOST[:PORT]...]");
}

HttpEtcdOptions etcdHttpOptions(const std::vector<std::string>& endpoints, const EtcdSettings& settings) {
  HttpEtcdOptions http;
  http.endpoints = endpoints;
  http.ca_file = settings.ca_file;
  http.cert_file = settings.cert_file;
  http.key_file = settings.key_file;
  return http;
}

Result<std::unique_ptr<Store>> openEtcdStoreAt(const std::vector<std::string>& endpoints,
                                               const EtcdSettings& settings,
                                               std::function<Result<EtcdWriteGuard>()> guard,
                                               std::function<void(const std::string&)> on_deposed) {
  Result<std::string> prefix = etcdClusterPrefix(settings.cluster);
  if (!prefix.isOk()) return prefix.status();
  Result<std::unique_ptr<EtcdClient>> client = makeHttpEtcdClient(etcdHttpOptions(endpoints, settings));
  if (!client.isOk()) return client.status();
  EtcdStoreOptions options;
  options.prefix = *prefix;
  options.max_txn_ops = settings.max_txn_ops;
  options.max_request_bytes = settings.max_request_bytes;
  options.guard = std::move(guard);
  options.on_deposed = std::move(on_deposed);
  return openEtcdStore(std::move(*client), std::move(options));
}

namespace {

// An open store plus, for SQLite, the state dir's lock held while it is used.
struct OpenedStore {
  std::unique_ptr<StateDirLock> lock;
  std::unique_ptr<Store> store;
};

Result<OpenedStore> openForMigration(const StoreLocation& where, const EtcdSettings& etcd, bool source) {
  OpenedStore out;
  if (where.kind == StoreLocation::Kind::kEtcd) {
    Result<std::unique_ptr<Store>> store = openEtcdStoreAt(where.endpoints, etcd, nullptr);
    if (!store.isOk()) return store.status();
    out.store = std::move(*store);
    return out;
  }
  const StatePaths paths(where.state_dir);
  std::error_code ec;
  if (source && !std::filesystem::exists(paths.db, ec)) {
    return invalidArgument("there is no database at '" + paths.db + "' (sqlite:DIR names a state dir)");
  }
  if (!source) {
    std::filesystem::create_directories(paths.dir, ec);
    if (ec) return unavailable("cannot create state dir '" + paths.dir + "': " + ec.message());
  }
  Result<std::unique_ptr<StateDirLock>> lock = StateDirLock::acquire(paths);
  if (!lock.isOk()) return lock.status();
  out.lock = std::move(*lock);
  Result<std::unique_ptr<Store>> store = Store::open(paths.db);
  if (!store.isOk()) return store.status();
  out.store = std::move(*store);
  return out;
}

}  // namespace

Result<std::string> migrateStore(const StoreLocation& from, const StoreLocation& to, const EtcdSettings& etcd,
                                 bool force) {
  if (from.kind == to.kind && from.state_dir == to.state_dir && from.endpoints == to.endpoints) {
    return invalidArgument("--from and --to are the same store");
  }
  Result<OpenedStore> source = openForMigration(from, etcd, true);
  if (!source.isOk()) return source.status().withContext("opening the source " + from.text);
  Result<OpenedStore> target = openForMigration(to, etcd, false);
  if (!target.isOk()) return target.status().withContext("opening the target " + to.text);
  Result<StoreSnapshot> snap = source->store->exportState();
  if (!snap.isOk()) return snap.status();
  TW_RETURN_IF_ERROR(target->store->importState(*snap, force));
  // Read it back: the copy must hold what the source holds.
  Result<StoreSnapshot> copy = target->store->exportState();
  if (!copy.isOk()) return copy.status().withContext("reading the copy back");
  if (copy->policies.size() != snap->policies.size() || copy->vms.size() != snap->vms.size() ||
      copy->hosts.size() != snap->hosts.size() || copy->events.size() != snap->events.size() ||
      copy->incidents.size() != snap->incidents.size() || copy->actions.size() != snap->actions.size() ||
      copy->tiers.size() != snap->tiers.size()) {
    return internalError("the copy read back differs from the source");
  }
  const int64_t policy = snap->policies.empty() ? 0 : snap->policies.back().version;
  return "copied " + std::to_string(snap->policies.size()) + " policy versions (newest " + std::to_string(policy) +
         "), " + std::to_string(snap->tiers.size()) + " tiers, " + std::to_string(snap->hosts.size()) + " hosts, " +
         std::to_string(snap->vms.size()) + " vms, " + std::to_string(snap->events.size()) + " events, " +
         std::to_string(snap->incidents.size()) + " incidents, " + std::to_string(snap->actions.size()) +
         " open actions from " + from.text + " to " + to.text +
         (to.kind == StoreLocation::Kind::kEtcd ? " (cluster '" + etcd.cluster + "')" : std::string());
}

}  // namespace tw
