// The etcd store's schema: the migrations (P/meta/schema, numbered as
// SQLite's), the cluster prefix and the leader key, and openEtcdStore, which
// migrates a store and opens it.
#include "store_etcd_store.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tw/log.h"

namespace tw::etcd_store {

namespace {

// ------------------------------------------------------------ migrations ---
//
// The schema, oldest step first; step i takes P/meta/schema from i to i + 1
// in one txn that compares the old value, so two replicas starting together
// never both run a step. The numbering is SQLite's (kMigrations in
// store_sqlite_schema.cc): version N holds the same records in both stores.
//
// TO CHANGE THE SCHEMA, append a step here AND in store_sqlite_schema.cc. A step's
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

}  // namespace tw::etcd_store

namespace tw {

using etcd_store::EtcdMigration;
using etcd_store::EtcdStore;
using etcd_store::inQuotes;
using etcd_store::kEtcdMigrationCount;
using etcd_store::kEtcdMigrations;
using etcd_store::readSchema;
using etcd_store::refuseNewer;

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
                         ": append the step to both (store_etcd_schema.cc, store_sqlite_schema.cc)");
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
