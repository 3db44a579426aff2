// An IP address with a prefix length ("10.213.0.100/24", "fd00::64/64"): the
// floating address of a tier (policy `address:`) and the subnets an agent
// reports for its host's interfaces. Parsed with inet_pton, so only the
// canonical dotted-quad / RFC 4291 text forms are taken.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace tw {

struct IpPrefix {
  bool v6 = false;
  std::array<uint8_t, 16> bytes{};  // v4: the first 4
  int prefix = 0;                   // 0..32 (v4) or 0..128 (v6)

  // "10.213.0.100" (no prefix).
  std::string ip() const;
  // "10.213.0.100/24".
  std::string str() const;
  // Whether `other`'s address lies in this prefix's subnet (same family).
  bool contains(const IpPrefix& other) const;
  bool operator==(const IpPrefix&) const = default;
};

// "A/N" with A an IPv4 or IPv6 address and N its prefix length. Nothing else:
// no host names, no missing prefix. nullopt when `text` is not one.
std::optional<IpPrefix> parseIpPrefix(const std::string& text);

// A network interface name as Linux takes it: 1..15 bytes, no '/', ':' or
// whitespace, not "." or "..".
bool isValidInterfaceName(const std::string& name);

}  // namespace tw
