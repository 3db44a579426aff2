// hex64: a 64-bit value as 16 lowercase hex digits (agent ids, spec digests);
// fnv1a: the 64-bit FNV-1a hash those digests are made of. One copy for the
// controller, the agent and common (heartbeat digests, backup salts, VM uuids).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace tw {

// The offset basis every digest of this project has used since its start. It
// is NOT FNV's published basis (14695981039346656037, which uuid.cc passes):
// a digit short. Digests are compared across versions (agents' kept state,
// compact heartbeats), so it stays.
inline constexpr uint64_t kDigestFnvBasis = 1469598103934665603ULL;

inline uint64_t fnv1a(const std::string& s, uint64_t basis = kDigestFnvBasis) {
  uint64_t h = basis;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

inline std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace tw
