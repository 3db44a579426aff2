// HTTP+JSON client of the controller's REST API (docs/api.md): the generic
// ApiClient that twctl uses, and HttpControllerLink, the agent's side of the
// agent <-> controller protocol (tw/protocol.h) over HTTP.
//
// This header does not include httplib; common/src/http_client.cc is the one
// client-side file that does.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/compact_heartbeats.h"
#include "tw/json.h"
#include "tw/protocol.h"
#include "tw/status.h"

namespace tw {

inline constexpr char kDefaultControllerUrl[] = "https://127.0.0.1:7800";
// The controller's agents' listener (--agent-listen): heartbeats, events,
// assignments, tier endpoints.
inline constexpr char kDefaultAgentControllerUrl[] = "https://127.0.0.1:7801";

struct ApiClientOptions {
  // "http://HOST[:PORT]" or "https://HOST[:PORT]", optionally followed by a path
  // prefix ("http://proxy/tierwarden") that is put before every request path.
  // Several controller replicas (docs/ha.md): a comma-separated list of such
  // URLs, all of one scheme (see ApiClient).
  std::string base_url = kDefaultControllerUrl;
  std::string token;  // sent as "Authorization: Bearer <token>"; empty = none
  Millis connect_timeout_ms = 3000;
  Millis read_timeout_ms = 10000;  // also the write timeout
  // Reuse one connection for successive requests (the agent's heartbeats:
  // no new connection to admit while the controller is under load).
  bool keep_alive = false;
  // https:// only. The CA that signed the controller's certificate (its
  // <state-dir>/tls/ca.pem); empty = the system's trusted CAs. The
  // certificate must name the URL's host (a DNS or IP SAN, `init --san`).
  std::string ca_file;
  // A client certificate and its key (PEM), for mTLS: the agent's host.pem
  // and host.key from its bundle (issue-host). Both or neither.
  std::string cert_file;
  std::string key_file;
  // Several replicas: while every URL answers "no leader known" (a
  // follower's 503 during an election: nothing was done), try the list again
  // every 250 ms for up to this long. 0 = answer the 503 at once (the agent:
  // its next heartbeat is the retry). twctl waits 5 s.
  Millis no_leader_retry_ms = 0;
  // The local address the client's sockets are bound to before they connect
  // (a numeric IPv4/IPv6 address, or an interface name); empty = the
  // kernel's choice. A multi-homed host picks the address the controller
  // knows it by; tests and bench/scale play many hosts from loopback
  // addresses 127.0.x.y, as the controller admits connections per address.
  std::string source_address;
};

// Checks the TLS files of `options`: readable, a certificate with its key.
// Errors: kInvalidArgument naming the file.
Status checkTlsFiles(const ApiClientOptions& options);

// Checks a base URL (or a comma-separated list) as ApiClientOptions::base_url
// accepts it.
// Errors: kInvalidArgument naming the URL and what was expected.
Status checkBaseUrl(const std::string& url);

// Percent-encodes one path segment or query value: everything but
// A-Z a-z 0-9 - . _ ~ becomes %XX.
std::string urlEncode(const std::string& segment);

// The Status for an HTTP answer that is not 2xx: 400 kInvalidArgument, 401
// kPermissionDenied, 403 kForbidden, 404 kNotFound, 409 kFailedPrecondition, 503 kUnavailable,
// anything else kInternal. The message is the body's "error" field when the body
// is a JSON object with one (a 400's "file"/"line"/"column" become where()),
// else a description of the status code. `what` names the request ("GET /x").
Status statusFromHttp(int http_status, const std::string& body, const std::string& what);

// One connection to the controller; requests are synchronous.
//
// With several URLs (controller replicas, docs/ha.md) a request goes to the
// last one that answered (at first the first one). When it cannot be
// delivered there (no connection, refused, no TLS handshake; for a GET also
// no answer), it goes to the next URL at once, each URL tried once; a POST
// whose request may have arrived is not sent twice. A follower's 307 is
// followed once, with the same method, body, token and TLS settings, and
// only to a URL of the same scheme; its Location is remembered when it is
// one of the list. A 503 (a follower that knows no leader) also moves on to
// the next URL. So a dead first URL costs one connect timeout, not one per
// request.
//
// Threads: use one ApiClient per thread. Calls on one instance from several
// threads are safe but serialized (httplib locks each request), so a long poll
// on an instance delays every other call on it.
class ApiClient {
 public:
  explicit ApiClient(ApiClientOptions options);
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  // `path` starts with "/" and is already encoded (see urlEncode); it may carry
  // a query string. A 2xx answer yields its body as JSON (null when the body is
  // empty, as for 204).
  // Errors: kUnavailable when the controller cannot be reached or does not
  // answer in time ("cannot reach controller at http://...: connection refused"),
  // kInvalidArgument for a bad base URL, otherwise as statusFromHttp(); kInternal
  // when a 2xx body is not JSON.
  Result<Json> get(const std::string& path);
  // As get(), waiting at most read_timeout_ms for the answer (long polls).
  Result<Json> get(const std::string& path, Millis read_timeout_ms);
  // Sends `body` as JSON; a null `body` sends an empty body.
  Result<Json> post(const std::string& path, const Json& body);

