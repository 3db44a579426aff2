#include "sim/wake_queue.h"

#include <bit>

namespace tw::sim {

WakeQueue::WakeQueue(size_t hosts) : bits_((hosts + 63) / 64, 0), wake_at_(hosts, kNever) {
  wakeAll();
}

void WakeQueue::wake(size_t h) { bits_[h / 64] |= uint64_t{1} << (h % 64); }

void WakeQueue::wakeAll() {
  for (size_t h = 0; h < wake_at_.size(); ++h) wake(h);
}

void WakeQueue::schedule(size_t h, Millis at, Millis now) {
  if (at <= now) {
    wake(h);
    return;
  }
  bits_[h / 64] &= ~(uint64_t{1} << (h % 64));
  wake_at_[h] = at;
  if (at != kNever) heap_.push({at, h});
}

void WakeQueue::advance(Millis now) {
  while (!heap_.empty() && heap_.top().first <= now) {
    const auto [at, h] = heap_.top();
    heap_.pop();
    // Stale: the host was scheduled again since (or is ready anyway).
    if (wake_at_[h] != at || ready(h)) continue;
    wake(h);
  }
}

size_t WakeQueue::nextReady(size_t from) const {
  const size_t n = wake_at_.size();
  if (from >= n) return kNone;
  size_t word = from / 64;
  uint64_t bits = bits_[word] & (~uint64_t{0} << (from % 64));
  while (true) {
    if (bits != 0) {
      const size_t h = word * 64 + static_cast<size_t>(std::countr_zero(bits));
      return h < n ? h : kNone;
    }
    if (++word >= bits_.size()) return kNone;
    bits = bits_[word];
  }
}

}  // namespace tw::sim
