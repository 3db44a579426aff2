// The server-sent event stream (GET /api/v1/events/stream, docs/api.md)
// without a thread per stream: one thread writes every stream through epoll,
// with non-blocking sockets.
//
// A stream used to hold one of httplib's request threads for as long as the
// client kept it open, so 64 idle streams stopped the controller from
// answering anything. GuardedHttpServer diverts a stream request before
// httplib reads it; take() reads the head, answers, and keeps the socket.
//
// Each stream gets every event after its cursor (?since=ID or Last-Event-ID),
// pages of 500 read through the controller's loop, a ": keepalive" comment
// after 15 s of silence, and is dropped when its client stops reading
// (max_pending_bytes unsent) or closes.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "controller/service.h"
#include "controller/tls.h"
#include "tw/status.h"

namespace tw {

struct StreamLimits {
  int total = 256;         // open streams in all
  int per_address = 32;    // open streams of one client address
  size_t max_pending_bytes = 1 << 20;
  Millis keepalive_ms = 15000;
  size_t max_head_bytes = 8192;
};

class EventStreamer {
 public:
  // Decides whether a stream request may be served (e.g. a read token);
  // gets the request's headers (lower-case names). OK = serve.
  using Authorize = std::function<Status(const std::map<std::string, std::string>& headers)>;

  // REQUIRES: service outlives the streamer.
  EventStreamer(ControllerService& service, StreamLimits limits, Authorize authorize = nullptr);
  ~EventStreamer();  // stop()

  void start();
  // Closes every stream and joins the thread.
  void stop();

  // Takes ownership of `io`, a connection (plain, or TLS after its
  // handshake) whose first unread bytes are
  // "GET /api/v1/events/stream". Reads the request head until `deadline`,
  // then either answers 200 and keeps the stream, or answers an error (400,
  // 401, 404, 503 as JSON) and closes. Called on any thread; blocks at most
  // until the deadline.
  void take(std::unique_ptr<Transport> io, const std::string& peer_address,
            std::chrono::steady_clock::time_point deadline);

  int streams() const;

 private:
  struct Stream {
    int fd = -1;
    std::unique_ptr<Transport> io;  // owns fd
    std::string address;
    int64_t cursor = 0;
    std::string pending;  // bytes not yet written
    bool dead = false;    // a write failed: close it
    bool caught_up = false;  // read the log up to the newest event once
    std::chrono::steady_clock::time_point last_write;
  };

  void loop();
  void adoptIncoming();
  void pump();
  void flush(Stream& s);
  void closeStream(int fd);
  void wake();

  ControllerService& service_;
  const StreamLimits limits_;
  Authorize authorize_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
  // Held through start() and stop() whole: a stop() that comes while
  // start() runs (a server stopped at once) waits, then joins the thread
  // start() made; one that came first leaves start() nothing to do.
  std::mutex life_mu_;

  mutable std::mutex mu_;  // guards incoming_, counts_, open_, stopping_
  std::vector<Stream> incoming_;
  std::map<std::string, int> counts_;  // address -> open streams
  int open_ = 0;
  bool stopping_ = false;

  std::map<int, Stream> streams_;  // loop thread only
};

}  // namespace tw
