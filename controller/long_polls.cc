#include "controller/long_polls.h"

#include <vector>

namespace tw {

LongPolls::LongPolls(ControllerService& service, Answer answer)
    : service_(service), answer_(std::move(answer)) {}

LongPolls::~LongPolls() { stop(); }

void LongPolls::start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_ || stopping_) return;
    started_ = true;
    thread_ = std::thread([this] { run(); });
  }
  service_.setAssignmentNotifier([this](const std::string& host) { changed(host); });
}

void LongPolls::stop() {
  bool started = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    polls_.clear();
    started = started_;
    cv_.notify_all();
  }
  // A start() racing with this stop() set the notifier after it: cleared
  // again by the destructor's stop().
  if (started) service_.setAssignmentNotifier(nullptr);
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void LongPolls::add(uint64_t ticket, const std::string& host, int64_t after, Millis wait_ms,
                    const std::string& peers_digest) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    polls_[ticket] =
        Poll{host, after, std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms), peers_digest};
    cv_.notify_all();
  }
  // A set published between the handler's check and now was not seen by
  // this poll: look again (outside mu_: the service calls changed() under
  // its own lock).
  if (service_.assignmentsAfter(host, after)) changed(host);
}

size_t LongPolls::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return polls_.size();
}

void LongPolls::changed(const std::string& host) {
  std::lock_guard<std::mutex> lock(mu_);
  if (host.empty()) all_changed_ = true;
  else changed_.insert(host);
  cv_.notify_all();
}

void LongPolls::run() {
  std::unique_lock<std::mutex> lock(mu_);
  std::vector<std::pair<uint64_t, Poll>> due;
  std::vector<std::pair<uint64_t, Poll>> maybe;  // their host was published
  while (!stopping_) {
    auto now = std::chrono::steady_clock::now();
    auto next = now + std::chrono::seconds(1);
    due.clear();
    maybe.clear();
    for (auto it = polls_.begin(); it != polls_.end();) {
      const Poll& p = it->second;
      if (all_changed_ || p.until <= now) {
        due.emplace_back(it->first, p);
        it = polls_.erase(it);
      } else if (changed_.count(p.host) != 0) {
        maybe.emplace_back(it->first, p);
        it = polls_.erase(it);
      } else {
        if (p.until < next) next = p.until;
        ++it;
      }
    }
    changed_.clear();
    if (due.empty() && maybe.empty()) {
      cv_.wait_until(lock, next,
                     [&] { return stopping_ || !changed_.empty() || (all_changed_ && !polls_.empty()); });
      continue;
    }
    lock.unlock();
    for (auto& [ticket, p] : maybe) {
      if (service_.assignmentsAfter(p.host, p.after)) {
        due.emplace_back(ticket, p);
      } else {
        std::lock_guard<std::mutex> relock(mu_);
        if (!stopping_) polls_[ticket] = p;  // a version the agent has already
      }
    }
    for (auto& [ticket, p] : due) answer_(ticket, p.host, p.after, p.peers_digest);
    lock.lock();
  }
}

}  // namespace tw
