// ReplicaDirectory: the controller replicas of one etcd cluster, as each one
// registers itself (docs/ha.md).
//
// Each replica keeps one key, P/replicas/<identity>, on an etcd lease of its
// own (not the leader lease: a follower registers too), with its advertised
// URLs and its wall-clock time when it last wrote it:
//     {"identity": ..., "public_url": ..., "agent_url": ..., "last_seen_ms": ...}
// runOnce() refreshes it (keepalive, put) every refresh_every_ms, and reads
// every replica's key and the leader key (P/leader: who leads, its create
// revision is the term). A replica that dies drops out when its lease's TTL
// runs out; until then its last_seen tells how long it has been silent.
//
// Threads: runOnce() on one thread of its own (it blocks on etcd); view()
// from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/etcd_client.h"
#include "tw/json.h"
#include "tw/status.h"

namespace tw {

// Where clients reach one replica: its public API (twctl, the dashboard) and
// its agents' listener.
struct ReplicaUrls {
  std::string public_url;
  std::string agent_url;
};

struct ReplicaInfo {
  std::string identity;
  ReplicaUrls urls;
  Millis last_seen_ms = 0;  // wall clock (ms since the epoch) of its last refresh
};

// P/replicas/ (the directory's key prefix).
std::string etcdReplicasPrefix(const std::string& prefix);
// The value of a replica's key, and back. Errors: kInvalidArgument.
std::string encodeReplicaInfo(const ReplicaInfo& info);
Result<ReplicaInfo> decodeReplicaInfo(const std::string& value);

struct ReplicaDirectoryOptions {
  std::string prefix;    // the cluster prefix (etcdClusterPrefix)
  std::string identity;  // this replica's (the leader key's value when it leads)
  ReplicaUrls urls;      // this replica's advertised URLs
  Millis ttl_ms = 5000;  // of the registration's etcd lease (whole seconds)
  Millis refresh_every_ms = 1000;
};

class ReplicaDirectory {
 public:
  struct View {
    bool read = false;              // at least one read succeeded
    std::vector<ReplicaInfo> replicas;  // by identity
    std::string leader;             // the leader key's identity ("" = none)
    int64_t term = 0;               // the leader key's create revision (0 = none)
    int64_t leader_changes = 0;     // new terms seen since this replica started
  };

  // REQUIRES: client and wall outlive the directory; options.identity holds
  // no '/'. `wall`: the system clock (last_seen is shown across machines).
  ReplicaDirectory(EtcdClient& client, const Clock& wall, ReplicaDirectoryOptions options);

  // Refreshes this replica's key and reads the directory. Blocks for the
  // step's etcd requests. Returns when the next step is due (on `wall`).
  Millis runOnce();
  View view() const;
  // This replica's URLs, once its listeners are bound (before the first
  // runOnce(), or they are registered empty).
  void setUrls(ReplicaUrls urls);
  // Removes this replica's key (revokes its lease); best effort.
  void withdraw();

 private:
  void registerSelf(Millis now);
  void read();

  EtcdClient& client_;
  const Clock& wall_;
  const ReplicaDirectoryOptions options_;
  int64_t lease_id_ = 0;  // runOnce()'s thread only

  mutable std::mutex mu_;  // guards view_ and urls_
  View view_;
  ReplicaUrls urls_;
};

// The real-time edge: a thread that calls runOnce() when due, and withdraws
// the registration when stopped.
class ReplicaDirectoryThread {
 public:
  explicit ReplicaDirectoryThread(ReplicaDirectory& directory) : directory_(directory) {}
  ~ReplicaDirectoryThread() { stop(); }
  void start();
  void stop();

 private:
  ReplicaDirectory& directory_;
  std::thread thread_;
  std::mutex mu_;  // guards stopping_
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace tw
