#include "agent/health_prober.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "agent/net_probe.h"
#include "tw/log.h"

namespace tw {

// --------------------------------------------------------- ScheduledHealthProber ---

ScheduledHealthProber::ScheduledHealthProber(const Clock& clock, const PortMap& ports,
                                             ProbeFn probe)
    : clock_(clock), ports_(ports), probe_(std::move(probe)) {}

Health ScheduledHealthProber::health(const std::string& vm, const HealthCheckSpec& check,
                                     Millis running_since_ms) {
  bool added = false;
  Health health = Health::kUnknown;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = targets_.find(vm);
    if (it == targets_.end() || it->second.running_since_ms != running_since_ms ||
        it->second.check != check) {
      Target t;
      t.check = check;
      t.running_since_ms = running_since_ms;
      t.generation = next_generation_++;
      t.next_due_ms = clock_.nowMs();
      targets_[vm] = std::move(t);
      added = true;
    } else {
      health = it->second.health;
    }
  }
  if (added && on_new_target_) on_new_target_();
  return health;
}

std::string ScheduledHealthProber::lastFailure(const std::string& vm) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = targets_.find(vm);
  return it == targets_.end() ? std::string() : it->second.failure;
}

void ScheduledHealthProber::forget(const std::string& vm) {
  std::lock_guard<std::mutex> lock(mu_);
  targets_.erase(vm);
}

Millis ScheduledHealthProber::nextDueMs() const {
  std::lock_guard<std::mutex> lock(mu_);
  Millis next = kNever;
  for (const auto& [vm, t] : targets_) {
    if (!t.in_flight) next = std::min(next, t.next_due_ms);
  }
  return next;
}

std::vector<ScheduledHealthProber::ProbeJob> ScheduledHealthProber::takeDue() {
  std::vector<ProbeJob> due;
  std::lock_guard<std::mutex> lock(mu_);
  const Millis now = clock_.nowMs();
  for (auto& [vm, t] : targets_) {
    if (t.in_flight || t.next_due_ms > now) continue;
    const bool in_grace = now < t.running_since_ms + t.check.grace_ms;
    // Booting: until its first pass, a VM in its grace is probed every
    // kStartupIntervalMs, so that it counts as healthy as soon as it answers,
    // not up to an interval later. Its failures do not count anyway.
    const Millis interval = in_grace && t.health == Health::kUnknown
                                ? std::min(t.check.interval_ms, kStartupIntervalMs)
                                : t.check.interval_ms;
    t.in_flight = true;
    t.next_due_ms = now + std::max<Millis>(interval, 1);
    due.push_back(ProbeJob{vm, t.check, t.generation, !in_grace});
  }
  return due;
}

Status ScheduledHealthProber::probe(const ProbeJob& job) const {
  std::optional<int> host_port = ports_.hostPort(job.vm, job.check.port);
  return host_port ? probe_(job.vm, job.check, *host_port)
                   : unavailable(fmt::format("no host port for guest port {} of vm '{}'",
                                             job.check.port, job.vm));
}

void ScheduledHealthProber::complete(const ProbeJob& job, const Status& result) {
  bool changed = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = targets_.find(job.vm);
    if (it == targets_.end() || it->second.generation != job.generation) return;  // stale
    Target& t = it->second;
    t.in_flight = false;
    const Health before = t.health;
    if (result.isOk()) {
      t.consecutive = 0;
      t.failure.clear();
      t.health = Health::kHealthy;
    } else if (!job.counts) {
      log::debug("vm '{}': health check failed in its grace period: {}", job.vm,
                 result.message());
    } else {
      ++t.consecutive;
      t.failure = result.message();
      log::debug("vm '{}': health check failed ({} of {}): {}", job.vm, t.consecutive,
                 t.check.failures, t.failure);
      if (t.consecutive >= std::max(t.check.failures, 1)) t.health = Health::kUnhealthy;
    }
    if (t.health != before) {
      changed = true;
      log::info("vm '{}' is {}{}", job.vm, toString(t.health),
                t.health == Health::kUnhealthy
                    ? fmt::format(": {} failed checks, the last: {}", t.consecutive, t.failure)
                    : std::string());
    }
  }
  if (changed && on_verdict_) on_verdict_();
}

void ScheduledHealthProber::runDue() {
  for (const ProbeJob& job : takeDue()) complete(job, probe(job));
}

// ---------------------------------------------------------- NetworkHealthProber ---

NetworkHealthProber::NetworkHealthProber(const PortMap& ports, std::string host)
    : host_(std::move(host)),
      core_(SystemClock::instance(), ports,
            [this](const std::string&, const HealthCheckSpec& check, int host_port) {
              return probeService(host_, host_port, check);
            }) {
  core_.setOnNewTarget([this] {
    std::lock_guard<std::mutex> lock(mu_);
    replan_ = true;
    cv_.notify_all();
  });
}

NetworkHealthProber::~NetworkHealthProber() { stop(); }

void NetworkHealthProber::setOnVerdictChange(std::function<void()> fn) {
  core_.setOnVerdictChange(std::move(fn));
}

void NetworkHealthProber::start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }
  thread_ = std::thread([this] { loop(); });
  for (int i = 0; i < kWorkers; ++i) workers_.emplace_back([this] { work(); });
}

void NetworkHealthProber::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
    work_cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  for (std::thread& w : workers_) w.join();
  workers_.clear();
  std::lock_guard<std::mutex> lock(mu_);
  queue_.clear();
}

void NetworkHealthProber::loop() {
  for (;;) {
    std::vector<ScheduledHealthProber::ProbeJob> due = core_.takeDue();
    const Millis next = core_.nextDueMs();
    std::unique_lock<std::mutex> lock(mu_);
    if (!due.empty()) {
      for (auto& job : due) queue_.push_back(std::move(job));
      work_cv_.notify_all();
    }
    auto wake = [this] { return stop_ || replan_; };
    if (next == ScheduledHealthProber::kNever) {
      cv_.wait(lock, wake);
    } else {
      // SystemClock time is system_clock time since the epoch.
      cv_.wait_until(lock, std::chrono::system_clock::time_point(std::chrono::milliseconds(next)),
                     wake);
    }
    if (stop_) return;
    replan_ = false;
  }
}

void NetworkHealthProber::work() {
  for (;;) {
    ScheduledHealthProber::ProbeJob job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    core_.complete(job, core_.probe(job));
    // The VM's next probe is due again (it was in flight): plan anew.
    std::lock_guard<std::mutex> lock(mu_);
    replan_ = true;
    cv_.notify_all();
  }
}

}  // namespace tw
