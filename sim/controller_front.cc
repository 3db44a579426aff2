#include "sim/controller_front.h"

#include "tw/log.h"

namespace tw::sim {

void ControllerFront::setController(Controller* controller) {
  controller_ = controller;
  stalled_until_ = 0;
  queue_.clear();
  published_.clear();
}

void ControllerFront::published(const std::string& host) {
  if (controller_ != nullptr) published_[host] = controller_->assignmentsFor(host);
}

void ControllerFront::stall(Millis until) {
  if (controller_ == nullptr) return;
  if (until > stalled_until_) stalled_until_ = until;
}

size_t ControllerFront::endStall() {
  stalled_until_ = 0;
  size_t n = 0;
  // Work queued while working through the queue (none today) runs too.
  while (!queue_.empty() && controller_ != nullptr) {
    std::function<void(Controller&)> work = std::move(queue_.front());
    queue_.pop_front();
    work(*controller_);
    ++n;
  }
  return n;
}

bool ControllerFront::run(std::function<void(Controller&)> work) {
  if (controller_ == nullptr) return false;
  if (stalled()) {
    queue_.push_back(std::move(work));
    return false;
  }
  work(*controller_);
  return true;
}

Result<AssignmentSet> ControllerFront::heartbeat(const Heartbeat& hb) {
  if (controller_ == nullptr) return unavailable("network unreachable");
  if (!stalled()) return controller_->handleHeartbeat(hb);
  if (!controller_->policy().findHost(hb.host)) {
    return notFound("host '" + hb.host + "' is not declared in the applied policy");
  }
  queue_.push_back([hb](Controller& c) { (void)c.handleHeartbeat(hb); });
  auto it = published_.find(hb.host);
  if (it == published_.end()) {
    return unavailable("the controller did not answer in time (its loop is busy)");
  }
  return it->second;
}

Status ControllerFront::agentEvent(const AgentEvent& event) {
  if (controller_ == nullptr) return unavailable("network unreachable");
  if (!stalled()) return controller_->handleAgentEvent(event);
  if (!controller_->policy().findHost(event.host)) {
    return notFound("host '" + event.host + "' is not declared in the applied policy");
  }
  queue_.push_back([event](Controller& c) {
    Status s = c.handleAgentEvent(event);
    if (!s.isOk()) log::warn("agent event from host '{}' dropped: {}", event.host, s.toString());
  });
  return Status::ok();
}

}  // namespace tw::sim
