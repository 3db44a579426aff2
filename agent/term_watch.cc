#include "agent/term_watch.h"

#include <algorithm>

namespace tw {

TermWatch::Verdict TermWatch::check(int64_t term, Millis now, Millis lease_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  Verdict v;
  auto accept = [&] {
    highest_ = term;
    last_accepted_ms_ = now;
    give_up_ms_ = std::max(lease_ms, kMinGiveUpMs);
    refusing_ = false;
  };
  if (term >= highest_) {
    if (refusing_) {
      v.say = "assignments of term " + std::to_string(term) + " accepted again";
    }
    accept();
    return v;
  }
  if (now - last_accepted_ms_ > give_up_ms_) {
    v.level = "warn";
    v.say = "accepting assignments of term " + std::to_string(term) + ", older than term " +
            std::to_string(highest_) + ": no set of term " + std::to_string(highest_) + " for " +
            std::to_string(now - last_accepted_ms_) + " ms (more than " + std::to_string(give_up_ms_) +
            " ms); the etcd cluster was rebuilt, or the site went back to one controller";
    accept();
    return v;
  }
  ++refused_;
  v.accept = false;
  if (!refusing_) {
    refusing_ = true;
    v.level = "warn";
    v.say = "refusing assignments of term " + std::to_string(term) + ": term " + std::to_string(highest_) +
            " is newer (a deposed controller leader); keeping the set in force, no lease renewal from it";
  }
  return v;
}

int64_t TermWatch::highest() const {
  std::lock_guard<std::mutex> lock(mu_);
  return highest_;
}

int64_t TermWatch::refused() const {
  std::lock_guard<std::mutex> lock(mu_);
  return refused_;
}

}  // namespace tw
