#include "tw/ip_prefix.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace tw {

std::string IpPrefix::ip() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), buf, sizeof buf);
  return buf;
}

std::string IpPrefix::str() const { return ip() + "/" + std::to_string(prefix); }

bool IpPrefix::contains(const IpPrefix& other) const {
  if (v6 != other.v6) return false;
  int bits = prefix;
  for (size_t i = 0; bits > 0; ++i, bits -= 8) {
    const uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
    if ((bytes[i] & mask) != (other.bytes[i] & mask)) return false;
  }
  return true;
}

std::optional<IpPrefix> parseIpPrefix(const std::string& text) {
  const size_t slash = text.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= text.size()) return std::nullopt;
  const std::string addr = text.substr(0, slash);
  const std::string len = text.substr(slash + 1);
  IpPrefix p;
  if (inet_pton(AF_INET, addr.c_str(), p.bytes.data()) == 1) {
    p.v6 = false;
  } else if (inet_pton(AF_INET6, addr.c_str(), p.bytes.data()) == 1) {
    p.v6 = true;
  } else {
    return std::nullopt;
  }
  if (len.size() > 3 || len.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), p.prefix);
  if (ec != std::errc() || end != len.data() + len.size()) return std::nullopt;
  if (p.prefix < 0 || p.prefix > (p.v6 ? 128 : 32)) return std::nullopt;
  return p;
}

bool isValidInterfaceName(const std::string& name) {
  if (name.empty() || name.size() > 15 || name == "." || name == "..") return false;
  for (unsigned char c : name) {
    if (c == '/' || c == ':' || c <= ' ' || c >= 0x7f) return false;
  }
  return true;
}

}  // namespace tw
