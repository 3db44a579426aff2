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

void ScheduledHealthProber::runDue() {
  struct Due {
    std::string vm;
    HealthCheckSpec check;
    uint64_t generation = 0;
    Millis started_ms = 0;
    bool counts = false;  // after the grace period
  };
  std::vector<Due> due;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const Millis now = clock_.nowMs();
    for (auto& [vm, t] : targets_) {
      if (t.in_flight || t.next_due_ms > now) continue;
      t.in_flight = true;
      t.next_due_ms = now + std::max<Millis>(t.check.interval_ms, 1);
      due.push_back(
          Due{vm, t.check, t.generation, now, now >= t.running_since_ms + t.check.grace_ms});
    }
  }
  bool changed = false;
  for (const Due& d : due) {
    std::optional<int> host_port = ports_.hostPort(d.vm, d.check.port);
    Status result = host_port ? probe_(d.vm, d.check, *host_port)
                              : unavailable(fmt::format("no host port for guest port {} of vm '{}'",
                                                        d.check.port, d.vm));
    std::lock_guard<std::mutex> lock(mu_);
    auto it = targets_.find(d.vm);
    if (it == targets_.end() || it->second.generation != d.generation) continue;  // stale
    Target& t = it->second;
    t.in_flight = false;
    const Health before = t.health;
    if (result.isOk()) {
      t.consecutive = 0;
      t.failure.clear();
      t.health = Health::kHealthy;
    } else if (!d.counts) {
      log::debug("vm '{}': health check failed in its grace period: {}", d.vm, result.message());
    } else {
      ++t.consecutive;
      t.failure = result.message();
      log::debug("vm '{}': health check failed ({} of {}): {}", d.vm, t.consecutive,
                 t.check.failures, t.failure);
      if (t.consecutive >= std::max(t.check.failures, 1)) t.health = Health::kUnhealthy;
    }
    if (t.health != before) {
      changed = true;
      log::info("vm '{}' is {}{}", d.vm, toString(t.health),
                t.health == Health::kUnhealthy
                    ? fmt::format(": {} failed checks, the last: {}", t.consecutive, t.failure)
                    : std::string());
    }
  }
  if (changed && on_verdict_) on_verdict_();
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
}

void NetworkHealthProber::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void NetworkHealthProber::loop() {
  for (;;) {
    core_.runDue();
    const Millis next = core_.nextDueMs();
    std::unique_lock<std::mutex> lock(mu_);
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

}  // namespace tw
