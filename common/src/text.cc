#include "tw/text.h"

namespace tw {

namespace {

// Length of the well-formed UTF-8 sequence that starts at s[i] (Unicode
// Table 3-7), or 0 when none starts there.
size_t sequenceAt(std::string_view s, size_t i) {
  auto byte = [&](size_t k) -> unsigned { return static_cast<unsigned char>(s[k]); };
  unsigned b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t n = 0;
  unsigned lo = 0x80, hi = 0xBF;  // range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlong forms
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

}  // namespace

bool isValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = sequenceAt(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string utf8Prefix(std::string_view s, size_t max_bytes) {
  size_t end = 0;
  while (end < s.size()) {
    size_t n = sequenceAt(s, end);
    if (n == 0) n = 1;  // a stray byte is a character of its own
    if (end + n > max_bytes) break;
    end += n;
  }
  return std::string(s.substr(0, end));
}

std::string singleQuoted(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '\'';
  out += s;
  out += '\'';
  return out;
}

std::string quoteForMessage(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return "'" + std::string(s) + "'";
  size_t keep = max_bytes > 3 ? max_bytes - 3 : 0;
  return "'" + utf8Prefix(s, keep) + "...'";
}

std::string utf8FirstCharacter(std::string_view s) {
  if (s.empty()) return "";
  size_t n = sequenceAt(s, 0);
  if (n > 0) return std::string(s.substr(0, n));
  static const char* kHex = "0123456789abcdef";
  unsigned b = static_cast<unsigned char>(s[0]);
  return std::string("\\x") + kHex[b >> 4] + kHex[b & 15];
}

std::string utf8Sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n = sequenceAt(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

bool tokenMatches(const std::string& presented, const std::string& expected) {
  if (expected.empty() || presented.size() != expected.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < expected.size(); ++i)
    diff |= static_cast<unsigned char>(presented[i] ^ expected[i]);
  return diff == 0;
}

std::string bearerToken(std::string_view header) {
  constexpr std::string_view kScheme = "bearer";
  if (header.size() <= kScheme.size()) return "";
  for (size_t i = 0; i < kScheme.size(); ++i) {
    char c = header[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != kScheme[i]) return "";
  }
  size_t i = kScheme.size();
  if (header[i] != ' ') return "";  // "Bearerx ...": another scheme
  while (i < header.size() && header[i] == ' ') ++i;
  return std::string(header.substr(i));
}

}  // namespace tw
