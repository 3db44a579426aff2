// One controller replica's role (docs/ha.md): the leader acts; a follower
// serves reads from the store and sends mutating calls to the leader.
//
//  - ReplicaStatus: what the HTTP side asks (do I lead, who does, the
//    replicas for GET /api/v1/controllers, the leader metrics).
//    SingleReplica is the SQLite store's one controller (always leads);
//    EtcdReplica combines the leader lease and the replica directory.
//  - ReplicaSwitch: the loop-side of the role, called by ControllerService
//    before every reconcile step (its may_act). While following it replaces
//    the service's Controller by a fresh read-only view of the store
//    (Controller::loadView) at most every refresh_every_ms, and tells event
//    streams of the leader's new events. Once this replica leads, it builds
//    the Controller it acts with, recover()s it from the store (a fresh read:
//    nothing the follower's views held is trusted) and only then lets the
//    service act. A lost term ends the process (main.cc), so a replica never
//    goes back from acting to following.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "controller/controller.h"
#include "controller/leader_lease.h"
#include "controller/replica_directory.h"
#include "controller/service.h"
#include "tw/clock.h"
#include "tw/json.h"
#include "tw/store.h"

namespace tw {

class ReplicaStatus {
 public:
  virtual ~ReplicaStatus() = default;
  virtual bool leading() const = 0;
  // The leader and where to reach it, when known and not this replica.
  virtual std::optional<ReplicaInfo> leader() const = 0;
  // GET /api/v1/controllers (docs/api.md).
  virtual Json controllersJson() const = 0;
  // tierwarden_leader, tierwarden_leader_term, tierwarden_leader_changes_total.
  virtual std::string metricsText() const = 0;
  // This replica's advertised URLs, once its listeners are bound.
  virtual void setUrls(ReplicaUrls urls) = 0;
};

// The SQLite store's one controller: it leads, alone, for good.
class SingleReplica final : public ReplicaStatus {
 public:
  // REQUIRES: wall outlives it.
  SingleReplica(std::string identity, ReplicaUrls urls, const Clock& wall);
  bool leading() const override { return true; }
  std::optional<ReplicaInfo> leader() const override { return std::nullopt; }
  Json controllersJson() const override;
  std::string metricsText() const override;
  void setUrls(ReplicaUrls urls) override;

 private:
  const std::string identity_;
  const Clock& wall_;
  mutable std::mutex mu_;  // guards urls_
  ReplicaUrls urls_;
};

// A replica of an etcd cluster. Thread-safe (the lease and the directory are).
// It leads (serves changes) only while it holds the lease AND `acting` says
// its ControllerService acts with a recovered Controller (ReplicaSwitch):
// between winning and the first step, a change would reach a follower's view,
// so it is answered 503 (Retry-After) instead.
class EtcdReplica final : public ReplicaStatus {
 public:
  // REQUIRES: lease, directory and wall outlive it. `acting`: thread-safe;
  // null = the lease alone decides (tests).
  EtcdReplica(const LeaderLease& lease, ReplicaDirectory& directory, std::string identity,
              const Clock& wall, std::function<bool()> acting = nullptr);
  bool leading() const override;
  std::optional<ReplicaInfo> leader() const override;
  Json controllersJson() const override;
  std::string metricsText() const override;
  void setUrls(ReplicaUrls urls) override { directory_.setUrls(std::move(urls)); }

 private:
  const LeaderLease& lease_;
  ReplicaDirectory& directory_;
  const std::string identity_;
  const Clock& wall_;
  const std::function<bool()> acting_;
};

class ReplicaSwitch {
 public:
  struct Options {
    Millis refresh_every_ms = 1000;  // a follower's view is at most this old
  };
  // `leading`: this replica leads now (LeaderLease::isLeader). `make_view`:
  // a new Controller for a read-only view; `make_acting`: the Controller to
  // act with (host connector, fence agents), not recovered yet; `on_lead`:
  // runs once on it after recover() (the --policy-dir apply). `clock`:
  // monotonic, for the refresh period.
  ReplicaSwitch(Store& store, const Clock& clock, std::function<bool()> leading,
                std::function<std::unique_ptr<Controller>()> make_view,
                std::function<std::unique_ptr<Controller>()> make_acting,
                std::function<void(Controller&)> on_lead, Options options);

  // The first view, for the service to start with. Errors: the store's
  // (unreachable, a stored policy that no longer parses).
  Result<Controller*> start();
  // Loop thread (the service's may_act): true when the service may run a
  // reconcile step now. Swaps the service's Controller as described above.
  bool beforeStep(ControllerService& service);
  // Any thread: the service acts with the recovered Controller.
  bool acting() const { return acting_.load(); }
  // Views loaded since start (tests).
  int64_t refreshes() const { return refreshes_; }

 private:
  Store& store_;
  const Clock& clock_;
  std::function<bool()> leading_;
  std::function<std::unique_ptr<Controller>()> make_view_;
  std::function<std::unique_ptr<Controller>()> make_acting_;
  std::function<void(Controller&)> on_lead_;
  const Options options_;
  std::unique_ptr<Controller> current_;
  std::atomic<bool> acting_{false};
  Millis last_refresh_ms_ = 0;
  int64_t refreshes_ = 0;
  std::string last_error_;
};

// The ReplicaSwitch of an etcd replica: views and the acting Controller on
// `store` (the acting one with `hosts` and `fence_agents`), leading while
// `lease` leads. REQUIRES: store, lease and hosts outlive it.
// `renewals` (may be null): set on the acting Controller before recover()
// (Controller::setLeaseRenewals).
std::unique_ptr<ReplicaSwitch> makeReplicaSwitch(Store& store, const LeaderLease& lease, HostConnector* hosts,
                                                 FenceAgents fence_agents, std::function<void(Controller&)> on_lead,
                                                 LeaderRenewals* renewals = nullptr);

// Both advertised URLs; errors name the flag (--advertise-url,
// --advertise-agent-url).
Result<ReplicaUrls> advertisedUrls(const std::string& given_public, const std::string& given_agent, bool tls,
                                   const std::string& address, int port, const std::string& agent_address,
                                   int agent_port);

// A replica's advertised URL (--advertise-url, --advertise-agent-url):
// `given` when set (checked: http(s)://HOST:PORT), else
// scheme://ADDRESS:PORT, with this machine's hostname for a wildcard
// address (0.0.0.0, ::). Errors: kInvalidArgument.
Result<std::string> advertisedUrl(const std::string& given, bool tls, const std::string& address, int port);

}  // namespace tw
