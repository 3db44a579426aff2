#include "controller/backup_book.h"

#include <algorithm>

namespace tw {

std::string coarseAge(Millis ms) {
  const int64_t s = std::max<Millis>(ms, 0) / 1000;
  if (s >= 86400) return std::to_string(s / 86400) + "d " + std::to_string(s % 86400 / 3600) + "h";
  if (s >= 3600) return std::to_string(s / 3600) + "h " + std::to_string(s % 3600 / 60) + "m";
  if (s >= 60) return std::to_string(s / 60) + "m";
  return std::to_string(s) + "s";
}

void BackupBook::load(const std::vector<BackupRecord>& all) {
  last_good_ms_.clear();
  for (const BackupRecord& r : all) onDone(r);
  requests_.clear();
}

void BackupBook::onDone(const BackupRecord& r) {
  Millis& last = last_good_ms_[r.vm];
  last = std::max(last, r.taken_ms);
  onFailed(r);
}

void BackupBook::onFailed(const BackupRecord& r) {
  auto it = requests_.find(r.vm);
  if (it != requests_.end() && r.request >= it->second) requests_.erase(it);
}

int64_t BackupBook::request(const std::string& vm) {
  requests_[vm] = ++next_request_;
  return next_request_;
}

int64_t BackupBook::pendingRequest(const std::string& vm) const {
  auto it = requests_.find(vm);
  return it == requests_.end() ? 0 : it->second;
}

int64_t BackupBook::startRestore(const std::string& vm, int64_t epoch, const BackupRecord& from) {
  restores_[vm] = PendingRestore{++next_restore_, epoch, from};
  return next_restore_;
}

const PendingRestore* BackupBook::restore(const std::string& vm) const {
  auto it = restores_.find(vm);
  return it == restores_.end() ? nullptr : &it->second;
}

void BackupBook::finishRestore(const std::string& vm) { restores_.erase(vm); }

std::vector<std::string> BackupBook::restoringVms() const {
  std::vector<std::string> out;
  out.reserve(restores_.size());
  for (const auto& [vm, r] : restores_) out.push_back(vm);
  return out;
}

Millis BackupBook::lastGoodMs(const std::string& vm) const {
  auto it = last_good_ms_.find(vm);
  return it == last_good_ms_.end() ? 0 : it->second;
}

std::string BackupBook::staleness(const std::string& vm, const BackupSpec& spec, Millis now,
                                  Millis since_ms) const {
  if (!spec.enabled()) return "";
  const Millis limit = 2 * spec.every_ms;
  const Millis last = lastGoodMs(vm);
  if (last == 0) {
    if (now - since_ms <= limit) return "";
    return "vm '" + vm + "' has no good backup yet (every " + coarseAge(spec.every_ms) + ")";
  }
  if (now - last <= limit) return "";
  return "the last good backup of vm '" + vm + "' is " + coarseAge(now - last) + " old (every " +
         coarseAge(spec.every_ms) + ")";
}

}  // namespace tw
