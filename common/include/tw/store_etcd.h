// EtcdStore: tw::Store on etcd 3, for controller replicas with one leader.
//
// Key layout (values are JSON, as tw/json.h encodes the records), under a
// cluster prefix P = "/tierwarden/<cluster>":
//
//   P/meta/schema            schema version, decimal ("2"); same numbering as SQLite's
//   P/meta/importing         present while migrate-store copies state in; open() refuses it
//   P/meta/last/<kind>       last id given out: policy | event | incident | action
//   P/policies/<version>     PolicyRecord           (ids zero-padded to 20 digits,
//   P/tiers/<name>           {"policy_version", "ord", "spec"}   so keys sort by id)
//   P/hosts/<name>           HostRecord ("watchdog_ms" from v4; absent = -1)
//   P/vms/<name>             VmRecord
//   P/events/<id>            EventRecord
//   P/incidents/<id>         IncidentRecord
//   P/actions/<id>           ActionRecord
//   P/leader                 the leader key (controller/leader_lease.h), on the leader's lease
//
// Writes: every write, and the whole of a transaction(body), is ONE etcd txn.
// Inside transaction(), writes are buffered (reads see them) and sent at the
// end; a store method that fails leaves the buffer as it was. The txn's
// compares hold that
//   - the leader key still has the create revision of our term (when a guard
//     is set: a deposed leader's txn fails and writes nothing, not even once);
//   - P/meta/schema is still the version this store opened (an older build
//     never writes into a migrated store);
//   - every id counter read in the transaction is unchanged (ids stay
//     monotonic even between unguarded writers).
// A failed compare is kFailedPrecondition ("not the leader: ...") for the
// guard and the schema, kUnavailable (retry) for a counter.
//
// Size: etcd bounds one txn to --max-txn-ops operations (128 by default) and
// one request to --max-request-bytes (1.5 MiB). A transaction that needs more
// is refused before it is sent, with kFailedPrecondition saying which limit
// and the value to start etcd with (scripts start etcd with --max-txn-ops
// 4096 and --max-request-bytes 8 MiB; EtcdStoreOptions must match etcd's).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "tw/etcd_client.h"
#include "tw/store.h"

namespace tw {

// What a leader's writes are guarded by: the leader key and the create
// revision it had when this replica won it (its term).
struct EtcdWriteGuard {
  std::string key;
  int64_t create_revision = 0;
};

struct EtcdStoreOptions {
  std::string prefix = "/tierwarden/default";  // see etcdClusterPrefix()
  int max_txn_ops = kEtcdDefaultMaxTxnOps;
  int64_t max_request_bytes = kEtcdDefaultMaxRequestBytes;
  // Asked before every commit: the guard to put in the txn, or an error when
  // this replica does not lead now (then nothing is sent). Empty = writes
  // unguarded: migrate-store and tests only.
  std::function<Result<EtcdWriteGuard>()> guard;
  // Called, on the writing thread, when etcd refused a write because the
  // leader key no longer has the guard's create revision (it is gone or
  // belongs to a newer term): this replica's term is over, whatever its own
  // clock says. The write has failed already (kFailedPrecondition). Null =
  // nobody is told.
  std::function<void(const std::string& why)> on_deposed;
};

// "/tierwarden/<cluster>". Errors: kInvalidArgument unless the cluster name
// is 1-63 of [a-z0-9-].
Result<std::string> etcdClusterPrefix(const std::string& cluster);
// P/leader.
std::string etcdLeaderKey(const std::string& prefix);

// Opens the store under options.prefix, migrating it to the newest schema
// (each step one txn that compares the old version). Errors:
// kFailedPrecondition for a newer schema or an unfinished import,
// kUnavailable when etcd cannot be reached.
Result<std::unique_ptr<Store>> openEtcdStore(std::unique_ptr<EtcdClient> client,
                                             EtcdStoreOptions options);

// For tests: the migration steps this build knows (must equal
// Store::latestSchemaVersion()).
int etcdMigrationCount();

}  // namespace tw
