#include "controller/lease_renewals.h"

#include <utility>
#include <vector>

#include "tw/json.h"

namespace tw {

namespace {

// A host name as the policy allows it: a path segment, never one that could
// reach another key.
Status checkHost(const std::string& host) {
  if (host.empty() || host.size() > 253 || host.find('/') != std::string::npos) {
    return invalidArgument("bad host name '" + host + "' for a lease renewal record");
  }
  return Status::ok();
}

Status notLeader(const EtcdWriteGuard& guard, const EtcdTxnResult& r, size_t leader_range) {
  const bool have = r.ranges.size() > leader_range && !r.ranges[leader_range].kvs.empty();
  return failedPrecondition("not the leader: the leader key '" + guard.key + "' " +
                            (have ? "belongs to term " +
                                        std::to_string(r.ranges[leader_range].kvs[0].create_revision)
                                  : std::string("is gone")) +
                            ", ours was term " + std::to_string(guard.create_revision) + "; nothing written");
}

bool guardHeld(const EtcdWriteGuard& guard, const EtcdTxnResult& r, size_t leader_range) {
  return r.ranges.size() > leader_range && !r.ranges[leader_range].kvs.empty() &&
         r.ranges[leader_range].kvs[0].create_revision == guard.create_revision;
}

}  // namespace

LeaseRenewals::LeaseRenewals(EtcdClient& client, std::string prefix) : client_(client), prefix_(std::move(prefix)) {}

std::string LeaseRenewals::renewalKey(const std::string& host) const { return prefix_ + "/renewals/" + host; }
std::string LeaseRenewals::intentKey(const std::string& host) const { return prefix_ + "/fence-intent/" + host; }

Result<bool> LeaseRenewals::record(const std::string& host, const std::string& agent_id, Millis t_ms,
                                   const std::string& by) {
  TW_RETURN_IF_ERROR(checkHost(host));
  const std::string value = Json{{"agent_id", agent_id}, {"t_ms", t_ms}, {"by", by}}.dump();
  Result<EtcdTxnResult> r = client_.txn({EtcdCompare::createRevisionIs(intentKey(host), 0)},
                                        {EtcdOp::put(renewalKey(host), value)}, {});
  if (!r.isOk()) return r.status().withContext("recording the lease renewal of host '" + host + "'");
  return r->succeeded;
}

Result<std::map<std::string, RenewalRecord>> LeaseRenewals::read() {
  const std::string dir = prefix_ + "/renewals/";
  Result<EtcdRangeResult> r = client_.range(dir, etcdPrefixEnd(dir));
  if (!r.isOk()) return r.status().withContext("reading the lease renewal records");
  std::map<std::string, RenewalRecord> out;
  for (const EtcdKv& kv : r->kvs) {
    RenewalRecord rec;
    rec.mod_revision = kv.mod_revision;
    Result<Json> j = parseJson(kv.value);
    if (j.isOk() && j->is_object()) {
      if (j->contains("agent_id") && (*j)["agent_id"].is_string()) rec.agent_id = (*j)["agent_id"].get<std::string>();
      if (j->contains("t_ms") && (*j)["t_ms"].is_number_integer()) rec.t_ms = (*j)["t_ms"].get<Millis>();
      if (j->contains("by") && (*j)["by"].is_string()) rec.by = (*j)["by"].get<std::string>();
    }
    out[kv.key.substr(dir.size())] = std::move(rec);
  }
  return out;
}

Result<bool> LeaseRenewals::intendFence(const EtcdWriteGuard& guard, const std::string& host,
                                        int64_t seen_mod_revision, Millis t_ms) {
  TW_RETURN_IF_ERROR(checkHost(host));
  const std::string value = Json{{"term", guard.create_revision}, {"t_ms", t_ms}}.dump();
  Result<EtcdTxnResult> r = client_.txn(
      {EtcdCompare::createRevisionIs(guard.key, guard.create_revision),
       EtcdCompare::modRevisionIs(renewalKey(host), seen_mod_revision)},
      {EtcdOp::put(intentKey(host), value)}, {EtcdOp::range(guard.key)});
  if (!r.isOk()) return r.status().withContext("writing the fence intent of host '" + host + "'");
  if (r->succeeded) return true;
  if (!guardHeld(guard, *r, 0)) return notLeader(guard, *r, 0);
  return false;  // a renewal came in since the leader read it
}

Status LeaseRenewals::clearIntent(const EtcdWriteGuard& guard, const std::string& host) {
  TW_RETURN_IF_ERROR(checkHost(host));
  Result<EtcdTxnResult> r = client_.txn({EtcdCompare::createRevisionIs(guard.key, guard.create_revision)},
                                        {EtcdOp::del(intentKey(host))}, {EtcdOp::range(guard.key)});
  if (!r.isOk()) return r.status().withContext("clearing the fence intent of host '" + host + "'");
  if (!r->succeeded) return notLeader(guard, *r, 0);
  return Status::ok();
}

Result<bool> LeaseRenewals::intentExists(const std::string& host) {
  TW_RETURN_IF_ERROR(checkHost(host));
  Result<EtcdRangeResult> r = client_.range(intentKey(host), "", 0, /*count_only=*/true);
  if (!r.isOk()) return r.status().withContext("reading the fence intent of host '" + host + "'");
  return r->count > 0;
}

}  // namespace tw
