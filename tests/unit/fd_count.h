// The process's open descriptors, for tests that show that what was opened
// (sockets, an epoll instance, an eventfd) was closed again.
#pragma once

#include <filesystem>

namespace tw {

// Entries of /proc/self/fd (the listing's own descriptor included: the same
// in every call, so two counts compare).
inline int openDescriptors() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

}  // namespace tw