  // The URL (of the list) that answered last, or the first one.
  std::string baseUrl() const;
  // How many controller URLs the list holds.
  size_t urlCount() const { return urls_.size(); }
  // The HTTP status of the last request's answer (0: no replica answered).
  // REQUIRES: one thread uses this instance (as the agent's heartbeats do).
  int lastHttpStatus() const { return last_http_status_.load(); }
  // The last request ended on a follower's 503 that knows no leader (the
  // whole list said so): no one replica refused it.
  bool lastKnewNoLeader() const { return last_no_leader_.load(); }
  // The replica that answered last refused (a deposed leader's 503, a
  // follower's 503 with nothing to renew from, a fence intent's 409, a set
  // the agent refused for its older term): the next request starts at the
  // next URL of the list (and goes round it as usual from there). Sends
  // nothing now: the caller's own interval paces the next try. A list of one
  // URL stays as it is.
  void moveOn();

 private:
  struct Impl;
  struct Attempt;
  Result<Json> send(const char* method, const std::string& path, const Json* body,
                    Millis read_timeout_ms);
  // One pass over the list; `no_leader`: it ended on a follower's 503.
  Result<Json> sendOnce(const char* method, const std::string& path, const Json* body,
                        Millis read_timeout_ms, bool& no_leader);
  Attempt attempt(Impl& impl, const std::string& url, const char* method, const std::string& full_path,
                  const Json* body, Millis read_timeout_ms);
  Result<Json> follow(const Attempt& redirect, const std::string& from_url, const char* method,
                      const std::string& path, const Json* body, Millis read_timeout_ms, bool& no_leader);

  ApiClientOptions options_;
  std::vector<std::string> urls_;               // the list, without trailing slashes
  std::vector<std::unique_ptr<Impl>> impls_;    // one per URL; empty when a URL is invalid
  Status url_status_;                           // why impls_ is empty
  std::atomic<size_t> current_{0};              // the URL that answered last
  std::atomic<int> last_http_status_{0};        // of the last request's answer
  std::atomic<bool> last_no_leader_{false};     // it ended on "no leader"
};

// The agent's link to the controller over HTTP (docs/api.md, "Agents").
//
// Threads: heartbeat(), sendEvent() and waitAssignments() each use their own
// ApiClient, so one thread may long-poll while others send heartbeats and
// events. Concurrent calls of the same method are serialized.
class HttpControllerLink final : public ControllerLink {
 public:
  // options.read_timeout_ms bounds heartbeats and events; a long poll waits
  // wait_ms plus that much.
  explicit HttpControllerLink(const ApiClientOptions& options);

  // POST /api/v1/agents/{host}/heartbeat; when the report is the one the
  // controller answered last, POST .../heartbeat/compact with its digest
  // instead, and the full heartbeat at once if that is not answered
  // (tw/compact_heartbeats.h).
  Result<AssignmentSet> heartbeat(const Heartbeat& hb) override;
  // Compact heartbeats on (the default) or off.
  void setCompactHeartbeats(bool on) { compact_.setEnabled(on); }
  // POST /api/v1/agents/{host}/events.
  Status sendEvent(const AgentEvent& event) override;

  // GET /api/v1/agents/{host}/assignments?after=V&wait_ms=N: blocks until the
  // controller has a set with version > after_version, or about wait_ms have
  // passed (then the current set). Errors as heartbeat(); kInternal when the
  // answer is not an AssignmentSet. After the first answer it also sends
  // &peers_digest= of the peer list that answer carried: the controller then
  // leaves the list out while it is the same (AssignmentSet::peers_omitted),
  // as it does for heartbeats. At 1,000 hosts the list (999 peers) was most
  // of every long poll's answer, and every one that timed out (25 s) sent it.
  Result<AssignmentSet> waitAssignments(const std::string& host, int64_t after_version,
                                        Millis wait_ms);

  // The URL (of the list) that answered the heartbeats last: the leading
  // replica once a heartbeat reached it (ApiClient::baseUrl()). Thread-safe.
  std::string baseUrl() const { return heartbeat_client_.baseUrl(); }
  // The next heartbeat (`pushed`: the next long poll) goes to the next
  // replica of the list (ApiClient::moveOn()).
  void refusedAnswer(bool pushed) override;

 private:
  ApiClient heartbeat_client_;
  CompactHeartbeats compact_;
  ApiClient event_client_;
  ApiClient poll_client_;
  std::mutex poll_mu_;            // serializes waitAssignments()
  std::string poll_peers_digest_;  // of the peer list the last long poll's answer carried; poll_mu_
  Millis read_timeout_ms_;
};

}  // namespace tw
