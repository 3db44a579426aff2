// hex64: a 64-bit value as 16 lowercase hex digits (agent ids, spec digests);
// fnv1a: the 64-bit FNV-1a hash those digests are made of.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace tw {

inline uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
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
