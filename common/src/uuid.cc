// uuidForVm: a VM's one identity on every host, derived from its name alone.
#include <cstdint>
#include <string>

#include "tw/hex64.h"
#include "tw/hypervisor.h"

namespace tw {

namespace {

constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;

}  // namespace

// Name-based, RFC 4122 layout: 128 bits from two FNV-1a hashes with different
// offset bases, then the version nibble set to 5 and the variant bits to 10.
// Changing this function changes every VM's identity: a test pins its output.
std::string uuidForVm(const std::string& vm) {
  const std::string key = "tierwarden:" + vm;
  const uint64_t hi = fnv1a(key, kFnvOffsetBasis);
  const uint64_t lo = fnv1a(key, fnv1a("tierwarden-uuid-salt", kFnvOffsetBasis));
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
