// hex64: a 64-bit value as 16 lowercase hex digits (agent ids, spec digests).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace tw {

inline std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace tw
