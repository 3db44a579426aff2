// The controller's HTTP face, on two listeners:
//  - public (--listen): the REST API (docs/api.md), Prometheus metrics, the
//    dashboard's static files from the web dir, the event stream;
//  - agents (--agent-listen): heartbeats, agent events, assignment long polls,
//    and (plain HTTP only) the tier endpoints that guests poll;
//  - guests (--guest-listen, optional): the tier endpoints only, plain HTTP,
//    for balancer VMs, which hold no client certificate (docs/auth.md).
// With TLS (public_tls, agent_tls), the public and agents' listeners serve
// HTTPS; the agents' one verifies client certificates, and an agent call of
// host X needs the certificate of X (CN = X) as well as X's token.
// Each listener has its own threads and admission limits (GuardedHttpServer),
// so no load on the public API (idle connections, streams, a large apply) can
// delay a heartbeat. Event streams hold no thread (EventStreamer), nor do
// idle kept-alive connections and assignment long polls (LongPolls). Handlers
// never touch the Controller directly: they go through the ControllerService.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "controller/auth.h"
#include "controller/event_streamer.h"
#include "controller/http_guard.h"
#include "controller/leader_redirect.h"
#include "controller/long_polls.h"
#include "controller/follower_heartbeats.h"
#include "controller/heartbeat_counters.h"
#include "controller/replica.h"
#include "controller/service.h"
#include "tw/status.h"

namespace tw {

struct ApiServerOptions {
  ApiServerOptions() = default;
  ApiServerOptions(std::string host_, int port_, std::string token_, std::string web_dir_)
      : host(std::move(host_)), port(port_), token(std::move(token_)), web_dir(std::move(web_dir_)) {}

  std::string host = "127.0.0.1";
  int port = 7800;          // 0 = any free port (see ApiServer::port())
  // The operator's token, when `auth` is not given (tests): then it is the
  // only credential.
  std::string token;
  // Who may call what (controller/auth.h): the operator on everything, a
  // viewer on reads, each host's agent on its own agent calls only.
  std::shared_ptr<Authenticator> auth;
  // Reads and the event stream without a token (the demo's dashboard). A
  // token that is sent must still be valid.
  bool public_read = false;
  std::string web_dir;      // dashboard files; only files under it are served
  std::string agent_host = "127.0.0.1";
  int agent_port = 0;       // 0 = any free port (see ApiServer::agentPort())
  // threads, per address, total (< threads: spare threads refuse or evict at
  // once), request deadline ms, requests per connection, keep-alive s, write ms.
  ListenerLimits public_limits = {64, 16, 56, 5000, 1, 5, 5000};
  // Agents keep their connections alive (heartbeat, events, long poll each).
  // Between requests they are parked without a thread, and long polls wait
  // parked too (http_guard.h, long_polls.h): `total` (112) bounds the
  // connections being served at one instant, the open-files limit the
  // parked ones (~2,000 at 1,000 hosts).
  ListenerLimits agent_limits = {128, 32, 112, 5000, 100000, 10, 5000};
  StreamLimits stream_limits;
  // TLS (controller/tls.h); null = plain HTTP (--insecure-http, tests).
  std::shared_ptr<const ServerTls> public_tls;
  // The agents' listener's; it should verify client certificates (mTLS).
  std::shared_ptr<const ServerTls> agent_tls;
  // The guests' listener: -1 = none (guests poll the agents' listener,
  // which then must be plain), 0 = any free port (see ApiServer::guestPort()).
  std::string guest_host = "127.0.0.1";
  int guest_port = -1;
  // This replica's role (controller/replica.h): a follower answers mutating
  // calls with 307 to the leader (controller/leader_redirect.h). Null: the
  // one controller of a SQLite store (always leads).
  std::shared_ptr<const ReplicaStatus> replica;
  // A follower takes an agent's heartbeat that could not reach the leader
  // (POST .../heartbeat?any_replica=1) itself: it renews the lease and
  // answers with the leader's last published set (docs/ha.md). Null: it is
  // redirected like every agent call (SQLite; tests).
  std::shared_ptr<FollowerHeartbeats> follower_heartbeats;
  ListenerLimits guest_limits = {16, 8, 14, 5000, 1, 5, 5000};
};

class ApiServer {
 public:
  ApiServer(ControllerService& service, ApiServerOptions options);
  ~ApiServer();

  // Binds both listening sockets. Errors: kUnavailable when an address is taken.
  Status bind();
  // Serves until stop() (blocks). REQUIRES: bind() succeeded.
  void serve();
  void stop();
  int port() const { return port_; }
  int agentPort() const { return agent_port_; }
  int guestPort() const { return guest_port_; }  // -1 when there is no guests' listener
  ListenerStats publicStats() const { return public_->stats(); }
  ListenerStats agentStats() const { return agent_->stats(); }
  int eventStreams() const { return streamer_.streams(); }
  // How the agents' heartbeats were answered (tierwarden_heartbeats_total).
  const HeartbeatCounters& heartbeatCounters() const { return heartbeat_counters_; }

 private:
  void routes();
  // On a follower: answers a call that only the leader serves (307 to it,
  // or 503) and returns true; false: serve it here. Run by every route of
  // the public and agents' listeners after the request (body included) was
  // read, so that a kept-alive connection stays in step.
  bool sentToLeader(ApiListener listener, const httplib::Request& req, httplib::Response& res);
  // Authenticates and authorizes a request (controller/auth.h); on refusal
  // answers 401/403 JSON and returns false. `host`: for Access::kAgent.
  bool allowed(const httplib::Request& req, httplib::Response& res, Access need,
               const std::string& host = "");
  Status check(const std::string& authorization, Access need, const std::string& host,
               std::optional<Principal>* who = nullptr);
  // check() on the request's one Authorization header, as received.
  Status checkRequest(const httplib::Request& req, Access need, const std::string& host,
                      std::optional<Principal>* who = nullptr);

  ControllerService& service_;
  ApiServerOptions options_;
  std::unique_ptr<GuardedHttpServer> public_;
  std::unique_ptr<GuardedHttpServer> agent_;
  std::unique_ptr<GuardedHttpServer> guest_;  // null without a guests' listener
  EventStreamer streamer_;
  LongPolls long_polls_;  // the agents' assignments long polls, parked
  HeartbeatCounters heartbeat_counters_;
  std::thread agent_thread_;
  std::thread guest_thread_;
  int port_ = 0;
  int agent_port_ = 0;
  int guest_port_ = -1;
};

// True when `relative` names a file inside web_dir (no "..", no absolute path,
// no symlink out of it); sets `resolved` to its path. Exposed for tests.
bool resolveWebPath(const std::string& web_dir, const std::string& relative, std::string& resolved);

}  // namespace tw
