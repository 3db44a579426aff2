#include "controller/pending_writes.h"

#include <algorithm>

namespace tw {

void PendingWrites::failed(const std::string& key, Write write) {
  for (auto& [k, w] : writes_) {
    if (k == key) {
      w = std::move(write);
      return;
    }
  }
  writes_.emplace_back(key, std::move(write));
}

void PendingWrites::written(const std::string& key) {
  if (writes_.empty()) return;
  writes_.erase(std::remove_if(writes_.begin(), writes_.end(), [&](const auto& kw) { return kw.first == key; }),
                writes_.end());
}

std::vector<std::string> PendingWrites::keys() const {
  std::vector<std::string> out;
  out.reserve(writes_.size());
  for (const auto& [k, _] : writes_) out.push_back(k);
  return out;
}

Status PendingWrites::rewrite(Store& store) {
  size_t done = 0;
  Status s;
  for (; done < writes_.size(); ++done) {
    s = writes_[done].second(store);
    if (!s.isOk()) break;
  }
  writes_.erase(writes_.begin(), writes_.begin() + static_cast<std::ptrdiff_t>(done));
  return s;
}

}  // namespace tw
