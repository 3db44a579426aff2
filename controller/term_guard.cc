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
  bool body_ok = false;
  Status s = inner_.transaction([&]() -> Status {
    Status b = body();
    body_ok = b.isOk();
    return b;
  });
  return noteCommit(s, body_ok);
}

Status GuardedStore::batch(const std::function<Status()>& body) {
  bool body_ok = false;
  Status s = inner_.batch([&]() -> Status {
    Status b = body();
    body_ok = b.isOk();
    return b;
  });
  return noteCommit(s, body_ok);
}

}  // namespace tw
