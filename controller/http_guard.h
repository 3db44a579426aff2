// A cpp-httplib server that a client cannot starve: admission per client
// address, a deadline on reading each request, and an optional hand-off of
// long-lived streams before httplib holds a thread for them.
//
// httplib serves each connection on one thread of a fixed pool, blocking. Left
// alone, any 64 idle or slow connections (half-open requests, slowloris, event
// streams) held every thread, heartbeats included. GuardedHttpServer wraps
// httplib's per-connection entry point (process_and_close_socket, a protected
// virtual of httplib::Server) and:
//   - refuses a connection at once (503, closed) when its address already
//     holds `per_address` connections; when the listener holds `total`, it
//     evicts the oldest connection that has not yet sent an authenticated
//     request (a client that holds connections open without a credential
//     cannot lock agents out), or refuses the new one when there is none.
//     `total` stays below `threads`, so admitted connections never wait in
//     httplib's queue and spare threads remain to refuse or evict;
//   - shuts a connection down when its request (head and body) is not read
//     within `request_deadline_ms` of the connection's start, or of the end
//     of the previous answer plus the keep-alive wait. httplib's own timeout
//     is per read, so one byte every few seconds kept a thread forever;
//   - hands a request whose first bytes match a divert prefix (the event
//     stream) to a callback that owns the socket from then on.
// Handlers call requestRead() first: from then on the deadline no longer
// applies (a long poll or a large apply may take longer).
//
// TLS (setTls): httplib 0.11.4's SSLServer does its handshake inside its
// private per-connection function, where neither the deadline's bookkeeping
// nor the divert can reach (the first bytes are a ClientHello, and the stream
// request is only visible after decryption). So on a TLS listener the guard
// does the handshake itself (tls.h, the same OpenSSL that httplib uses),
// under the same admission and watchdog deadline as a request, then peeks at
// the decrypted bytes for the divert, and hands the decrypted stream to
// httplib's own request processing (Server::process_request), keep-alive
// included. A client that connects and never sends a ClientHello is shut
// down at the request deadline like a silent plain client.
//
// In httplib 0.11.4 (Debian 12) process_and_close_socket is a *private*
// virtual, so an override cannot call the base. This server therefore only
// accepts (its own pool and listening socket); the routes live on handlers(),
// a plain httplib::Server that never listens, whose per-connection processing
// is reached through a member pointer (http_guard.cc).
#pragma once

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "controller/tls.h"
#include "tw/clock.h"

namespace tw {

struct ListenerLimits {
  size_t threads = 64;             // httplib's pool; admitted connections fit in it
  int per_address = 16;            // open connections from one client address
  int total = 64;                  // open connections in all (<= threads)
  Millis request_deadline_ms = 5000;
  int keep_alive_requests = 1;     // requests per connection (1 = none kept alive)
  int keep_alive_timeout_s = 5;    // idle wait for the next request
  Millis write_timeout_ms = 5000;  // per write of an answer
};

struct ListenerStats {
  int open = 0;                    // admitted connections now
  int64_t admitted = 0;
  int64_t refused_per_address = 0;
  int64_t refused_total = 0;
  int64_t evicted = 0;             // unauthenticated, closed to admit a newer one
  int64_t deadline_kills = 0;      // shut down: request not read in time
  int64_t diverted = 0;            // handed to the divert callback
  int64_t tls_failures = 0;        // TLS handshakes that failed (no or a bad client cert, timeouts)
  int64_t certified = 0;           // TLS handshakes with a client certificate the CA signed
};

class GuardedHttpServer : public httplib::Server {
 public:
  // Takes ownership of `io` (a connection, plain or TLS after its handshake,
  // whose unread bytes begin with the divert prefix). Called on an httplib
  // pool thread; it may read the request head itself (bounded by `deadline`).
  using Divert = std::function<void(std::unique_ptr<Transport> io, const std::string& peer_address,
                                    std::chrono::steady_clock::time_point deadline)>;

  GuardedHttpServer(std::string name, ListenerLimits limits);
  ~GuardedHttpServer() override;

  // Where routes, error handlers and payload limits are registered.
  httplib::Server& handlers() { return inner_; }

  // REQUIRES: before listening. `prefix` is the start of the request line,
  // e.g. "GET /api/v1/events/stream".
  void setDivert(std::string prefix, Divert divert);
  // REQUIRES: before listening. Serves HTTPS with `tls` (its client CA, when
  // it has one, makes every connection show a client certificate).
  void setTls(std::shared_ptr<const ServerTls> tls) { tls_ = std::move(tls); }
  bool tls() const { return tls_ != nullptr; }

  // The request of this connection has been read: its deadline is lifted
  // until the answer is written. Call first in every handler.
  void requestRead(const httplib::Request& req);
  // The request carried a valid credential: its connection is never evicted.
  void authenticated(const httplib::Request& req);

  ListenerStats stats() const;
  const ListenerLimits& limits() const { return limits_; }
  // Stops accepting and ends keep-alive connections after their request.
  void stop();
  // REQUIRES: bound. httplib 0.11.4 listens with a backlog of 5: a burst of
  // connections (or a flood) overflowed it and new clients, agents included,
  // waited for SYN retransmits (1 s, 3 s, ...). listen() again resizes it.
  void raiseBacklog(int backlog);

 private:
  bool process_and_close_socket(socket_t sock) override;

  using Key = std::pair<std::string, int>;  // peer address, peer port
  using TimePoint = std::chrono::steady_clock::time_point;
  struct Conn {
    int watch_fd = -1;           // a dup of the socket: shutdown() reaches it safely
    bool armed = true;
    TimePoint deadline;
    TimePoint since;             // admission
    bool authenticated = false;
    bool evicted = false;        // no longer counted in stats_.open
  };

  // Admits and registers the connection (watch_fd: a dup the guard owns).
  bool admit(const Key& key, int watch_fd, TimePoint deadline);
  void release(const Key& key, const std::string& address);
  void rearm(const httplib::Request& req, TimePoint deadline);
  // Peeks at the first bytes; true when they start with the divert prefix.
  // False (and `timed_out`) when nothing complete arrived by the deadline.
  // `io`: the TLS connection to peek through (null: the plain socket `fd`).
  bool peekDivert(int fd, Transport* io, TimePoint deadline, bool& timed_out);
  // The TLS path of process_and_close_socket (the connection is admitted).
  bool serveTls(int sock, const Key& key, const std::string& address, TimePoint deadline);
  void watchdog();

  const std::string name_;
  const ListenerLimits limits_;
  httplib::Server inner_;
  std::string divert_prefix_;
  Divert divert_;
  std::shared_ptr<const ServerTls> tls_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::map<std::string, int> per_address_;  // admitted, not evicted
  std::map<Key, Conn> conns_;
  ListenerStats stats_;
  bool stopping_ = false;
  std::thread watchdog_;
};

// The peer's numeric address of a connected socket ("127.0.0.1", "::1"), as
// httplib writes Request::remote_addr; empty when unknown.
std::string peerAddressOf(int fd, int* port = nullptr);

}  // namespace tw
