// Text helpers for messages that quote what a user sent. Messages end up in
// JSON answers, logs and the terminal: a quoted value is never cut inside a
// UTF-8 character, and bytes that are not UTF-8 can be made harmless.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tw {

// True when s is well-formed UTF-8 (no overlong forms, no surrogates, nothing
// above U+10FFFF).
bool isValidUtf8(std::string_view s);

// The longest prefix of s of at most max_bytes bytes that does not end inside
// a well-formed UTF-8 sequence (a byte that is not UTF-8 counts as one
// character of its own).
std::string utf8Prefix(std::string_view s, size_t max_bytes);

// s quoted for a message: "'value'", or "'first…'" cut at a character
// boundary when s is longer than max_bytes.
std::string quoteForMessage(std::string_view s, size_t max_bytes = 60);

// s in single quotes, whole: "'value'" (names the code itself chose or already
// checked: VM, host and path names in messages).
std::string singleQuoted(std::string_view s);

// The first character of s: its whole UTF-8 sequence, or "\xNN" when the
// first byte starts none; "" for an empty s.
std::string utf8FirstCharacter(std::string_view s);

// s with every byte that is not part of a well-formed UTF-8 sequence replaced
// by U+FFFD, as nlohmann::json's error_handler_t::replace does.
std::string utf8Sanitize(std::string_view s);

// Compares a presented bearer token with the expected one in time that does
// not depend on where they differ, over exact bytes. An empty expected token
// matches nothing.
bool tokenMatches(const std::string& presented, const std::string& expected);

// The credential of an Authorization header value with the Bearer scheme
// (RFC 6750): the scheme name in any case (RFC 7235: "bearer", "BEARER"), one
// or more spaces, then the token as exact bytes (nothing trimmed or cut: a
// NUL or any other byte stays part of it). "" when the header is empty, names
// another scheme, or carries no token.
std::string bearerToken(std::string_view header);

}  // namespace tw
