#include "agent/backup_runner.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <system_error>

#include "tw/hex64.h"
#include "tw/log.h"

namespace tw {

namespace {

constexpr const char* kSuffix = ".qcow2";
constexpr const char* kPartSuffix = ".part";

std::string humanBytes(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

std::string BackupRunner::stamp(Millis ms) {
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::optional<Millis> BackupRunner::parseStamp(const std::string& id) {
  if (id.size() < 16 || id[8] != 'T' || id[15] != 'Z') return std::nullopt;
  std::tm tm{};
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  if (std::sscanf(id.c_str(), "%4d%2d%2dT%2d%2d%2dZ", &y, &mo, &d, &h, &mi, &s) != 6)
    return std::nullopt;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  const std::time_t t = timegm(&tm);
  if (t < 0) return std::nullopt;
  return static_cast<Millis>(t) * 1000;
}

std::vector<BackupJob> BackupRunner::due(
    const std::vector<Assignment>& running,
    const std::function<Millis(const std::string& dir)>& newest_taken_ms) {
  std::vector<BackupJob> out;
  const Millis now = clock_.nowMs();
  for (const Assignment& a : running) {
    if (!a.backup.enabled() || in_flight_.count(a.vm) != 0) continue;
    const std::string dir = a.backup.to + "/" + a.vm;
    VmSchedule& s = schedule_[a.vm];
    if (s.to != a.backup.to) {  // first sight, or the policy moved the DR place
      s.to = a.backup.to;
      s.last_ms = newest_taken_ms ? newest_taken_ms(dir) : 0;
      s.retry_at_ms = 0;
    }
    const bool asked = a.backup_request > s.request_done;
    const bool scheduled = now >= s.last_ms + a.backup.every_ms && now >= s.retry_at_ms;
    if (!asked && !scheduled) continue;
    BackupJob job;
    job.dir = dir;
    job.keep = a.backup.keep;
    job.epoch = a.epoch;
    BackupRecord& r = job.record;
    const uint64_t salt = fnv1a(host_ + "|" + a.vm + "|" + std::to_string(now) + "|" +
                                  std::to_string(++seq_));
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(salt & 0xffffffffu));
    r.id = stamp(now) + "-" + hex;
    r.vm = a.vm;
    r.tier = a.tier;
    r.host = host_;
    r.path = dir + "/" + r.id + kSuffix;
    r.taken_ms = now;
    r.request = asked ? a.backup_request : 0;
    in_flight_[a.vm] = job;
    out.push_back(std::move(job));
  }
  return out;
}

AgentEvent BackupRunner::finished(const BackupOutcome& o) {
  const BackupRecord& r = o.job.record;
  in_flight_.erase(r.vm);
  VmSchedule& s = schedule_[r.vm];
  if (r.request > s.request_done) s.request_done = r.request;
  AgentEvent e;
  e.host = host_;
  e.vm = r.vm;
  e.epoch = o.job.epoch;
  e.backup = r;
  if (o.status.isOk()) {
    s.last_ms = std::max(s.last_ms, r.taken_ms);
    s.retry_at_ms = 0;
    e.kind = "backup.done";
    e.pruned = o.pruned;
    e.message = "backup '" + r.id + "' of vm '" + r.vm + "' done: " + humanBytes(r.bytes) +
                " in " + std::to_string(r.duration_ms) + " ms (" + r.method + ") to " + r.path;
    if (!o.pruned.empty())
      e.message += "; pruned " + std::to_string(o.pruned.size()) + " beyond keep " +
                   std::to_string(o.job.keep);
  } else {
    s.retry_at_ms = clock_.nowMs() + kRetryMs;
    e.kind = "backup.failed";
    e.level = "error";
    e.backup.error = o.status.message();
    e.message = "backup of vm '" + r.vm + "' failed: " + o.status.message();
  }
  return e;
}

Status BackupRunner::checkTarget(const std::string& to) {
  struct stat st{};
  if (to.empty() || to[0] != '/')
    return failedPrecondition("backup.to '" + to + "' is not an absolute path");
  if (::stat(to.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return failedPrecondition("backup.to " + to +
                              " is no directory on this host (mount the DR place on every host)");
  if (::access(to.c_str(), W_OK | X_OK) != 0)
    return failedPrecondition("backup.to " + to + " is not writable on this host");
  return Status::ok();
}

std::vector<std::string> BackupRunner::listBackups(const std::string& dir) {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(kSuffix)) continue;
    const std::string id = name.substr(0, name.size() - std::string(kSuffix).size());
    if (parseStamp(id)) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());  // the UTC stamp first: oldest first
  return ids;
}

Millis BackupRunner::newestBackupMs(const std::string& dir) {
  const std::vector<std::string> ids = listBackups(dir);
  if (ids.empty()) return 0;
  return parseStamp(ids.back()).value_or(0);
}

BackupOutcome BackupRunner::run(Hypervisor& hv, const Clock& clock, BackupJob job) {
  BackupOutcome out;
  const Millis start = clock.nowMs();
  BackupRecord& r = job.record;
  std::error_code ec;
  const std::filesystem::path to = std::filesystem::path(job.dir).parent_path();
  out.status = checkTarget(to.string());
  if (out.status.isOk()) {
    std::filesystem::create_directories(job.dir, ec);
    if (ec) out.status = unavailable("making " + job.dir + ": " + ec.message());
  }
  if (out.status.isOk()) {
    const std::string part = r.path + kPartSuffix;
    std::filesystem::remove(part, ec);
    Result<DiskBackup> b = hv.backupDisk(r.vm, part);
    if (!b.isOk()) {
      out.status = b.status();
      std::filesystem::remove(part, ec);
    } else {
      std::filesystem::rename(part, r.path, ec);
      if (ec) {
        out.status = unavailable("renaming " + part + ": " + ec.message());
        std::filesystem::remove(part, ec);
      } else {
        r.bytes = b->bytes;
        r.method = b->method;
      }
    }
  }
  r.duration_ms = clock.nowMs() - start;
  if (out.status.isOk()) {
    std::vector<std::string> ids = listBackups(job.dir);
    const size_t keep = static_cast<size_t>(std::max(job.keep, 1));
    for (size_t i = 0; i + keep < ids.size(); ++i) {
      std::filesystem::remove(job.dir + "/" + ids[i] + kSuffix, ec);
      if (ec) {
        log::warn("pruning backup '{}' of vm '{}': {}", ids[i], r.vm, ec.message());
        continue;
      }
      out.pruned.push_back(ids[i]);
    }
  }
  if (!out.status.isOk()) r.error = out.status.message();
  out.job = std::move(job);
  return out;
}

}  // namespace tw
