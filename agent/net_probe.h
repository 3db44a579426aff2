// One network probe of a service, over plain sockets: a TCP connect (and the
// server's greeting, when one is expected), or an HTTP/1.0 GET whose answer is
// read to its end. Blocking, bounded by a timeout for the whole exchange. Used
// by NetworkHealthProber's thread.
#pragma once

#include <string>

#include "tw/clock.h"
#include "tw/model.h"
#include "tw/status.h"

namespace tw {

// Connects to host:port (an IPv4 address) within timeout_ms. A connection that
// the far side closes at once (in at most kClosedAtOnceMs) fails too: a QEMU
// user-network port forward accepts every connection and closes it when
// nothing listens in the guest.
// Errors: kUnavailable saying what failed ("connecting to 127.0.0.1:20001:
// Connection refused", "... timed out after 1000 ms").
Status probeTcp(const std::string& host, int port, Millis timeout_ms);
inline constexpr Millis kClosedAtOnceMs = 100;

// Connects to host:port and reads what the server sends first until `expect`
// (any bytes, REQUIRES: not empty) is among it: ok. Stops without it when the
// server closes, timeout_ms (for the whole exchange) runs out, or
// kMaxGreeting bytes came. Sends nothing. Unlike probeTcp this tells a
// service from a port forward that accepts while the guest still boots.
// Errors: kUnavailable, as probeTcp for the connect, else saying what came
// ('127.0.0.1:20001 sent 0 bytes in 1000 ms, expected "TIERWARDEN-DB"',
// '127.0.0.1:20001 closed after 5 bytes without "X": "hello"').
Status probeTcpGreeting(const std::string& host, int port, const std::string& expect,
                        Millis timeout_ms);
inline constexpr size_t kMaxGreeting = 4096;

struct HttpAnswer {
  int status = 0;    // 200
  std::string body;  // at most kMaxHttpBody bytes are kept
};
inline constexpr size_t kMaxHttpBody = 64 * 1024;

// GET `path` from host:port (HTTP/1.0, Connection: close) and reads the answer
// to its end: until the server closes, or Content-Length bytes of body came.
// The whole exchange takes at most timeout_ms.
// Errors: kUnavailable (cannot connect, closed before a status line, timed
// out), kInvalidArgument (the answer is not HTTP).
Result<HttpAnswer> httpGet(const std::string& host, int port, const std::string& path,
                           Millis timeout_ms);

// One health check, as HealthCheckSpec says: tcp = probeTcp, or
// probeTcpGreeting when check.expect is set; http = httpGet, ok iff the status
// is check.expect_status. Errors say what failed.
Status probeService(const std::string& host, int port, const HealthCheckSpec& check);

}  // namespace tw
