#include "agent/backup_worker.h"

#include <utility>

namespace tw {

void BackupWorker::post(BackupJob job) {
  std::lock_guard<std::mutex> lock(mu_);
  todo_.push_back(std::move(job));
  cv_.notify_all();
}

void BackupWorker::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = true;
  cv_.notify_all();
}

void BackupWorker::run(std::shared_ptr<BackupWorker> self) {
  for (;;) {
    BackupJob job;
    {
      std::unique_lock<std::mutex> lock(self->mu_);
      self->cv_.wait(lock, [&] { return self->stop_ || !self->todo_.empty(); });
      if (self->stop_) return;
      job = std::move(self->todo_.front());
      self->todo_.pop_front();
    }
    self->done_(self->take(std::move(job)));
  }
}

BackupOutcome BackupWorker::take(BackupJob job) {
  if (!hv_) {
    Result<std::unique_ptr<Hypervisor>> hv = connectLibvirt(uri_);
    if (!hv.isOk()) {
      BackupOutcome out;
      out.status = hv.status().withContext("connecting for the backup");
      job.record.error = out.status.message();
      out.job = std::move(job);
      return out;
    }
    hv_ = std::move(*hv);
  }
  BackupOutcome out = BackupRunner::run(*hv_, SystemClock::instance(), std::move(job));
  // A lost connection is opened again for the next backup.
  if (out.status.code() == Code::kUnavailable) hv_.reset();
  return out;
}

}  // namespace tw
