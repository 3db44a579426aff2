// EtcdStore's published assignment sets: P/published-sets/<host>, written by
// the leader in as few txns as etcd's limits allow, read by any replica.
#include "store_etcd_store.h"

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tw::etcd_store {

Status EtcdStore::publishSets(const std::map<std::string, PublishedSet>& sets) {
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

Result<std::optional<Store::PublishedSet>> EtcdStore::publishedSet(const std::string& host) {
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

}  // namespace tw::etcd_store
