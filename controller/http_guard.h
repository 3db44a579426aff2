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
// Connections hold no thread while they wait (issue #16: every real agent
// keeps a heartbeat connection and a long poll open, and a thread each let
// ~56 hosts in). The guard runs each connection's request loop itself (on
// httplib's process_request, plain or TLS alike): a kept-alive connection
// with no next request yet is parked in a ConnectionParker (one epoll
// thread, connection_parker.h) and comes back to a pool thread when its next
// request arrives; one idle for keep_alive_timeout_s is closed. A handler
// may defer() its answer (the assignments long poll, long_polls.h): the
// connection is parked until answerDeferred() writes the answer from any
// thread. So `total` bounds the connections being served on threads, and
// `parked_max` (default: the open-files limit less a reserve) the parked
// and deferred ones; when that is full, the oldest parked connection without
// a credential is closed to make room, else the one to park is closed.
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
#include <set>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "controller/connection_parker.h"
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
  // Parked connections (kept alive between requests, or waiting for a
  // deferred answer). 0 = the open-files limit (RLIMIT_NOFILE) less
  // kReservedFiles, at least 256 (parkedLimit()).
  int parked_max = 0;
};

// Descriptors kept free of parked connections: the store, libvirt
// connections, the other listeners, files.
inline constexpr int kReservedFiles = 512;

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
  int parked = 0;                  // parked or deferred connections now (no thread)
  int64_t parks = 0;               // times a connection was parked between requests
  int64_t idle_closed = 0;         // parked connections closed after keep_alive_timeout_s
  int64_t deferred = 0;            // answers deferred by a handler (long polls)
  int64_t refused_parked = 0;      // closed instead of parked: parked_max reached
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
  // In a handler: this request is answered later, by answerDeferred(ticket)
  // from any thread; the answer httplib writes when the handler returns is
  // dropped, and the connection holds no thread meanwhile. 0: it cannot be
  // deferred (no room, stopping): answer it now.
  uint64_t defer(const httplib::Request& req);
  // Writes the answer of a deferred request (on a pool thread), then serves
  // the connection's next request. A ticket whose connection is gone is
  // ignored. `body` is JSON.
  void answerDeferred(uint64_t ticket, int status, std::string body);
  // The bound on parked connections (limits().parked_max, or from RLIMIT_NOFILE).
  int parkedLimit() const { return parked_limit_; }

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
  struct Session;
  struct Conn {
    int watch_fd = -1;           // a dup of the socket: shutdown() reaches it safely
    bool armed = true;
    TimePoint deadline;
    TimePoint since;             // admission
    bool authenticated = false;
    bool evicted = false;        // no longer counted in stats_.open
    bool parked = false;         // counted in stats_.parked, not stats_.open
    Session* session = nullptr;  // while a request is served on a thread
  };

  // Admits and registers the connection (watch_fd: a dup the guard owns).
  bool admit(const Key& key, int watch_fd, TimePoint deadline);
  // REQUIRES: mu_ held. A connection's deadline is now `deadline`.
  void wakeWatchdogBy(TimePoint deadline);
  void release(const Key& key, const std::string& address);
  // Peeks at the first bytes; true when they start with the divert prefix.
  // False (and `timed_out`) when nothing complete arrived by the deadline.
  // `io`: the TLS connection to peek through (null: the plain socket `fd`).
  bool peekDivert(int fd, Transport* io, TimePoint deadline, bool& timed_out);
  // The TLS handshake (the connection is admitted). False: it failed (released).
  bool shakeHands(Session& s);
  // The connection's request loop, on a pool thread; parks it between
  // requests. `fresh`: its first request (then it is not parked first).
  void serve(std::unique_ptr<Session> s, bool fresh);
  // Parks `s` (REQUIRES: no request in flight). True: `s` was taken (parked,
  // or closed for lack of room). False: the parker refused it (stopping).
  bool park(std::unique_ptr<Session>& s);
  // ConnectionParker's wake.
  void woken(uint64_t id, bool readable);
  // A deferred request's handler returned: parks `s` until its answer, or
  // writes the answer at once when it came already. True: `s` was taken.
  bool holdDeferred(std::unique_ptr<Session>& s);
  // Writes a deferred answer, then serves on (or closes).
  void finishDeferred(std::unique_ptr<Session> s, int status, const std::string& body);
  // Ends a connection: counters, then the session (its socket) is freed.
  void close(std::unique_ptr<Session> s, bool graceful);
  // REQUIRES: mu_. Moves a connection between stats_.open and stats_.parked.
  void setParked(Conn& c, bool parked);
  // REQUIRES: mu_. Runs `task` on the pool; false when stopping.
  bool enqueue(std::function<void()> task);
  void watchdog();

  const std::string name_;
  const ListenerLimits limits_;
  httplib::Server inner_;
  std::string divert_prefix_;
  Divert divert_;
  std::shared_ptr<const ServerTls> tls_;

  int parked_limit_ = 0;
  httplib::ThreadPool* pool_ = nullptr;  // httplib's, while listening; set once

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  // When the watchdog wakes next (mu_; min while it is awake or not yet
  // waiting): an earlier deadline wakes it (wakeWatchdogBy).
  TimePoint watchdog_until_ = TimePoint::min();
  std::map<std::string, int> per_address_;  // admitted, not evicted
  std::map<Key, Conn> conns_;
  ListenerStats stats_;
  bool stopping_ = false;    // the destructor: the watchdog ends
  bool closing_ = false;     // stop(): nothing is parked or queued any more
  uint64_t next_id_ = 0;     // sessions and deferral tickets
  std::map<uint64_t, std::unique_ptr<Session>> parked_;    // by session id
  std::map<uint64_t, std::unique_ptr<Session>> deferred_;  // by ticket
  std::set<uint64_t> deferring_;  // tickets whose handler has not returned yet
  std::map<uint64_t, std::pair<int, std::string>> early_;  // answers that came first
  std::thread watchdog_;
  ConnectionParker parker_;  // last: its thread ends first
};

// The peer's numeric address of a connected socket ("127.0.0.1", "::1"), as
// httplib writes Request::remote_addr; empty when unknown.
std::string peerAddressOf(int fd, int* port = nullptr);

}  // namespace tw
