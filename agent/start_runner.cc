// StartRunner: starts under way with a deadline (agent/start_runner.h).
#include "agent/start_runner.h"

#include <algorithm>
#include <utility>

#include "tw/log.h"  // fmt

namespace tw {

namespace {

// "60 s", "1500 ms": how the given-up start's reason quotes its deadline.
std::string durationText(Millis ms) {
  return ms % 1000 == 0 ? fmt::format("{} s", ms / 1000) : fmt::format("{} ms", ms);
}

}  // namespace

void StartRunner::begin(std::vector<Start> starts, Millis now) {
  if (starts.empty()) return;
  std::vector<std::string> vms;
  vms.reserve(starts.size());
  for (const Start& s : starts) vms.push_back(s.vm);
  std::shared_ptr<Hypervisor::StartCalls> calls = hv_.beginStarts(vms);
  for (size_t i = 0; i < starts.size(); ++i) {
    running_.push_back(Running{std::move(starts[i]), calls, i, now + timeout_ms_});
  }
}

std::vector<StartRunner::Outcome> StartRunner::collect(Millis now) {
  std::vector<Outcome> returned;
  std::vector<Outcome> given_up;
  std::vector<Running> still;
  for (Running& r : running_) {
    std::optional<Status> st = r.calls->result(r.index);
    if (st) {
      returned.push_back(Outcome{std::move(r.start), std::move(*st), false});
    } else if (now >= r.deadline_ms) {
      r.calls->cancel(r.index);
      given_up.push_back(Outcome{
          std::move(r.start),
          unavailable("the start did not return within " + durationText(timeout_ms_)), true});
    } else {
      still.push_back(std::move(r));
    }
  }
  running_ = std::move(still);
  returned.insert(returned.end(), std::make_move_iterator(given_up.begin()),
                  std::make_move_iterator(given_up.end()));
  return returned;
}

std::vector<StartRunner::Start> StartRunner::abandonAll() {
  std::vector<Start> out;
  out.reserve(running_.size());
  for (Running& r : running_) {
    r.calls->cancel(r.index);
    out.push_back(std::move(r.start));
  }
  running_.clear();
  return out;
}

bool StartRunner::running(const std::string& vm) const {
  return std::any_of(running_.begin(), running_.end(),
                     [&](const Running& r) { return r.start.vm == vm; });
}

std::vector<StartRunner::Start> StartRunner::underWay() const {
  std::vector<Start> out;
  out.reserve(running_.size());
  for (const Running& r : running_) out.push_back(r.start);
  return out;
}

std::optional<Millis> StartRunner::nextDeadlineMs() const {
  std::optional<Millis> next;
  for (const Running& r : running_) {
    if (!next || r.deadline_ms < *next) next = r.deadline_ms;
  }
  return next;
}

}  // namespace tw
