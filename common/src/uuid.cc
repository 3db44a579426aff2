// uuidForVm: a VM's one identity on every host, derived from its name alone.
#include <cstdint>
#include <string>

#include "tw/hypervisor.h"

namespace tw {

namespace {

constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

uint64_t fnv1a64(const std::string& text, uint64_t basis) {
  uint64_t h = basis;
  for (unsigned char c : text) {
    h ^= c;
    h *= kFnvPrime;
  }
  return h;
}

}  // namespace

// Name-based, RFC 4122 layout: 128 bits from two FNV-1a hashes with different
// offset bases, then the version nibble set to 5 and the variant bits to 10.
// Changing this function changes every VM's identity: a test pins its output.
std::string uuidForVm(const std::string& vm) {
  const std::string key = "tierwarden:" + vm;
  const uint64_t hi = fnv1a64(key, kFnvOffsetBasis);
  const uint64_t lo = fnv1a64(key, fnv1a64("tierwarden-uuid-salt", kFnvOffsetBasis));
  unsigned char bytes[16];
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<unsigned char>(hi >> (56 - 8 * i));
    bytes[8 + i] = static_cast<unsigned char>(lo >> (56 - 8 * i));
  }
  bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0f) | 0x50);
  bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3f) | 0x80);

  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[bytes[i] >> 4];
    out += kHex[bytes[i] & 0x0f];
  }
  return out;
}

}  // namespace tw
