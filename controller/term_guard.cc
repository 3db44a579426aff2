#include "controller/term_guard.h"

#include <utility>

#include "tw/log.h"

namespace tw {

void TermGuard::setTerm(int64_t term, std::function<bool()> leads) {
  term_ = term;
  leads_ = std::move(leads);
}

void TermGuard::beginStep() {
  write_failed_ = false;
  write_error_.clear();
  said_this_step_ = false;
}

void TermGuard::writeFailed(const Status& why) {
  if (write_failed_) return;  // the first failure says why
  write_failed_ = true;
  write_error_ = why.toString();
}

bool TermGuard::deposed() const { return leads_ && !leads_(); }

std::string TermGuard::whyNot() const {
  if (deposed()) return "the term " + std::to_string(term_) + " this controller acts for is over";
  if (write_failed_) return "a store write of this step failed (" + write_error_ + ")";
  return "";
}

bool TermGuard::mayAct(const std::string& what) {
  if (deposed()) {
    if (!said_deposed_) {
      said_deposed_ = true;
      ++withheld_steps_;
      log::warn("not sending {} (nor anything else from now on): {}", what, whyNot());
    }
    return false;
  }
  if (!write_failed_) return true;
  if (!said_this_step_) {
    said_this_step_ = true;
    ++withheld_steps_;
    log::warn("not sending {} (nor anything else this step decided): {}", what, whyNot());
  }
  return false;
}

Status GuardedStore::transaction(const std::function<Status()>& body) {
  return scope([this](const std::function<Status()>& b) { return inner_.transaction(b); }, body);
}

Status GuardedStore::batch(const std::function<Status()>& body) {
  return scope([this](const std::function<Status()>& b) { return inner_.batch(b); }, body);
}

Status GuardedStore::scope(const std::function<Status(const std::function<Status()>&)>& run,
                           const std::function<Status()>& body) {
  const size_t first = scope_writes_.size();
  bool body_ok = false;
  ++depth_;
  Status s = run([&]() -> Status {
    Status b = body();
    body_ok = b.isOk();
    return b;
  });
  --depth_;
  if (!s.isOk() && body_ok) {
    // The commit failed: what its writes wrote is not in the store.
    for (size_t i = first; i < scope_writes_.size(); ++i) {
      pending_.failed(scope_writes_[i].first, std::move(scope_writes_[i].second));
    }
    scope_writes_.resize(first);
  } else if (!s.isOk()) {
    scope_writes_.resize(first);  // rolled back on purpose: memory kept nothing either
  } else if (depth_ == 0) {
    for (const auto& [key, _] : scope_writes_) pending_.written(key);
    scope_writes_.clear();
  }
  return noteCommit(s, body_ok);
}

Status GuardedStore::track(std::string key, PendingWrites::Write write) {
  Status s = write(inner_);
  if (!s.isOk()) {
    guard_.writeFailed(s);
    pending_.failed(key, std::move(write));
  } else if (depth_ > 0) {
    scope_writes_.emplace_back(std::move(key), std::move(write));
  } else {
    pending_.written(key);
  }
  return s;
}

void GuardedStore::beginStep(Millis now) {
  guard_.beginStep();
  if (pending_.empty() || depth_ > 0) return;
  const size_t before = pending_.size();
  if (rewrite_failed_ms_ >= 0 && now - rewrite_failed_ms_ < kRewriteEveryMs) {
    guard_.writeFailed(unavailable(std::to_string(before) + " store writes of earlier steps are not in the store yet"));
    return;
  }
  Status s = pending_.rewrite(inner_);
  rewritten_ += static_cast<int64_t>(before - pending_.size());
  if (!s.isOk()) {
    rewrite_failed_ms_ = now;
    guard_.writeFailed(s.withContext("writing again " + std::to_string(pending_.size()) +
                                     " store writes of earlier steps"));
    return;
  }
  rewrite_failed_ms_ = -1;
  log::info("wrote again {} store writes that had failed: the store holds this controller's memory again", before);
}

}  // namespace tw
