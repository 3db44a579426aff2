#include "controller/replica_directory.h"

#include <algorithm>
#include <utility>

#include "tw/log.h"
#include "tw/store_etcd.h"

namespace tw {

std::string etcdReplicasPrefix(const std::string& prefix) { return prefix + "/replicas/"; }

std::string encodeReplicaInfo(const ReplicaInfo& info) {
  return Json{{"identity", info.identity},
              {"public_url", info.urls.public_url},
              {"agent_url", info.urls.agent_url},
              {"last_seen_ms", info.last_seen_ms}}
      .dump();
}

Result<ReplicaInfo> decodeReplicaInfo(const std::string& value) {
  auto j = parseJson(value);
  if (!j.isOk()) return j.status();
  if (!j->is_object() || !(*j)["identity"].is_string() || !(*j)["public_url"].is_string() ||
      !(*j)["agent_url"].is_string() || !(*j)["last_seen_ms"].is_number_integer()) {
    return invalidArgument("a replica record needs identity, public_url, agent_url and last_seen_ms");
  }
  ReplicaInfo out;
  out.identity = (*j)["identity"].get<std::string>();
  out.urls.public_url = (*j)["public_url"].get<std::string>();
  out.urls.agent_url = (*j)["agent_url"].get<std::string>();
  out.last_seen_ms = (*j)["last_seen_ms"].get<Millis>();
  return out;
}

ReplicaDirectory::ReplicaDirectory(EtcdClient& client, const Clock& wall, ReplicaDirectoryOptions options)
    : client_(client), wall_(wall), options_(std::move(options)), urls_(options_.urls) {}

void ReplicaDirectory::setUrls(ReplicaUrls urls) {
  std::lock_guard<std::mutex> lock(mu_);
  urls_ = std::move(urls);
}

Millis ReplicaDirectory::runOnce() {
  const Millis now = wall_.nowMs();
  registerSelf(now);
  read();
  return now + std::max<Millis>(options_.refresh_every_ms, 1);
}

void ReplicaDirectory::registerSelf(Millis now) {
  if (lease_id_ != 0) {
    Result<int64_t> ttl = client_.leaseKeepAlive(lease_id_);
    if (!ttl.isOk()) {
      log::debug("replica registration: {}", ttl.status().toString());
      return;  // etcd unreachable: try again at the next step
    }
    if (*ttl <= 0) lease_id_ = 0;  // expired while we were cut off: a new one
  }
  if (lease_id_ == 0) {
    Result<EtcdLease> lease = client_.leaseGrant(std::max<Millis>((options_.ttl_ms + 999) / 1000, 1));
    if (!lease.isOk()) {
      log::debug("replica registration: {}", lease.status().toString());
      return;
    }
    lease_id_ = lease->id;
  }
  ReplicaInfo self{options_.identity, {}, now};
  {
    std::lock_guard<std::mutex> lock(mu_);
    self.urls = urls_;
  }
  Result<int64_t> put =
      client_.put(etcdReplicasPrefix(options_.prefix) + options_.identity, encodeReplicaInfo(self), lease_id_);
  if (!put.isOk()) log::debug("replica registration: {}", put.status().toString());
}

void ReplicaDirectory::read() {
  const std::string from = etcdReplicasPrefix(options_.prefix);
  Result<EtcdRangeResult> replicas = client_.range(from, etcdPrefixEnd(from));
  Result<EtcdRangeResult> leader = client_.range(etcdLeaderKey(options_.prefix), "");
  if (!replicas.isOk() || !leader.isOk()) return;  // the last view stays
  std::vector<ReplicaInfo> list;
  for (const auto& kv : replicas->kvs) {
    auto info = decodeReplicaInfo(kv.value);
    if (info.isOk()) list.push_back(std::move(*info));
  }
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t term = leader->kvs.empty() ? 0 : leader->kvs[0].create_revision;
  if (term != 0 && view_.term != 0 && term != view_.term) ++view_.leader_changes;
  if (term != 0) view_.term = term;
  view_.leader = leader->kvs.empty() ? std::string() : leader->kvs[0].value;
  view_.replicas = std::move(list);
  view_.read = true;
}

ReplicaDirectory::View ReplicaDirectory::view() const {
  std::lock_guard<std::mutex> lock(mu_);
  return view_;
}

void ReplicaDirectory::withdraw() {
  if (lease_id_ != 0) (void)client_.leaseRevoke(lease_id_);
  lease_id_ = 0;
}

void ReplicaDirectoryThread::start() {
  thread_ = std::thread([this] {
    for (;;) {
      const Millis due = directory_.runOnce();
      std::unique_lock<std::mutex> lock(mu_);
      // runOnce() answers on the wall clock; the wait is its distance.
      const Millis wait = std::max<Millis>(due - SystemClock::instance().nowMs(), 10);
      if (cv_.wait_for(lock, std::chrono::milliseconds(wait), [this] { return stopping_; })) break;
    }
    directory_.withdraw();
  });
}

void ReplicaDirectoryThread::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace tw
