#include "controller/leader_renewals.h"

#include <utility>

namespace tw {

LeaderRenewals::LeaderRenewals(LeaseRenewals& records, std::function<Result<EtcdWriteGuard>()> guard,
                               Millis read_every_ms)
    : records_(records), guard_(std::move(guard)), read_every_ms_(read_every_ms) {}

Result<std::vector<LeaderRenewals::Renewal>> LeaderRenewals::poll(Millis now, bool force) {
  std::vector<Renewal> out;
  if (!force && last_read_ms_ >= 0 && now - last_read_ms_ < read_every_ms_) return out;
  Result<std::map<std::string, RenewalRecord>> records = records_.read();
  if (!records.isOk()) return records.status();
  last_read_ms_ = now;
  ++reads_;
  for (const auto& [host, rec] : *records) {
    int64_t& seen = seen_[host];
    if (seen == rec.mod_revision) continue;
    seen = rec.mod_revision;
    out.push_back(Renewal{host, rec.by});
  }
  return out;
}

Status LeaderRenewals::baseline() {
  Result<std::map<std::string, RenewalRecord>> records = records_.read();
  if (!records.isOk()) return records.status();
  ++reads_;
  for (const auto& [host, rec] : *records) seen_[host] = rec.mod_revision;
  return Status::ok();
}

Result<bool> LeaderRenewals::intendFence(const std::string& host, Millis now) {
  Result<EtcdWriteGuard> guard = guard_();
  if (!guard.isOk()) return failedPrecondition("not the leader: " + guard.status().message());
  auto seen = seen_.find(host);
  Result<bool> r = records_.intendFence(*guard, host, seen == seen_.end() ? 0 : seen->second, now);
  if (r.isOk() && *r) {
    intents_.insert(host);
    cleared_.erase(host);
  }
  return r;
}

Status LeaderRenewals::clearIntent(const std::string& host, bool unknown) {
  const bool ours = intents_.count(host) > 0;
  if (!ours && !(unknown && cleared_.count(host) == 0)) return Status::ok();
  Result<EtcdWriteGuard> guard = guard_();
  if (!guard.isOk()) return failedPrecondition("not the leader: " + guard.status().message());
  TW_RETURN_IF_ERROR(records_.clearIntent(*guard, host));
  intents_.erase(host);
  cleared_.insert(host);
  return Status::ok();
}

}  // namespace tw
