// Where the controller keeps its state, as the flags say: SQLite in
// --state-dir (the default: one controller) or etcd (--store etcd://...:
// several replicas, one leader); and `tierwarden-controller migrate-store`,
// which copies a site's state from one to the other.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tw/etcd_client.h"
#include "tw/status.h"
#include "tw/store.h"
#include "tw/store_etcd.h"

namespace tw {

struct StoreLocation {
  enum class Kind { kSqlite, kEtcd };
  Kind kind = Kind::kSqlite;
  std::string state_dir;               // kSqlite: the state dir (its tierwarden.db)
  std::vector<std::string> endpoints;  // kEtcd: client URLs of the members
  std::string text;                    // as given, for messages
};

// "sqlite:DIR" or "etcd://HOST[:PORT][,HOST[:PORT]...]".
// Errors: kInvalidArgument naming the text and the two forms.
Result<StoreLocation> parseStoreLocation(const std::string& text);

struct EtcdSettings {
  std::string cluster = "default";  // keys under /tierwarden/<cluster>
  int max_txn_ops = kEtcdDefaultMaxTxnOps;  // must match etcd's --max-txn-ops
  int64_t max_request_bytes = kEtcdDefaultMaxRequestBytes;  // etcd's --max-request-bytes
  // TLS to etcd (--etcd-cacert/--etcd-cert/--etcd-key, etcdctl's names):
  // with a CA, the members are spoken to over HTTPS (HttpEtcdOptions).
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

// The HTTP options of a client of `endpoints` with `settings`' TLS files.
HttpEtcdOptions etcdHttpOptions(const std::vector<std::string>& endpoints, const EtcdSettings& settings);

// Opens the etcd store of settings.cluster at `endpoints`; `guard` as in
// EtcdStoreOptions (empty: unguarded).
Result<std::unique_ptr<Store>> openEtcdStoreAt(const std::vector<std::string>& endpoints,
                                               const EtcdSettings& settings,
                                               std::function<Result<EtcdWriteGuard>()> guard,
                                               std::function<void(const std::string&)> on_deposed = nullptr);

// Copies every record, ids kept, from `from` to `to` (either kind to either
// kind). A SQLite side is locked like a running controller locks it (so
// migrate-store refuses while one runs on it); an etcd target is refused
// while a controller leads its cluster. A target that holds anything is
// refused unless `force` (then replaced). Returns a one-line summary.
Result<std::string> migrateStore(const StoreLocation& from, const StoreLocation& to,
                                 const EtcdSettings& etcd, bool force);

}  // namespace tw
