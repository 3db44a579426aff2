#include "controller/leader_redirect.h"

namespace tw {

std::optional<FollowerAnswer> followerAnswer(ApiListener listener, const std::string& method,
                                             const std::string& target,
                                             const std::optional<ReplicaInfo>& leader) {
  const std::string path = target.substr(0, target.find('?'));
  const std::string kEnds = "/endpoints";
  const bool endpoints = path.rfind("/api/v1/tiers/", 0) == 0 && path.size() > kEnds.size() &&
                         path.compare(path.size() - kEnds.size(), kEnds.size(), kEnds) == 0;
  bool to_leader = false;
  if (listener == ApiListener::kPublic) {
    to_leader = endpoints ||
                (method != "GET" && method != "HEAD" && method != "OPTIONS" && path != "/api/v1/auth/check");
  } else if (endpoints) {
    FollowerAnswer out;
    out.status = 503;
    out.retry_after_s = 1;
    out.body = Json{{"error", "this controller replica follows: tier endpoints come from heartbeats, which only "
                              "the leader takes; ask the leader"},
                    {"leader", leader ? Json{{"identity", leader->identity}} : Json()}};
    return out;
  } else {
    to_leader = listener == ApiListener::kAgents && path.rfind("/api/v1/agents/", 0) == 0;
  }
  if (!to_leader) return std::nullopt;
  FollowerAnswer out;
  const std::string& base =
      !leader ? std::string() : listener == ApiListener::kPublic ? leader->urls.public_url : leader->urls.agent_url;
  if (base.empty()) {
    out.status = 503;
    out.retry_after_s = 1;
    out.body = Json{{"error", "this controller replica follows and no leader is known now (an election is "
                              "under way): try again shortly, or another replica"},
                    {"leader", nullptr}};
    return out;
  }
  out.status = 307;
  out.location = base + target;
  out.body = Json{{"error", "this controller replica follows: send " + method + " " + path + " to the leader"},
                  {"leader", Json{{"identity", leader->identity}, {"url", base}}},
                  {"location", out.location}};
  return out;
}

}  // namespace tw
