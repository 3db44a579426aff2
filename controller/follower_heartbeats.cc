#include "controller/follower_heartbeats.h"

#include <utility>

#include "tw/json.h"
#include "tw/log.h"

namespace tw {

FollowerHeartbeats::FollowerHeartbeats(LeaseRenewals& renewals, Store& store, const Clock& wall,
                                       std::string identity)
    : renewals_(renewals), store_(store), wall_(wall), identity_(std::move(identity)) {}

Result<AssignmentSet> FollowerHeartbeats::handle(const Heartbeat& hb) {
  // The set first: without one there is nothing safe to answer, and then no
  // renewal is recorded either.
  Result<std::optional<Store::PublishedSet>> published = store_.publishedSet(hb.host);
  if (!published.isOk()) return published.status();
  if (!published->has_value()) {
    return unavailable("controller replica '" + identity_ + "' follows and the leader published no assignment set for host '" +
                       hb.host + "' yet; not renewed");
  }
  Result<Json> j = parseJson((*published)->set_json);
  if (!j.isOk()) return internalError("the published set of host '" + hb.host + "' does not parse: " + j.status().message());
  Result<AssignmentSet> set = decode<AssignmentSet>(*j);
  if (!set.isOk()) return internalError("the published set of host '" + hb.host + "' is not a set: " + set.status().message());
  if (set->host != hb.host) return internalError("the published set under host '" + hb.host + "' is host '" + set->host + "''s");

  Result<bool> recorded = renewals_.record(hb.host, hb.agent_id, wall_.nowMs(), identity_);
  if (!recorded.isOk()) return recorded.status();
  if (!*recorded) {
    ++refused_;
    return failedPrecondition("the leader is fencing host '" + hb.host + "' (a fence intent exists): lease not renewed by replica '" +
                              identity_ + "'");
  }
  ++renewed_;
  set->renewed_by = identity_;
  return std::move(*set);
}

}  // namespace tw
