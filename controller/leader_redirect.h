// What a follower replica answers instead of serving a call itself
// (docs/ha.md): mutating calls go to the leader with 307 Temporary Redirect
// (same method, same body, same path and query; the client follows it), or
// 503 with Retry-After while no leader is known. Reads are served here.
//
// 307 rather than proxying: the client talks to the leader itself, with its
// own token and TLS checks end to end, and learns which replica leads (the
// agents and twctl remember it); a follower holds no connection on anyone's
// behalf and cannot become a second path by which a call reaches the leader
// twice.
#pragma once

#include <optional>
#include <string>

#include "controller/replica_directory.h"
#include "tw/json.h"

namespace tw {

enum class ApiListener { kPublic, kAgents, kGuests };

struct FollowerAnswer {
  int status = 307;
  std::string location;  // 307: the leader's URL, the same path and query
  int retry_after_s = 0;  // 503
  Json body;
};

// Null: serve the request here (a read). `target`: the request's path and
// query as received. On the public listener every method but GET, HEAD and
// OPTIONS goes to the leader (POST /api/v1/auth/check changes nothing and is
// answered here); on the agents' listener every agent call (heartbeats,
// events, assignment polls: a follower holds no assignments) does.
// Tier endpoints are built from heartbeats, which only the leader takes: a
// follower's would be empty, and a balancer would drop every backend. So on
// the public listener they go to the leader too, and on the agents' and
// guests' listeners (balancer VMs, which cannot follow to the leader's TLS
// listener) they are 503: a failed fetch keeps the balancer's last list.
std::optional<FollowerAnswer> followerAnswer(ApiListener listener, const std::string& method,
                                             const std::string& target,
                                             const std::optional<ReplicaInfo>& leader);

}  // namespace tw
